package binding

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
	"github.com/sriov-cdi/sriov-cdi/sysfs/sysfstest"
)

// These tests run the Manager against sysfstest.Kernel, a fake of the
// kernel's PCI driver core over a fixture tree: no real kernel runs in unit
// tests. The e2e lab (e2e/kernel) runs the same code on a real kernel.

const testConfig = `
pools:
  - name: vf
    mode: vfio
    restoreOnRelease: true
    selectors: {vendors: ["8086"], devices: ["154c"]}
  - name: vf-kernel
    mode: kernel
    selectors: {vendors: ["8086"], devices: ["1572"]}
`

// env is one fixture host: PF 0000:01:00.0 (i40e, group 3) with VFs
// 0000:01:00.1-.4 (iavf, groups 4-7), each VF a unit of pool "vf".
type env struct {
	t     testing.TB
	dir   string
	root  sysfs.Root
	k     *sysfstest.Kernel
	cfg   *config.Config
	state string
}

func newEnv(t testing.TB, vfs int) *env {
	t.Helper()
	dir := t.TempDir()
	if err := sysfstest.SRIOVNICHost(dir, 1, vfs).Write(); err != nil {
		t.Fatal(err)
	}
	return openEnv(t, dir)
}

func openEnv(t testing.TB, dir string) *env {
	t.Helper()
	k, err := sysfstest.NewKernel(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Unhang)
	cfg, err := config.Parse("test.yaml", []byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, dir: dir, root: sysfs.Root{Sys: filepath.Join(dir, "sys"), Dev: filepath.Join(dir, "dev")}, k: k, cfg: cfg, state: filepath.Join(dir, "state", "state.json")}
}

func (e *env) manager(opts ...Option) *Manager {
	e.t.Helper()
	m, err := NewManager(e.root, e.state, zaptest.NewLogger(e.t), append([]Option{WithWriter(e.k), WithTimeout(time.Second), WithPollInterval(time.Millisecond), WithFault("")}, opts...)...)
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

// plan returns the named pool's config and units on the current host.
func (e *env) plan(name string) (*config.Pool, []pool.Unit) {
	e.t.Helper()
	h, err := sysfs.Scan(e.root)
	if err != nil {
		e.t.Fatal(err)
	}
	p := pool.Build(e.cfg, h).Pool(name)
	if p == nil {
		e.t.Fatalf("no pool %q", name)
	}
	return p.Config, p.Units
}

// drivers returns driver/override of every function in addrs.
func (e *env) drivers(addrs ...sysfs.Address) map[sysfs.Address]sysfs.State {
	e.t.Helper()
	b := sysfs.NewBinder(e.root)
	out := map[sysfs.Address]sysfs.State{}
	for _, a := range addrs {
		s, err := b.Read(a)
		if err != nil {
			s = sysfs.State{Driver: "ERROR " + err.Error()}
		}
		out[a] = s
	}
	return out
}

var vfAddrs = []sysfs.Address{"0000:01:00.1", "0000:01:00.2", "0000:01:00.3", "0000:01:00.4"}

func allOn(s sysfs.State, addrs ...sysfs.Address) map[sysfs.Address]sysfs.State {
	out := map[sysfs.Address]sysfs.State{}
	for _, a := range addrs {
		out[a] = s
	}
	return out
}

var (
	iavf = sysfs.State{Driver: "iavf"}
	vfio = sysfs.State{Driver: "vfio-pci", Override: "vfio-pci"}
)

// The one place that keeps kernel pools from writing driver attributes.
func TestKernelModeNeverWritesDriverAttributes(t *testing.T) {
	e := newEnv(t, 2)
	m := e.manager()
	kp := &e.cfg.Pools[1]
	units := []pool.Unit{{ID: "0000:01:00.1", Members: []sysfs.Address{"0000:01:00.1"}, Group: "4"}}
	ctx := context.Background()
	for name, call := range map[string]func() error{
		"Prepare": func() error { return m.Prepare(ctx, kp, units) },
		"Unbind":  func() error { return m.Unbind(ctx, kp, units) },
		"PlanPrepare": func() error {
			_, err := m.PlanPrepare(kp, units)
			return err
		},
		"nil pool": func() error { return m.Prepare(ctx, nil, units) },
	} {
		err := call()
		if !errors.Is(err, ErrNotVFIO) {
			t.Errorf("%s: got %v, want ErrNotVFIO", name, err)
		}
	}
	if w := e.k.Writes(); len(w) != 0 {
		t.Errorf("kernel pool wrote %v", w)
	}
	if _, err := os.Stat(e.state); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file written for a kernel pool: %v", err)
	}
	if err := m.Prepare(ctx, kp, units); !strings.Contains(fmt.Sprint(err), `pool "vf-kernel" is in "kernel" mode`) {
		t.Errorf("error does not name the pool and mode: %v", err)
	}
}

