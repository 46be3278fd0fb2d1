package sysfs_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sriov-cdi/sriov-cdi/sysfs"
	"github.com/sriov-cdi/sriov-cdi/sysfs/sample"
	"github.com/sriov-cdi/sriov-cdi/sysfs/sysfstest"
)

// The tests below drive the Binder against sysfstest.Kernel, a fake of the
// kernel's PCI driver core: no real kernel runs in unit tests. The same
// code runs against a real 6.1 kernel in the e2e lab (e2e/kernel).

// realSampleKernel unpacks the real-kernel snapshot: PF 01:00.0
// (autoprobe 0) with driverless VFs 01:00.1,.3,.4 and 01:00.2 on vfio-pci
// (group 8); PF 02:00.0 (autoprobe 1) with VFs 02:00.1,.2 on nvme (groups
// 11, 12).
func realSampleKernel(t *testing.T) (sysfs.Root, *sysfstest.Kernel, string) {
	t.Helper()
	dir := t.TempDir()
	root, err := sample.Extract(dir)
	if err != nil {
		t.Fatal(err)
	}
	return root, newKernel(t, dir), dir
}

// sampleKernel builds the same scenario (addresses, groups, drivers,
// autoprobe) with sysfstest.Builder: a smaller tree, quicker to write than
// the snapshot, for the tests that inject faults.
func sampleKernel(t *testing.T) (sysfs.Root, *sysfstest.Kernel, string) {
	t.Helper()
	dir := t.TempDir()
	nvme := func(addr, driver, group string) sysfstest.Function {
		f := sysfstest.Function{Addr: addr, Vendor: "1b36", Device: "0010", Class: "010802", Driver: driver, NUMA: -1, Group: group}
		if driver == "vfio-pci" {
			f.DriverOverride = "vfio-pci"
		}
		return f
	}
	b := sysfstest.New(dir)
	for i, port := range []string{"0000:00:01.0", "0000:00:02.0"} {
		b.Add(sysfstest.Function{Addr: port, Vendor: "1b36", Device: "000c", Class: "060400", Driver: "pcieport", NUMA: -1, Group: fmt.Sprint(i + 1)})
	}
	pf0 := nvme("0000:01:00.0", "nvme", "5")
	pf0.Parent, pf0.TotalVFs = "0000:00:01.0", 4
	b.AddPF(pf0, nvme("0000:01:00.1", "", "7"), nvme("0000:01:00.2", "vfio-pci", "8"), nvme("0000:01:00.3", "", "9"), nvme("0000:01:00.4", "", "10"))
	pf1 := nvme("0000:02:00.0", "nvme", "6")
	pf1.Parent, pf1.TotalVFs, pf1.Autoprobe = "0000:00:02.0", 4, true
	b.AddPF(pf1, nvme("0000:02:00.1", "nvme", "11"), nvme("0000:02:00.2", "nvme", "12"))
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	return sysfs.Root{Sys: b.Sys(), Dev: b.Dev()}, newKernel(t, dir), dir
}

func newKernel(t *testing.T, dir string) *sysfstest.Kernel {
	t.Helper()
	k, err := sysfstest.NewKernel(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Unhang)
	return k
}

func newBinder(root sysfs.Root, k *sysfstest.Kernel, opts ...sysfs.BinderOption) *sysfs.Binder {
	return sysfs.NewBinder(root, append([]sysfs.BinderOption{sysfs.WithWriter(k), sysfs.WithTimeout(2 * time.Second), sysfs.WithPollInterval(time.Millisecond)}, opts...)...)
}

func mustRead(t *testing.T, b *sysfs.Binder, a sysfs.Address) sysfs.State {
	t.Helper()
	s, err := b.Read(a)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestBindVFIOAndRestore(t *testing.T) {
	t.Parallel()
	w := func(path, value string) sysfstest.Write { return sysfstest.Write{Path: path, Value: value} }
	for _, tc := range []struct {
		name       string
		addr       sysfs.Address
		group      string
		orig       sysfs.State
		bindWrites []sysfstest.Write
	}{{
		name: "nvme VF, autoprobe on", addr: "0000:02:00.1", group: "11",
		orig: sysfs.State{Driver: "nvme"},
		bindWrites: []sysfstest.Write{
			w("bus/pci/devices/0000:02:00.1/driver_override", "vfio-pci"),
			w("bus/pci/drivers/nvme/unbind", "0000:02:00.1"),
			w("bus/pci/drivers_probe", "0000:02:00.1"),
		},
	}, {
		name: "driverless VF, autoprobe off", addr: "0000:01:00.3", group: "9",
		orig: sysfs.State{},
		bindWrites: []sysfstest.Write{
			w("bus/pci/devices/0000:01:00.3/driver_override", "vfio-pci"),
			w("bus/pci/drivers_probe", "0000:01:00.3"),
		},
	}, {
		name: "already on vfio-pci", addr: "0000:01:00.2", group: "8",
		orig: sysfs.State{Driver: "vfio-pci", Override: "vfio-pci"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			root, k, _ := realSampleKernel(t)
			b := newBinder(root, k)
			if diff := cmp.Diff(tc.orig, mustRead(t, b, tc.addr)); diff != "" {
				t.Fatalf("state before (-want +got)\n%s", diff)
			}
			ctx := context.Background()
			if err := b.BindVFIO(ctx, tc.addr); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(sysfs.State{Driver: "vfio-pci", Override: "vfio-pci"}, mustRead(t, b, tc.addr)); diff != "" {
				t.Errorf("state after bind (-want +got)\n%s", diff)
			}
			if err := b.WaitVFIOGroup(ctx, tc.addr, tc.group); err != nil {
				t.Error(err)
			}
			if diff := cmp.Diff(tc.bindWrites, k.Writes()); diff != "" {
				t.Errorf("writes (-want +got)\n%s", diff)
			}
			if err := b.Restore(ctx, tc.addr, tc.orig); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.orig, mustRead(t, b, tc.addr)); diff != "" {
				t.Errorf("state after restore (-want +got)\n%s", diff)
			}
			for _, wr := range k.Writes() {
				if strings.HasSuffix(wr.Path, "new_id") || strings.HasSuffix(wr.Path, "remove_id") {
					t.Errorf("wrote %s: new_id must never be used", wr.Path)
				}
			}
		})
	}
}

