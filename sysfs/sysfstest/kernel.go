package sysfstest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Kernel is a fake of the Linux PCI driver core acting on a fixture tree
// (written by Builder or unpacked from sysfs/sample). It exists because no
// real kernel runs in unit tests; the real-kernel check of the same code is
// the e2e lab (e2e/kernel, QEMU with an emulated IOMMU and SR-IOV NVMe).
// It implements sysfs.AttrWriter and reacts to writes the way the kernel
// does, as observed on 6.1 (see /work/shared/LABS.md section A):
//
//   - <dev>/driver_override stores the value; an empty line clears it,
//     and the file then reads "(null)".
//   - drivers/<X>/unbind detaches the device if X owns it, else ENODEV.
//   - bus/pci/drivers_probe binds an unbound device to its override driver
//     (if that driver is loaded), or with no override to its native driver
//     — unless it is a VF of a PF with sriov_drivers_autoprobe=0. It
//     succeeds even when nothing binds; only read-back tells.
//   - drivers/<X>/bind fails with ENODEV unless the override names X or,
//     without override, X is the device's native driver and the device may
//     be probed; EBUSY when the device already has a driver.
//   - Binding vfio-pci creates /dev/vfio/<group> and vfio-dev/ (SetDriver).
//   - new_id and remove_id fail: the code under test must never use them.
//
// A driver is loaded when bus/pci/drivers/<X> exists; NewKernel loads
// vfio-pci. Faults (write error, hang, vanishing device, no effect) are
// injected with Inject. Every write is logged (Writes).
type Kernel struct {
	dir string

	mu      sync.Mutex        // guards the fields below
	devMu   sync.Map          // address -> *sync.Mutex: one kernel operation per device at a time, as device_lock
	native  map[string]string // address -> driver autoprobe picks without override
	faults  []*Fault
	writes  []Write
	latency time.Duration
	unhang  chan struct{}
}

// Write is one logged attribute write, path relative to the sysfs root.
type Write struct {
	Path, Value string
}

// Fault changes how matching writes behave.
type Fault struct {
	Attr   string // base name: "driver_override", "unbind", "bind", "drivers_probe"; "" = any
	Device string // the function written about; "" = any
	Skip   int    // let this many matching writes through first
	Times  int    // how many writes it hits after Skip; 0 = every one

	Err      error // the write fails with Err and has no effect
	Hang     bool  // the write blocks until Unhang, then takes effect
	Vanish   bool  // the function is removed before the write is handled
	NoEffect bool  // the write succeeds and changes nothing
}

// NewKernel returns a fake kernel for the tree at dir (dir/sys, dir/dev)
// and loads vfio-pci. Each function's current driver (other than
// vfio-pci) becomes its native driver.
func NewKernel(dir string) (*Kernel, error) {
	k := &Kernel{dir: dir, native: map[string]string{}, unhang: make(chan struct{})}
	sys := k.sys()
	names, err := os.ReadDir(filepath.Join(sys, "bus/pci/devices"))
	if err != nil {
		return nil, fmt.Errorf("fake kernel: %w", err)
	}
	for _, n := range names {
		if t, err := os.Readlink(filepath.Join(sys, "bus/pci/devices", n.Name(), "driver")); err == nil {
			if d := filepath.Base(t); d != "vfio-pci" {
				k.native[n.Name()] = d
			}
		}
	}
	if err := k.Load("vfio-pci"); err != nil {
		return nil, err
	}
	return k, nil
}

func (k *Kernel) sys() string { return filepath.Join(k.dir, "sys") }

// Load makes driver available, as modprobe would.
func (k *Kernel) Load(driver string) error {
	w := &writer{sys: k.sys()}
	d := filepath.Join("bus/pci/drivers", driver)
	w.mkdir(d)
	for _, f := range []string{"bind", "unbind", "new_id", "remove_id"} {
		if _, err := os.Stat(filepath.Join(w.sys, d, f)); err != nil {
			w.file(filepath.Join(d, f), "", 0o200)
		}
	}
	return w.err
}

// Unload removes driver's directory (the device links go with it); use it
// on drivers that own nothing, e.g. to model vfio-pci not loaded.
func (k *Kernel) Unload(driver string) error {
	return os.RemoveAll(filepath.Join(k.sys(), "bus/pci/drivers", driver))
}

// SetNative sets the driver autoprobe picks for addr.
func (k *Kernel) SetNative(addr, driver string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.native[addr] = driver
}

// SetLatency makes every write take d, outside the kernel lock, so that
// writes to different functions overlap as they do on a real kernel.
func (k *Kernel) SetLatency(d time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.latency = d
}

// Inject adds a fault.
func (k *Kernel) Inject(f Fault) {
	k.mu.Lock()
	defer k.mu.Unlock()
	c := f
	k.faults = append(k.faults, &c)
}

// ClearFaults removes every fault.
func (k *Kernel) ClearFaults() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.faults = nil
}

// Unhang lets every hung write (and future Hang writes) proceed.
func (k *Kernel) Unhang() {
	k.mu.Lock()
	defer k.mu.Unlock()
	select {
	case <-k.unhang:
	default:
		close(k.unhang)
	}
}

// Writes returns the log of writes so far.
func (k *Kernel) Writes() []Write {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]Write(nil), k.writes...)
}