// The plugin's Allocate calls Prepare for every pool: through ForAllocate a
// kernel pool gets nil and nothing is written; a vfio pool is bound, and
// the undo it returns restores what this call bound and nothing else.
func TestForAllocate(t *testing.T) {
	e := newEnv(t, 2)
	m := e.manager()
	ctx := context.Background()
	kunits := []pool.Unit{{ID: "0000:01:00.0", Members: []sysfs.Address{"0000:01:00.0"}}}
	undo, err := (ForAllocate{m}).Prepare(ctx, &e.cfg.Pools[1], kunits)
	if err != nil || undo != nil {
		t.Errorf("kernel pool: undo %v, %v; want none", undo != nil, err)
	}
	if w := e.k.Writes(); len(w) != 0 {
		t.Errorf("kernel pool wrote %v", w)
	}
	pc, units := e.plan("vf")
	if _, err := (ForAllocate{m}).Prepare(ctx, pc, units[:1]); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(allOn(vfio, "0000:01:00.1"), e.drivers("0000:01:00.1")); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
	// Both units in one request: only the second is bound by it.
	undo, err = (ForAllocate{m}).Prepare(ctx, pc, units[:2])
	if err != nil || undo == nil {
		t.Fatalf("second Prepare: undo %v, %v", undo != nil, err)
	}
	if err := undo(ctx); err != nil {
		t.Fatal(err)
	}
	want := allOn(vfio, "0000:01:00.1")
	want["0000:01:00.2"] = iavf
	if diff := cmp.Diff(want, e.drivers("0000:01:00.1", "0000:01:00.2")); diff != "" {
		t.Errorf("after undo (-want +got)\n%s", diff)
	}
	if undo, err := (ForAllocate{m}).Prepare(ctx, pc, units[:1]); err != nil || undo != nil {
		t.Errorf("Prepare of a bound unit: undo %v, %v; want none", undo != nil, err)
	}
}

