package plugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap/zaptest"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	cdilib "tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/sriov-cdi/sriov-cdi/core/binding"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/plugin/kubelettest"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// Regressions: each test here failed on the code before its fix.

// TestVFIOPoolKeepsWhatItBound (issue 11.1): a vfio pool whose selectors
// read something binding changes — the driver, the netdev's link type, the
// function's own netdev name — must keep the unit it just bound: the CDI
// spec still defines the name Allocate returned, the list still shows it,
// and after restore (original driver, netdev back) it is still there.
// The fake kernel removes netdevs on unbind, as a real one does.
func TestVFIOPoolKeepsWhatItBound(t *testing.T) {
	for _, tc := range []struct {
		name     string
		pfs, vfs int
		selector string
		device   string
	}{
		{"drivers", 1, 2, `{drivers: [iavf]}`, "0000:01:00.1"},
		{"linkTypes", 1, 2, `{linkTypes: [ether], rootDevices: ["0000:01:00.0"]}`, "0000:01:00.1"},
		{"pfNames VF", 1, 2, `{pfNames: ["ens0f0#0-1"]}`, "0000:01:00.1"},
		{"pfNames PF", 1, 0, `{pfNames: ["ens0f0"]}`, "0000:01:00.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := zaptest.NewLogger(t)
			prep := &lazyPrep{}
			cfg := "resourcePrefix: example.com\npools:\n  - {name: vf, mode: vfio, allowUnbindFrom: [iavf, i40e], selectors: " + tc.selector + "}\n"
			var cdiDir string
			h := startHarness(t, tc.pfs, tc.vfs, cfg, prep, log, func(dir string, o *Options) {
				o.Holdings = binding.NewHoldings(filepath.Join(dir, "state.json"))
				o.Specs, cdiDir = specsIn(t, dir, o.Root, log)
			})
			_, bm, _ := h.fakeKernel(t, log)
			prep.Preparer = binding.ForAllocate{M: bm}

			regs := h.registrations(t, 1)
			c := h.kubelet.client(t, regs["example.com/vf"])
			stream, err := c.ListAndWatch(context.Background(), &pluginapi.Empty{})
			if err != nil {
				t.Fatal(err)
			}
			listed := func() bool { return slices.Contains(ids(recvList(t, stream)), tc.device+" Healthy") }
			if !listed() {
				t.Fatalf("%s not advertised at start", tc.device)
			}
			resp, err := c.Allocate(context.Background(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{tc.device}}}})
			if err != nil {
				t.Fatal(err)
			}
			name := resp.ContainerResponses[0].CdiDevices[0].Name
			defined := func() bool {
				cache, err := cdilib.NewCache(cdilib.WithSpecDirs(cdiDir), cdilib.WithAutoRefresh(false))
				if err != nil {
					t.Fatal(err)
				}
				return cache.GetDevice(name) != nil
			}
			if !defined() {
				t.Fatalf("Allocate returned CDI device %q, which no spec in %s defines", name, cdiDir)
			}
			// Several rescans later the unit is still the pool's.
			time.Sleep(300 * time.Millisecond)
			if !defined() {
				t.Fatalf("CDI device %q vanished from the specs after rescans", name)
			}
			if !h.inPool(t, "vf", tc.device) {
				t.Fatalf("bound unit %s left the pool", tc.device)
			}

			// Restored: back on its driver, netdev back, still in the pool.
			if err := bm.Restore(context.Background(), []sysfs.Address{sysfs.Address(tc.device)}); err != nil {
				t.Fatal(err)
			}
			if !h.inPool(t, "vf", tc.device) {
				t.Fatalf("restored unit %s did not come back to the pool", tc.device)
			}
			if !defined() {
				t.Fatalf("CDI device %q missing after restore", name)
			}
		})
	}
}