// WriteAttr implements sysfs.AttrWriter.
func (k *Kernel) WriteAttr(path, value string) error {
	rel, err := filepath.Rel(k.sys(), path)
	if err != nil || strings.HasPrefix(rel, "..") {
		return fmt.Errorf("fake kernel: %q is outside %q", path, k.sys())
	}
	attr := filepath.Base(rel)
	dev := strings.TrimSpace(value)
	if attr == "driver_override" {
		dev = filepath.Base(filepath.Dir(rel))
	}

	k.mu.Lock()
	k.writes = append(k.writes, Write{Path: rel, Value: value})
	f := k.match(attr, dev)
	latency, unhang := k.latency, k.unhang
	k.mu.Unlock()

	if latency > 0 {
		time.Sleep(latency)
	}
	if f != nil {
		switch {
		case f.Err != nil:
			return f.Err
		case f.NoEffect:
			return nil
		case f.Vanish:
			unlock := k.lockDev(dev)
			err := removeFunction(k.dir, dev)
			unlock()
			if err != nil {
				return err
			}
		case f.Hang:
			<-unhang
		}
	}
	defer k.lockDev(dev)()
	return k.apply(rel, attr, dev, value)
}

// lockDev serialises operations on one device. Operations on different
// devices run in parallel, as on a real kernel (the tree's shared parts —
// driver directories, /dev/vfio — tolerate it: MkdirAll and rewriting
// empty attribute files are idempotent).
func (k *Kernel) lockDev(addr string) func() {
	mu, _ := k.devMu.LoadOrStore(addr, &sync.Mutex{})
	m := mu.(*sync.Mutex)
	m.Lock()
	return m.Unlock
}

// match returns the fault for this write, counting it. Called with mu.
func (k *Kernel) match(attr, dev string) *Fault {
	for _, f := range k.faults {
		if (f.Attr != "" && f.Attr != attr) || (f.Device != "" && f.Device != dev) {
			continue
		}
		if f.Skip > 0 {
			f.Skip--
			continue
		}
		if f.Times < 0 {
			continue // used up
		}
		if f.Times > 0 {
			f.Times--
			if f.Times == 0 {
				f.Times = -1
			}
		}
		return f
	}
	return nil
}

// apply performs the write's effect. Called with the device's lock.
func (k *Kernel) apply(rel, attr, addr, value string) error {
	sys := k.sys()
	devDir := filepath.Join(sys, "bus/pci/devices", addr)
	exists := func() bool { _, err := os.Stat(devDir); return err == nil }
	switch {
	case attr == "driver_override":
		p := filepath.Join(sys, rel)
		if _, err := os.Stat(p); err != nil {
			return err // the device is gone: open fails
		}
		v := strings.TrimRight(value, "\n")
		if v == "" {
			v = "(null)"
		}
		return os.WriteFile(p, []byte(v+"\n"), 0o644)
	case rel == "bus/pci/drivers_probe":
		if !exists() {
			return syscall.ENODEV
		}
		if k.driver(addr) != "" {
			return nil
		}
		if d := k.candidate(addr); d != "" && k.loaded(d) {
			return SetDriver(k.dir, addr, d)
		}
		return nil
	case strings.HasPrefix(rel, "bus/pci/drivers/"):
		drv := filepath.Base(filepath.Dir(rel))
		switch attr {
		case "unbind":
			if !exists() || k.driver(addr) != drv {
				return syscall.ENODEV
			}
			return SetDriver(k.dir, addr, "")
		case "bind":
			if !exists() {
				return syscall.ENODEV
			}
			if k.driver(addr) != "" {
				return syscall.EBUSY
			}
			if k.candidate(addr) != drv {
				return syscall.ENODEV
			}
			return SetDriver(k.dir, addr, drv)
		case "new_id", "remove_id":
			return fmt.Errorf("fake kernel: write %q to %s: never use new_id/remove_id: %w", value, rel, syscall.EINVAL)
		}
	}
	return fmt.Errorf("fake kernel: no behaviour for writing %q to %s: %w", value, rel, syscall.EINVAL)
}

func (k *Kernel) driver(addr string) string {
	t, err := os.Readlink(filepath.Join(k.sys(), "bus/pci/devices", addr, "driver"))
	if err != nil {
		return ""
	}
	return filepath.Base(t)
}

func (k *Kernel) loaded(driver string) bool {
	_, err := os.Stat(filepath.Join(k.sys(), "bus/pci/drivers", driver, "bind"))
	return err == nil
}

// candidate is the driver a probe would try: the override, or the native
// driver when the device may be autoprobed.
func (k *Kernel) candidate(addr string) string {
	dir := filepath.Join(k.sys(), "bus/pci/devices", addr)
	if b, err := os.ReadFile(filepath.Join(dir, "driver_override")); err == nil {
		if o := strings.TrimSpace(string(b)); o != "" && o != "(null)" {
			return o
		}
	}
	if pf, err := os.Readlink(filepath.Join(dir, "physfn")); err == nil {
		b, err := os.ReadFile(filepath.Join(dir, pf, "sriov_drivers_autoprobe"))
		if err != nil || strings.TrimSpace(string(b)) != "1" {
			return ""
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.native[addr]
}

// RemoveFunction removes a function from the tree as hot-unplug would.
func RemoveFunction(dir, addr string) error { return removeFunction(dir, addr) }

func removeFunction(dir, addr string) error {
	sys := filepath.Join(dir, "sys")
	devPath, err := canonical(sys, addr)
	if err != nil {
		return err
	}
	_ = SetDriver(dir, addr, "")
	abs := filepath.Join(sys, devPath)
	if g, err := os.Readlink(filepath.Join(abs, "iommu_group")); err == nil {
		_ = os.Remove(filepath.Join(abs, g, "devices", addr))
	}
	if pf, err := os.Readlink(filepath.Join(abs, "physfn")); err == nil {
		links, _ := filepath.Glob(filepath.Join(abs, pf, "virtfn*"))
		for _, l := range links {
			if t, err := os.Readlink(l); err == nil && filepath.Base(t) == addr {
				_ = os.Remove(l)
			}
		}
	}
	if err := os.Remove(filepath.Join(sys, "bus/pci/devices", addr)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return os.RemoveAll(abs)
}