func TestPrepareReleaseRestore(t *testing.T) {
	e := newEnv(t, 4)
	m := e.manager()
	pc, units := e.plan("vf")
	ctx := context.Background()
	if err := m.Prepare(ctx, pc, units[:2]); err != nil {
		t.Fatal(err)
	}
	want := allOn(iavf, vfAddrs...)
	want["0000:01:00.1"], want["0000:01:00.2"] = vfio, vfio
	if diff := cmp.Diff(want, e.drivers(vfAddrs...)); diff != "" {
		t.Errorf("after Prepare (-want +got)\n%s", diff)
	}
	for _, g := range []string{"4", "5"} {
		if _, err := os.Stat(e.root.VFIOGroupPath(g)); err != nil {
			t.Errorf("/dev/vfio/%s: %v", g, err)
		}
	}
	type rec struct {
		Address sysfs.Address
		Orig    sysfs.State
		Phase   Phase
	}
	var got []rec
	for _, r := range m.Records() {
		got = append(got, rec{r.Address, r.Original, r.Phase})
	}
	if diff := cmp.Diff([]rec{{"0000:01:00.1", iavf, PhaseDone}, {"0000:01:00.2", iavf, PhaseDone}}, got); diff != "" {
		t.Errorf("records (-want +got)\n%s", diff)
	}
	// Prepare again is a no-op: no writes.
	n := len(e.k.Writes())
	if err := m.Prepare(ctx, pc, units[:2]); err != nil {
		t.Fatal(err)
	}
	if w := e.k.Writes()[n:]; len(w) != 0 {
		t.Errorf("second Prepare wrote %v", w)
	}
	// A new manager on the same state keeps prepared devices bound (a pod
	// may use them).
	m = e.manager()
	if diff := cmp.Diff(want, e.drivers(vfAddrs...)); diff != "" {
		t.Errorf("after restart (-want +got)\n%s", diff)
	}
	if err := m.Release(ctx, []sysfs.Address{"0000:01:00.1"}); err != nil {
		t.Fatal(err)
	}
	want["0000:01:00.1"] = iavf
	if diff := cmp.Diff(want, e.drivers(vfAddrs...)); diff != "" {
		t.Errorf("after Release (-want +got)\n%s", diff)
	}
	if err := m.Restore(ctx, []sysfs.Address{"0000:01:00.3"}); err == nil || !strings.Contains(err.Error(), "0000:01:00.3: not in state file") {
		t.Errorf("restore of an unchanged device: got %v", err)
	}
	if err := m.RestoreAll(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(allOn(iavf, vfAddrs...), e.drivers(vfAddrs...)); diff != "" {
		t.Errorf("after RestoreAll (-want +got)\n%s", diff)
	}
	if r := m.Records(); len(r) != 0 {
		t.Errorf("records left: %v", r)
	}
	for _, w := range e.k.Writes() {
		if strings.HasSuffix(w.Path, "new_id") {
			t.Errorf("wrote new_id: %v", w)
		}
	}
}

func TestPrepareRollsBackOnFailure(t *testing.T) {
	const bad = "0000:01:00.3" // the third unit fails; the other two bind first or in parallel
	for _, tc := range []struct {
		name     string
		fault    sysfstest.Fault
		unload   bool
		wantStep sysfs.Step
		vanished bool
	}{
		{name: "override write error", fault: sysfstest.Fault{Attr: "driver_override", Device: bad, Times: 1, Err: syscall.EINVAL}, wantStep: sysfs.StepSetOverride},
		{name: "unbind error", fault: sysfstest.Fault{Attr: "unbind", Device: bad, Times: 1, Err: syscall.EIO}, wantStep: sysfs.StepUnbind},
		{name: "unbind timeout", fault: sysfstest.Fault{Attr: "unbind", Device: bad, Times: 1, Hang: true}, wantStep: sysfs.StepUnbind},
		{name: "probe binds nothing", fault: sysfstest.Fault{Attr: "drivers_probe", Device: bad, Times: 1, NoEffect: true}, wantStep: sysfs.StepProbe},
		{name: "probe error", fault: sysfstest.Fault{Attr: "drivers_probe", Device: bad, Times: 1, Err: syscall.ENOMEM}, wantStep: sysfs.StepProbe},
		{name: "device vanishes", fault: sysfstest.Fault{Attr: "unbind", Device: bad, Times: 1, Vanish: true}, wantStep: sysfs.StepUnbind, vanished: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 4)
			m := e.manager(WithTimeout(300 * time.Millisecond))
			pc, units := e.plan("vf")
			e.k.Inject(tc.fault)
			err := m.Prepare(context.Background(), pc, units[:3])
			var se *sysfs.StepError
			if !errors.As(err, &se) || se.Device != bad || se.Step != tc.wantStep {
				t.Fatalf("got %v, want a step error for %s at %s", err, bad, tc.wantStep)
			}
			if !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), string(tc.wantStep)) {
				t.Errorf("error %q does not name the device and step", err)
			}
			if tc.fault.Hang {
				// The hung unbind is still pending: rollback cannot touch
				// the device and says so; the record stays for later.
				if !errors.Is(err, sysfs.ErrWritePending) {
					t.Errorf("want the rollback to report the pending write, got %v", err)
				}
				if len(m.Records()) == 0 {
					t.Error("the hung device's record was dropped before it was restored")
				}
				e.k.Unhang()
				deadline := time.Now().Add(5 * time.Second)
				for len(m.binder.Pending()) > 0 && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
				// The next operation finishes the job.
				if err := m.Release(context.Background(), nil); err != nil {
					t.Fatal(err)
				}
			}
			want := allOn(iavf, vfAddrs...)
			if tc.vanished {
				delete(want, bad)
			}
			got := e.drivers(vfAddrs...)
			if tc.vanished {
				delete(got, bad)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("after rollback (-want +got)\n%s", diff)
			}
			if r := m.Records(); len(r) != 0 {
				t.Errorf("records left: %+v", r)
			}
		})
	}
}

// fakeNet and fakeBlock stand in for the live host (no real host state in
// a fixture).
type fakeNet map[string]string

func (f fakeNet) HostUse(n string) string { return f[n] }

type fakeBlock map[sysfs.Address]string

func (f fakeBlock) BlockHostUse(a sysfs.Address) string { return f[a] }