// inPool rescans everything now and reports whether pool holds unit id.
func (h *harness) inPool(t testing.TB, pool, id string) bool {
	t.Helper()
	if err := h.mgr.replan(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	h.mgr.planMu.Lock()
	defer h.mgr.planMu.Unlock()
	p := h.mgr.plan.Pool(pool)
	return p != nil && p.Unit(sysfs.Address(id)) != nil
}

// TestAllocateDuplicateIDSaysSo (issue 11.11): one request naming a device
// twice is refused as such, not as "already being allocated to another
// container".
func TestAllocateDuplicateIDSaysSo(t *testing.T) {
	h := startHarness(t, 1, 2, `pools: [{name: vf, selectors: {devices: ["154c"]}}]`, nil, zaptest.NewLogger(t))
	c := h.kubelet.client(t, h.registrations(t, 1)["sriov-cdi.io/vf"])
	for _, req := range []*pluginapi.AllocateRequest{
		{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"0000:01:00.1", "0000:01:00.1"}}}},
		{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"0000:01:00.1"}}, {DevicesIds: []string{"0000:01:00.1"}}}},
	} {
		_, err := c.Allocate(context.Background(), req)
		if err == nil || !strings.Contains(err.Error(), `device "0000:01:00.1" is named twice in one Allocate request`) {
			t.Errorf("Allocate %v: %v; want the duplicate named", req, err)
		}
	}
}

// failingSyncer is a SpecSyncer that fails while fail is set, as a full or
// read-only CDI directory does.
type failingSyncer struct {
	SpecSyncer
	fail atomic.Bool
}

func (f *failingSyncer) Sync(plan *pool.Plan, h *sysfs.Host) error {
	if f.fail.Load() {
		return fmt.Errorf("write spec: %w", syscall.ENOSPC)
	}
	return f.SpecSyncer.Sync(plan, h)
}

// TestAllocateFailingAfterBindRollsBack (issue 11.14): when Allocate fails
// after binding (here the CDI specs cannot be rewritten), the functions it
// bound go back to their original driver and the state file forgets them;
// a unit that was already bound before the request stays bound.
func TestAllocateFailingAfterBindRollsBack(t *testing.T) {
	log := zaptest.NewLogger(t)
	prep := &lazyPrep{}
	cfg := "resourcePrefix: example.com\npools:\n  - {name: vf, mode: vfio, allowUnbindFrom: [iavf], selectors: {rootDevices: [\"0000:01:00.0\"]}}\n"
	syncer := &failingSyncer{}
	h := startHarness(t, 1, 3, cfg, prep, log, func(dir string, o *Options) {
		syncer.SpecSyncer, _ = specsIn(t, dir, o.Root, log)
		o.Specs = syncer
		o.Holdings = binding.NewHoldings(filepath.Join(dir, "state.json"))
	})
	_, bm, root := h.fakeKernel(t, log)
	prep.Preparer = binding.ForAllocate{M: bm}
	c := h.kubelet.client(t, h.registrations(t, 1)["example.com/vf"])
	alloc := func(ids ...string) error {
		_, err := c.Allocate(context.Background(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: ids}}})
		return err
	}
	driver := func(a string) string {
		st, err := sysfs.NewBinder(root).Read(sysfs.Address(a))
		if err != nil {
			t.Fatal(err)
		}
		return st.Driver
	}
	// 01:00.1 is bound by an earlier, successful Allocate.
	if err := alloc("0000:01:00.1"); err != nil {
		t.Fatal(err)
	}
	syncer.fail.Store(true)
	if err := alloc("0000:01:00.1", "0000:01:00.2"); err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("Allocate with an unwritable CDI directory: %v; want the write error", err)
	}
	if got := driver("0000:01:00.2"); got != "iavf" {
		t.Errorf("0000:01:00.2 bound by the failed Allocate is on %q; want it rolled back to iavf", got)
	}
	if got := driver("0000:01:00.1"); got != "vfio-pci" {
		t.Errorf("0000:01:00.1, bound before the failed Allocate, is on %q; want vfio-pci", got)
	}
	held := bm.Records()
	if len(held) != 1 || held[0].Address != "0000:01:00.1" {
		t.Errorf("state records after rollback: %+v; want only 0000:01:00.1", held)
	}
}

