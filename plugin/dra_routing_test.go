package plugin

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

const dpAndDRA = `
resourcePrefix: example.com
pools:
  - name: vf-a
    mode: kernel
    selectors: {rootDevices: ["0000:01:00.0"]}
  - name: vf-b
    api: dra
    mode: kernel
    selectors: {rootDevices: ["0000:02:00.0"]}
`

// recordingDRA is the Manager's DRA publisher as a test sees it: it keeps
// the plans it was given.
type recordingDRA struct {
	mu    sync.Mutex
	plans []*pool.Plan
}

func (r *recordingDRA) Publish(plan *pool.Plan, _ *sysfs.Host) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.plans = append(r.plans, plan)
}

func (r *recordingDRA) Ready() bool { return true }

func (r *recordingDRA) last() *pool.Plan {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.plans) == 0 {
		return nil
	}
	return r.plans[len(r.plans)-1]
}

// TestDRAPoolsAreNotDevicePluginEndpoints: a pool with api: dra gets no
// device plugin socket and no registration; the DRA publisher receives it
// in every plan.
func TestDRAPoolsAreNotDevicePluginEndpoints(t *testing.T) {
	dra := &recordingDRA{}
	h := startHarness(t, 2, 4, dpAndDRA, nil, zaptest.NewLogger(t), func(_ string, o *Options) { o.DRA = dra })
	regs := h.registrations(t, 1)
	if regs["example.com/vf-a"] == nil {
		t.Fatalf("registrations = %v, want example.com/vf-a", regs)
	}
	entries, err := os.ReadDir(h.dpDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), "vf-b") {
			t.Errorf("device plugin socket %s for the DRA pool", filepath.Join(h.dpDir, e.Name()))
		}
	}
	// Ready means every endpoint registered: the one registration is all.
	for deadline := time.Now().Add(5 * time.Second); !h.mgr.Ready(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("manager not ready within 5s")
		}
	}
	h.kubelet.mu.Lock()
	n := len(h.kubelet.regs)
	h.kubelet.mu.Unlock()
	if n != 1 {
		t.Errorf("%d registrations, want 1: the DRA pool must not register as a device plugin", n)
	}
	p := dra.last()
	if p == nil || p.Pool("vf-b") == nil || len(p.Pool("vf-b").Units) != 4 {
		t.Fatalf("DRA publisher got plan %+v, want pool vf-b with 4 units", p)
	}
}

// TestDRAPoolsNeedTheDriver: a config with api: dra pools and no DRA
// publisher is refused at start with the reason.
func TestDRAPoolsNeedTheDriver(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeConfig(t, cfg, dpAndDRA)
	_, err := NewManager(Options{ConfigPath: cfg, Root: sysfs.Root{Sys: dir, Dev: dir}, DevicePluginDir: dir})
	if err == nil || !strings.Contains(err.Error(), "api: dra, but the DRA driver is not running") {
		t.Fatalf("NewManager error = %v, want the DRA driver refusal", err)
	}
}