func TestInterlocks(t *testing.T) {
	for _, tc := range []struct {
		name   string
		setup  func(e *env) []Option // runs after planning
		units  func(u []pool.Unit) []pool.Unit
		reason string
	}{{
		name: "netdev used by the host",
		setup: func(*env) []Option {
			return []Option{WithNetUsage(func() sysfs.NetUsage { return fakeNet{"ens0f0v1": "holds address 192.0.2.7"} })}
		},
		reason: "netdev ens0f0v1 holds address 192.0.2.7",
	}, {
		name: "storage with a mounted filesystem",
		setup: func(e *env) []Option {
			if err := os.WriteFile(filepath.Join(e.root.PCIDevicePath("0000:01:00.2"), "uevent"), []byte("DRIVER=iavf\nPCI_CLASS=10802\nPCI_ID=8086:154C\n"), 0o644); err != nil {
				e.t.Fatal(err)
			}
			return []Option{WithBlockUsage(func() sysfs.BlockUsage { return fakeBlock{"0000:01:00.2": "block device nvme2n1 is mounted on /data"} })}
		},
		reason: "storage controller 0000:01:00.2: block device nvme2n1 is mounted on /data",
	}, {
		name: "driver not allowed",
		setup: func(e *env) []Option {
			e.cfg.Pools[0].AllowUnbindFrom = []string{"ixgbevf"}
			return nil
		},
		reason: "bound to iavf, which pool \"vf\" may not unbind",
	}, {
		name: "group changed since planning",
		units: func(u []pool.Unit) []pool.Unit {
			u[1].Members = append(u[1].Members, "0000:01:00.4")
			return u
		},
		reason: "the pool planned",
	}, {
		name: "PF with VFs joins the group",
		setup: func(e *env) []Option {
			// Put the PF into VF 0000:01:00.2's group, as a root port
			// without ACS would.
			moveToGroup(e, "0000:01:00.0", "5")
			return nil
		},
		reason: "PF with 4 VFs enabled",
	}, {
		name: "bridge on a DMA-capable driver makes the group not viable",
		setup: func(e *env) []Option {
			moveToGroup(e, "0000:00:00.0", "5")
			if err := sysfstest.SetDriver(e.dir, "0000:00:00.0", "lpc_ich"); err != nil {
				e.t.Fatal(err)
			}
			return nil
		},
		reason: "would not be viable: bridge or host controller 0000:00:00.0 is bound to lpc_ich",
	}, {
		name: "unit vanished",
		setup: func(e *env) []Option {
			if err := sysfstest.RemoveFunction(e.dir, "0000:01:00.2"); err != nil {
				e.t.Fatal(err)
			}
			return nil
		},
		reason: "unit 0000:01:00.2: no such PCI function",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 4)
			pc, units := e.plan("vf")
			units = units[:3]
			if tc.units != nil {
				units = tc.units(units)
			}
			var opts []Option
			if tc.setup != nil {
				opts = tc.setup(e)
			}
			m := e.manager(opts...)
			before := e.drivers(vfAddrs...)
			_, perr := m.PlanPrepare(pc, units)
			err := m.Prepare(context.Background(), pc, units)
			for _, err := range []error{perr, err} {
				if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.reason) {
					t.Errorf("got %v, want refusal containing %q", err, tc.reason)
				}
			}
			if w := e.k.Writes(); len(w) != 0 {
				t.Errorf("refused request wrote %v", w)
			}
			if diff := cmp.Diff(before, e.drivers(vfAddrs...)); diff != "" {
				t.Errorf("refused request changed drivers (-before +after)\n%s", diff)
			}
		})
	}
}

// moveToGroup moves a function into IOMMU group g of the fixture tree.
func moveToGroup(e *env, addr sysfs.Address, g string) {
	e.t.Helper()
	dev, err := filepath.EvalSymlinks(e.root.PCIDevicePath(addr))
	if err != nil {
		e.t.Fatal(err)
	}
	old, _ := os.Readlink(filepath.Join(dev, "iommu_group"))
	_ = os.Remove(filepath.Join(dev, old, "devices", string(addr)))
	gdir := filepath.Join(e.root.Sys, "kernel", "iommu_groups", g)
	rel, _ := filepath.Rel(dev, gdir)
	_ = os.Remove(filepath.Join(dev, "iommu_group"))
	if err := os.Symlink(rel, filepath.Join(dev, "iommu_group")); err != nil {
		e.t.Fatal(err)
	}
	back, _ := filepath.Rel(filepath.Join(gdir, "devices"), dev)
	if err := os.Symlink(back, filepath.Join(gdir, "devices", string(addr))); err != nil {
		e.t.Fatal(err)
	}
}

