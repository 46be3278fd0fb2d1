package plugin

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/sriov-cdi/sriov-cdi/core/binding"
	"github.com/sriov-cdi/sriov-cdi/sysfs/sysfstest"
)

// With a truncated state file (binding.DegradeOnBadStateFile, as the
// plugin command wires it) both pools register; the kernel pool's Allocate
// succeeds and the vfio pool's fails with the state file's reason; nothing
// is written (issue 11.13).
func TestTruncatedStateFileDegradesAllocate(t *testing.T) {
	log := zaptest.NewLogger(t)
	prep := &lazyPrep{}
	cfg := `
resourcePrefix: example.com
pools:
  - {name: vf, mode: vfio, selectors: {rootDevices: ["0000:01:00.0"]}}
  - {name: vf-kernel, mode: kernel, selectors: {rootDevices: ["0000:02:00.0"]}}
`
	h := startHarness(t, 2, 2, cfg, prep, log)
	host := filepath.Join(h.dir, "host")
	k, err := sysfstest.NewKernel(host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Unhang)
	state := filepath.Join(h.dir, "state.json")
	const truncated = `{"version": 1, "devices": [{"addr`
	if err := os.WriteFile(state, []byte(truncated), 0o644); err != nil {
		t.Fatal(err)
	}
	bm, err := binding.NewManager(h.mgr.opts.Root, state, log, binding.WithWriter(k),
		binding.WithTimeout(2*time.Second), binding.WithPollInterval(time.Millisecond), binding.WithFault(""), binding.DegradeOnBadStateFile())
	if err != nil {
		t.Fatal(err)
	}
	prep.Preparer = binding.ForAllocate{M: bm}

	regs := h.registrations(t, 2)
	ctx := context.Background()
	ck := h.kubelet.client(t, regs["example.com/vf-kernel"])
	if _, err := ck.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"0000:02:00.1"}}}}); err != nil {
		t.Errorf("kernel pool: %v", err)
	}
	c := h.kubelet.client(t, regs["example.com/vf"])
	_, err = c.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"0000:01:00.1"}}}})
	if st, ok := status.FromError(err); err == nil || !ok || !strings.Contains(st.Message(), state) || !strings.Contains(st.Message(), "restore --all") {
		t.Errorf("vfio pool: got %v, want a gRPC error naming %s and the fix", err, state)
	}
	if w := k.Writes(); len(w) != 0 {
		t.Errorf("sysfs writes: %v", w)
	}
	if b, _ := os.ReadFile(state); string(b) != truncated {
		t.Errorf("state file rewritten: %s", b)
	}
}
