package main

// Direct reads and writes of the guest's real /sys. The driver checks the
// product's view against these, so they deliberately share no code with it.

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

const pciDevices = "/sys/bus/pci/devices"

func devPath(addr string) string { return filepath.Join(pciDevices, addr) }

func readAttr(p string) (string, error) {
	b, err := os.ReadFile(p)
	return strings.TrimSpace(string(b)), err
}

// attr reads a device attribute; "" when it cannot be read.
func attr(addr, name string) string {
	s, _ := readAttr(filepath.Join(devPath(addr), name))
	return s
}

func writeAttr(p, v string) error {
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, werr := f.WriteString(v)
	cerr := f.Close()
	if werr != nil {
		return fmt.Errorf("write %q to %s: %w", v, p, werr)
	}
	return cerr
}

func linkBase(p string) string {
	l, err := os.Readlink(p)
	if err != nil {
		return ""
	}
	return filepath.Base(l)
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func driverOf(addr string) string { return linkBase(filepath.Join(devPath(addr), "driver")) }
func groupOf(addr string) string  { return linkBase(filepath.Join(devPath(addr), "iommu_group")) }
func physfnOf(addr string) string { return linkBase(filepath.Join(devPath(addr), "physfn")) }

// vfsOf returns the PF's VFs ordered by VF index (virtfn0, virtfn1, ...).
func vfsOf(pf string) []string {
	ents, _ := os.ReadDir(devPath(pf))
	type vf struct {
		idx  int
		addr string
	}
	var vfs []vf
	for _, e := range ents {
		n, ok := strings.CutPrefix(e.Name(), "virtfn")
		if !ok {
			continue
		}
		i, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		vfs = append(vfs, vf{i, linkBase(filepath.Join(devPath(pf), e.Name()))})
	}
	sort.Slice(vfs, func(a, b int) bool { return vfs[a].idx < vfs[b].idx })
	out := make([]string, len(vfs))
	for i, v := range vfs {
		out[i] = v.addr
	}
	return out
}

// vfIndex returns N of the PF's virtfnN link that points at vf, or -1.
func vfIndex(vf string) int {
	pf := physfnOf(vf)
	for i, a := range vfsOf(pf) {
		if a == vf {
			return i
		}
	}
	return -1
}

func groupMembers(group string) []string {
	ents, _ := os.ReadDir(filepath.Join("/sys/kernel/iommu_groups", group, "devices"))
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

func allPCI() []string {
	ents, _ := os.ReadDir(pciDevices)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

// devState is what binding changes.
type devState struct {
	Driver   string
	Override string
}

func (s devState) String() string {
	d := s.Driver
	if d == "" {
		d = "<none>"
	}
	return fmt.Sprintf("driver=%s override=%s", d, s.Override)
}

func stateOf(addr string) devState {
	return devState{Driver: driverOf(addr), Override: attr(addr, "driver_override")}
}

func snapshot(addrs []string) map[string]devState {
	m := make(map[string]devState, len(addrs))
	for _, a := range addrs {
		m[a] = stateOf(a)
	}
	return m
}

// diffStates lists the devices whose state differs (devices only in one map
// are reported too).
func diffStates(before, after map[string]devState) []string {
	var out []string
	keys := map[string]bool{}
	for k := range before {
		keys[k] = true
	}
	for k := range after {
		keys[k] = true
	}
	var sorted []string
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	for _, k := range sorted {
		b, bok := before[k]
		a, aok := after[k]
		switch {
		case !bok:
			out = append(out, fmt.Sprintf("%s appeared (%s)", k, a))
		case !aok:
			out = append(out, fmt.Sprintf("%s vanished (was %s)", k, b))
		case a != b:
			out = append(out, fmt.Sprintf("%s: %s -> %s", k, b, a))
		}
	}
	return out
}

func numVFs(pf string) int {
	n, _ := strconv.Atoi(attr(pf, "sriov_numvfs"))
	return n
}

// setNumVFs sets sriov_numvfs to n (through 0: the kernel refuses to change a
// non-zero count directly) and returns how long the kernel took.
func setNumVFs(pf string, n int) (time.Duration, error) {
	start := time.Now()
	p := filepath.Join(devPath(pf), "sriov_numvfs")
	if numVFs(pf) == n {
		return 0, nil
	}
	if numVFs(pf) != 0 {
		if err := writeAttr(p, "0"); err != nil {
			return time.Since(start), err
		}
	}
	if n > 0 {
		if err := writeAttr(p, strconv.Itoa(n)); err != nil {
			return time.Since(start), err
		}
	}
	return time.Since(start), nil
}

func setAutoprobe(pf string, on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	return writeAttr(filepath.Join(devPath(pf), "sriov_drivers_autoprobe"), v)
}

// waitFor polls cond every 10 ms until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pfBySerial finds the SR-IOV PF whose NVMe controller has the given serial
// (the lab's QEMU command line gives each PF a role-named serial).
func pfBySerial(serial string) (addr, ctrl string, err error) {
	ents, err := os.ReadDir("/sys/class/nvme")
	if err != nil {
		return "", "", err
	}
	for _, e := range ents {
		dir := filepath.Join("/sys/class/nvme", e.Name())
		if s, _ := readAttr(filepath.Join(dir, "serial")); s != serial {
			continue
		}
		a := linkBase(filepath.Join(dir, "device"))
		if exists(filepath.Join(devPath(a), "sriov_totalvfs")) {
			return a, e.Name(), nil
		}
	}
	return "", "", fmt.Errorf("no SR-IOV NVMe PF with serial %q", serial)
}

// nvmeCtrlOf returns the nvme controller name (nvmeN) of a PCI function
// bound to the nvme driver, or "".
func nvmeCtrlOf(addr string) string {
	ents, err := os.ReadDir(filepath.Join(devPath(addr), "nvme"))
	if err != nil || len(ents) == 0 {
		return ""
	}
	return ents[0].Name()
}

// isCharDev reports whether p is a character device node.
func isCharDev(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