func TestReconcile(t *testing.T) {
	e := newEnv(t, 4)
	// A previous process: 01:00.1 was being bound and is driverless with
	// the override set; 01:00.2 is bound and done; 01:00.3 was being
	// restored and sits on vfio-pci; 01:00.7 no longer exists.
	if err := sysfstest.SetDriver(e.dir, "0000:01:00.1", ""); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"0000:01:00.2", "0000:01:00.3"} {
		if err := sysfstest.SetDriver(e.dir, a, "vfio-pci"); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range []string{"0000:01:00.1", "0000:01:00.2", "0000:01:00.3"} {
		if err := os.WriteFile(filepath.Join(e.root.PCIDevicePath(sysfs.Address(a)), "driver_override"), []byte("vfio-pci\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rec := func(a string, p Phase) *Record {
		return &Record{Address: sysfs.Address(a), Unit: sysfs.Address(a), Pool: "vf", Original: iavf, Target: "vfio-pci", Phase: p, Origin: OriginAllocate}
	}
	st := stateData{Version: stateVersion, Op: &Op{Kind: "bind", Devices: []sysfs.Address{"0000:01:00.1"}, PID: 1},
		Devices: []*Record{rec("0000:01:00.1", PhaseChanging), rec("0000:01:00.2", PhaseDone), rec("0000:01:00.3", PhaseRestoring), rec("0000:01:00.7", PhaseChanging)}}
	writeState(t, e.state, st)

	m := e.manager()
	want := allOn(iavf, vfAddrs...)
	want["0000:01:00.2"] = vfio
	if diff := cmp.Diff(want, e.drivers(vfAddrs...)); diff != "" {
		t.Errorf("after reconcile (-want +got)\n%s", diff)
	}
	var left []sysfs.Address
	for _, r := range m.Records() {
		left = append(left, r.Address)
	}
	if diff := cmp.Diff([]sysfs.Address{"0000:01:00.2"}, left); diff != "" {
		t.Errorf("records (-want +got)\n%s", diff)
	}
	var onDisk stateData
	b, _ := os.ReadFile(e.state)
	if err := json.Unmarshal(b, &onDisk); err != nil || onDisk.Op != nil || len(onDisk.Devices) != 1 {
		t.Errorf("state file after reconcile: %s (%v)", b, err)
	}
}

func TestCorruptStateFileFails(t *testing.T) {
	e := newEnv(t, 1)
	if err := os.MkdirAll(filepath.Dir(e.state), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.state, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := NewManager(e.root, e.state, zap.NewNop(), WithWriter(e.k), WithFault(""))
	if err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("got %v, want a corrupt-state error", err)
	}
}

func writeState(t *testing.T, path string, st stateData) {
	t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestParseFault(t *testing.T) {
	for _, tc := range []struct {
		spec      string
		wantWrite int
		wantStep  sysfs.Step
		wantErr   string
	}{
		{spec: ""},
		{spec: "exit-after-write:3", wantWrite: 3},
		{spec: "after-unbind", wantStep: sysfs.StepUnbind},
		{spec: "exit-after:probe", wantStep: sysfs.StepProbe},
		{spec: "exit-after-write:2,after-set-override", wantWrite: 2, wantStep: sysfs.StepSetOverride},
		{spec: "exit-after-write:0", wantErr: "N >= 1"},
		{spec: "after-nothing", wantErr: "unknown step"},
		{spec: "crash", wantErr: "unknown rule"},
	} {
		h, err := parseFault(tc.spec)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: got %v, want error containing %q", tc.spec, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.spec, err)
			continue
		}
		var gotWrite int
		var gotStep sysfs.Step
		if h != nil {
			gotWrite, gotStep = h.afterWrite, h.afterStep
		}
		if gotWrite != tc.wantWrite || gotStep != tc.wantStep {
			t.Errorf("%q: got write %d step %q, want %d %q", tc.spec, gotWrite, gotStep, tc.wantWrite, tc.wantStep)
		}
	}
}

func TestDryRunWritesNothing(t *testing.T) {
	e := newEnv(t, 2)
	m := e.manager(ReadOnly())
	pc, units := e.plan("vf")
	changes, err := m.PlanPrepare(pc, units)
	if err != nil {
		t.Fatal(err)
	}
	want := []Change{
		{Device: "0000:01:00.1", Unit: "0000:01:00.1", Pool: "vf", Group: "4", From: iavf, To: vfio},
		{Device: "0000:01:00.2", Unit: "0000:01:00.2", Pool: "vf", Group: "5", From: iavf, To: vfio},
	}
	if diff := cmp.Diff(want, changes); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
	if err := m.Prepare(context.Background(), pc, units); !errors.Is(err, ErrReadOnly) {
		t.Errorf("got %v, want ErrReadOnly", err)
	}
	if w := e.k.Writes(); len(w) != 0 {
		t.Errorf("dry run wrote %v", w)
	}
}

func TestObserverSeesEveryOperation(t *testing.T) {
	e := newEnv(t, 4)
	var mu sync.Mutex
	got := map[string]int{}
	m := e.manager(WithObserver(func(op string, d time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		result := "ok"
		if err != nil {
			result = "error"
		}
		if d < 0 {
			t.Errorf("negative duration for %s", op)
		}
		got[op+" "+result]++
	}))
	pc, units := e.plan("vf")
	ctx := context.Background()
	if err := m.Prepare(ctx, pc, units[:3]); err != nil {
		t.Fatal(err)
	}
	if err := m.Restore(ctx, []sysfs.Address{units[0].ID, units[1].ID}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]int{"bind ok": 3, "restore ok": 2}, got); diff != "" {
		t.Errorf("observed (-want +got)\n%s", diff)
	}
}

// recordingNet answers NetUsage from a map and records every netdev asked
// about: what the check read.
type recordingNet struct {
	mu    sync.Mutex
	use   map[string]string
	asked map[string]bool
	calls int
}

func (r *recordingNet) usage() sysfs.NetUsage {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	return r
}

func (r *recordingNet) HostUse(n string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.asked[n] = true
	return r.use[n]
}

func (r *recordingNet) set(n, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.use[n] = why
}

// TestCheckReadsOnlyTheUnit: the check before a bind reads the unit, its
// group and its PF — not the rest of the host — and sees changes made
// just before the call (fresh data, every interlock).
func TestCheckReadsOnlyTheUnit(t *testing.T) {
	e := newEnv(t, 8)
	pc, units := e.plan("vf")
	unit := units[1:2] // 0000:01:00.2, netdev ens0f0v1
	rec := &recordingNet{use: map[string]string{}, asked: map[string]bool{}}
	m := e.manager(WithNetUsage(rec.usage))
	// An unrelated VF vanishes badly (a dangling bus link): a full scan
	// would warn about it; the check must not even look.
	if err := os.RemoveAll(e.devDir("0000:01:00.6")); err != nil {
		t.Fatal(err)
	}
	if _, err := m.PlanPrepare(pc, unit); err != nil {
		t.Fatalf("clean unit refused: %v", err)
	}
	if diff := cmp.Diff(map[string]bool{"ens0f0": true, "ens0f0v1": true}, rec.asked); diff != "" {
		t.Errorf("netdevs read (-want +got)\n%s", diff)
	}

	for _, step := range []struct {
		name   string
		change func()
		reason string
	}{
		{"address added", func() { rec.set("ens0f0v1", "holds address 192.0.2.7") }, "netdev ens0f0v1 holds address 192.0.2.7"},
		{"address gone", func() { rec.set("ens0f0v1", "") }, ""},
		{"driver changed", func() {
			if err := sysfstest.SetDriver(e.dir, "0000:01:00.2", "nvme"); err != nil {
				t.Fatal(err)
			}
		}, "bound to nvme"},
		{"driver back", func() {
			if err := sysfstest.SetDriver(e.dir, "0000:01:00.2", "iavf"); err != nil {
				t.Fatal(err)
			}
		}, ""},
		{"PF joins the group", func() { moveToGroup(e, "0000:01:00.0", unit[0].Group) }, "PF with 8 VFs enabled"},
	} {
		step.change()
		calls := rec.calls
		_, err := m.PlanPrepare(pc, unit)
		switch {
		case step.reason == "" && err != nil:
			t.Errorf("%s: refused: %v", step.name, err)
		case step.reason != "" && (!errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), step.reason)):
			t.Errorf("%s: got %v, want a refusal containing %q", step.name, err, step.reason)
		}
		if rec.calls != calls+1 {
			t.Errorf("%s: network use asked %d times, want once per check", step.name, rec.calls-calls)
		}
	}
}

func (e *env) devDir(a sysfs.Address) string {
	e.t.Helper()
	d, err := filepath.EvalSymlinks(e.root.PCIDevicePath(a))
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}