// A VF whose PF has sriov_drivers_autoprobe=0 is not re-probed into its
// driver by drivers_probe alone; Restore sets driver_override to the
// original driver, so it works anyway, and clears it afterwards.
func TestRestoreWithAutoprobeOff(t *testing.T) {
	t.Parallel()
	root, k, _ := sampleKernel(t)
	pf := filepath.Join(root.PCIDevicePath("0000:02:00.0"), "sriov_drivers_autoprobe")
	if err := os.WriteFile(pf, []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := newBinder(root, k)
	ctx := context.Background()
	a := sysfs.Address("0000:02:00.2")
	if err := b.BindVFIO(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := b.Restore(ctx, a, sysfs.State{Driver: "nvme"}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sysfs.State{Driver: "nvme"}, mustRead(t, b, a)); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
}

func TestUnbind(t *testing.T) {
	t.Parallel()
	root, k, _ := sampleKernel(t)
	b := newBinder(root, k)
	a := sysfs.Address("0000:01:00.2")
	if err := b.Unbind(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sysfs.State{}, mustRead(t, b, a)); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
	if _, err := os.Stat(root.VFIOGroupPath("8")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("/dev/vfio/8 still there after unbinding its only member: %v", err)
	}
}

func TestBindFaults(t *testing.T) {
	t.Parallel()
	const a = "0000:02:00.1"
	for _, tc := range []struct {
		name     string
		fault    sysfstest.Fault
		unload   bool
		wantStep sysfs.Step
		wantErr  error
	}{
		{name: "override write fails", fault: sysfstest.Fault{Attr: "driver_override", Err: syscall.EINVAL}, wantStep: sysfs.StepSetOverride, wantErr: syscall.EINVAL},
		{name: "override not stored", fault: sysfstest.Fault{Attr: "driver_override", NoEffect: true}, wantStep: sysfs.StepSetOverride, wantErr: sysfs.ErrNotBound},
		{name: "unbind fails", fault: sysfstest.Fault{Attr: "unbind", Err: syscall.EIO}, wantStep: sysfs.StepUnbind, wantErr: syscall.EIO},
		{name: "unbind hangs", fault: sysfstest.Fault{Attr: "unbind", Hang: true}, wantStep: sysfs.StepUnbind, wantErr: sysfs.ErrTimeout},
		{name: "device vanishes at unbind", fault: sysfstest.Fault{Attr: "unbind", Vanish: true}, wantStep: sysfs.StepUnbind, wantErr: sysfs.ErrVanished},
		{name: "probe fails", fault: sysfstest.Fault{Attr: "drivers_probe", Err: syscall.ENOMEM}, wantStep: sysfs.StepProbe, wantErr: syscall.ENOMEM},
		{name: "probe binds nothing", fault: sysfstest.Fault{Attr: "drivers_probe", NoEffect: true}, wantStep: sysfs.StepProbe, wantErr: sysfs.ErrNotBound},
		{name: "vfio-pci not loaded", unload: true, wantStep: sysfs.StepProbe, wantErr: sysfs.ErrNotBound},
		{name: "device vanishes at probe", fault: sysfstest.Fault{Attr: "drivers_probe", Vanish: true}, wantStep: sysfs.StepProbe, wantErr: sysfs.ErrVanished},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			root, k, _ := sampleKernel(t)
			k.Inject(tc.fault)
			if tc.unload {
				if err := k.Unload("vfio-pci"); err != nil {
					t.Fatal(err)
				}
			}
			b := newBinder(root, k, sysfs.WithTimeout(500*time.Millisecond))
			start := time.Now()
			err := b.BindVFIO(context.Background(), a)
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("BindVFIO took %s; every step must be bounded", took)
			}
			var se *sysfs.StepError
			if !errors.As(err, &se) {
				t.Fatalf("got %v, want a *StepError", err)
			}
			if se.Step != tc.wantStep || se.Device != a || !errors.Is(err, tc.wantErr) {
				t.Errorf("got %q (step %s), want step %s and %v", err, se.Step, tc.wantStep, tc.wantErr)
			}
			if tc.unload && !strings.Contains(err.Error(), "vfio-pci module") {
				t.Errorf("error %q does not hint at the vfio-pci module", err)
			}
		})
	}
}