// TestVFLinkDownIsUnhealthy (issue 13, found by the NIC lab): `ip link set
// <vf> down` on a VF whose link was up makes it Unhealthy in ListAndWatch;
// up again, Healthy.
func TestVFLinkDownIsUnhealthy(t *testing.T) {
	h := startHarness(t, 1, 2, `pools: [{name: vf, selectors: {rootDevices: ["0000:01:00.0"]}}]`, nil, zaptest.NewLogger(t))
	c := h.kubelet.client(t, h.registrations(t, 1)["sriov-cdi.io/vf"])
	stream, err := c.ListAndWatch(context.Background(), &pluginapi.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	waitList(t, stream, []string{"0000:01:00.1 Healthy", "0000:01:00.2 Healthy"})
	operstate := filepath.Join(h.dir, "host", "sys", "bus/pci/devices/0000:01:00.1/net/ens0f0v0/operstate")
	for _, step := range []struct{ state, health string }{{"down", "Unhealthy"}, {"up", "Healthy"}} {
		if err := os.WriteFile(operstate, []byte(step.state+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		h.mgr.Trigger("test: link " + step.state)
		waitList(t, stream, []string{"0000:01:00.1 " + step.health, "0000:01:00.2 Healthy"})
	}
}

// TestExitKeepsOnlyAssignedSpecs (issue 12, cluster lab s6): when the
// plugin stops (helm uninstall or a rolling update) its CDI specs keep only
// the devices kubelet still lists as assigned — a restarting container of a
// running pod still finds its device — and a pool with none loses its
// file. Without an answer from kubelet the specs stay as they are.
func TestExitKeepsOnlyAssignedSpecs(t *testing.T) {
	cfg := "resourcePrefix: example.com\npools:\n  - {name: a, selectors: {rootDevices: [\"0000:01:00.0\"]}}\n  - {name: b, selectors: {rootDevices: [\"0000:02:00.0\"]}}\n"
	for _, tc := range []struct {
		name   string
		answer []kubelettest.Answer
		wantA  []string // devices left in a's spec; nil: file gone
		wantB  []string
	}{
		{"one device assigned", nil, []string{"0000:01:00.2"}, nil},
		{"kubelet does not answer", []kubelettest.Answer{{Err: errors.New("connection refused")}}, []string{"0000:01:00.1", "0000:01:00.2"}, []string{"0000:02:00.1", "0000:02:00.2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := zaptest.NewLogger(t)
			kl := kubelettest.New()
			kl.SetPod("p", kubelettest.Device{Resource: "example.com/a", IDs: []string{"0000:01:00.2"}})
			kl.Script(tc.answer...)
			var cdiDir string
			h := startHarness(t, 2, 2, cfg, nil, log, func(dir string, o *Options) {
				o.Specs, cdiDir = specsIn(t, dir, o.Root, log)
				o.PodResources = kl
			})
			h.registrations(t, 2)
			h.stop()
			devices := func(kind string) []string {
				cache, err := cdilib.NewCache(cdilib.WithSpecDirs(cdiDir), cdilib.WithAutoRefresh(false))
				if err != nil {
					t.Fatal(err)
				}
				var out []string
				for _, d := range cache.ListDevices() {
					if name, ok := strings.CutPrefix(d, kind+"="); ok {
						out = append(out, name)
					}
				}
				return out
			}
			if diff := cmp.Diff(tc.wantA, devices("example.com/a")); diff != "" {
				t.Errorf("pool a's spec after exit (-want +got)\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantB, devices("example.com/b")); diff != "" {
				t.Errorf("pool b's spec after exit (-want +got)\n%s", diff)
			}
		})
	}
}