// A hung write is left running; the function gets no more writes until it
// returns, and then whatever the kernel did is visible again.
func TestHungWriteIsPending(t *testing.T) {
	t.Parallel()
	root, k, _ := sampleKernel(t)
	const a = "0000:02:00.1"
	k.Inject(sysfstest.Fault{Attr: "unbind", Hang: true, Times: 1})
	b := newBinder(root, k, sysfs.WithTimeout(100*time.Millisecond))
	ctx := context.Background()
	if err := b.BindVFIO(ctx, a); !errors.Is(err, sysfs.ErrTimeout) {
		t.Fatalf("got %v, want ErrTimeout", err)
	}
	if _, ok := b.Pending()[a]; !ok {
		t.Fatalf("Pending() = %v, want %s", b.Pending(), a)
	}
	if err := b.Restore(ctx, a, sysfs.State{Driver: "nvme"}); !errors.Is(err, sysfs.ErrWritePending) {
		t.Fatalf("restore during a hung write: got %v, want ErrWritePending", err)
	}
	k.Unhang()
	deadline := time.Now().Add(2 * time.Second)
	for len(b.Pending()) > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if p := b.Pending(); len(p) > 0 {
		t.Fatalf("still pending after the write returned: %v", p)
	}
	// The unbind completed late: the VF is driverless with the override set.
	if diff := cmp.Diff(sysfs.State{Override: "vfio-pci"}, mustRead(t, b, a)); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
	if err := b.Restore(ctx, a, sysfs.State{Driver: "nvme"}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sysfs.State{Driver: "nvme"}, mustRead(t, b, a)); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
}

func TestReadVanished(t *testing.T) {
	t.Parallel()
	root, k, dir := sampleKernel(t)
	if err := sysfstest.RemoveFunction(dir, "0000:01:00.4"); err != nil {
		t.Fatal(err)
	}
	b := newBinder(root, k)
	if _, err := b.Read("0000:01:00.4"); !errors.Is(err, sysfs.ErrVanished) {
		t.Errorf("got %v, want ErrVanished", err)
	}
	if err := b.BindVFIO(context.Background(), "0000:01:00.4"); !errors.Is(err, sysfs.ErrVanished) {
		t.Errorf("got %v, want ErrVanished", err)
	}
}

func TestKernelWriter(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "driver_override")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := (sysfs.KernelWriter{}).WriteAttr(p, "vfio-pci"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "vfio-pci" {
		t.Errorf("wrote %q", b)
	}
	// sysfs attributes are never created.
	if err := (sysfs.KernelWriter{}).WriteAttr(p+"-missing", "x"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got %v, want ErrNotExist", err)
	}
}

func TestLiveBlockUsage(t *testing.T) {
	t.Parallel()
	root, _, _ := sampleKernel(t)
	// Give the nvme VF 02:00.1 a namespace block device, as the kernel
	// shows it: /sys/class/block/nvme2n1 -> .../0000:02:00.1/nvme/nvme2/nvme2n1.
	devDir, err := filepath.EvalSymlinks(root.PCIDevicePath("0000:02:00.1"))
	if err != nil {
		t.Fatal(err)
	}
	ns := filepath.Join(devDir, "nvme", "nvme2", "nvme2n1")
	if err := os.MkdirAll(filepath.Join(ns, "holders"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ns, "dev"), []byte("259:3\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root.Sys, "class", "block"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(ns, filepath.Join(root.Sys, "class", "block", "nvme2n1")); err != nil {
		t.Fatal(err)
	}
	proc := filepath.Join(t.TempDir(), "proc")
	if err := os.MkdirAll(filepath.Join(proc, "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	mi := "22 1 259:3 / /var/lib/data rw,relatime shared:1 - ext4 /dev/nvme2n1 rw\n"
	if err := os.WriteFile(filepath.Join(proc, "self", "mountinfo"), []byte(mi), 0o444); err != nil {
		t.Fatal(err)
	}
	u := sysfs.NewLiveBlockUsage(root, proc)
	got := map[sysfs.Address]string{}
	for _, a := range []sysfs.Address{"0000:02:00.1", "0000:02:00.2", "0000:02:00.0"} {
		got[a] = u.BlockHostUse(a)
	}
	want := map[sysfs.Address]string{
		"0000:02:00.1": "block device nvme2n1 is mounted on /var/lib/data",
		"0000:02:00.2": "",
		"0000:02:00.0": "", // the PF is the VF's sibling in /sys/devices, not its parent
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
}
