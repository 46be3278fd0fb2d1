package plugin

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/sriov-cdi/sriov-cdi/core/binding"
	"github.com/sriov-cdi/sriov-cdi/plugin/kubelettest"
)

// releaseEnv: one pool "vf" with 01:00.1 and 01:00.2 allocated (both
// have device-info files), a scripted fake kubelet (kubelettest: no
// kubelet runs in unit tests) and a clock the test moves.
type releaseEnv struct {
	h   *harness
	kl  *kubelettest.PodResources
	now time.Time
}

func newReleaseEnv(t *testing.T) *releaseEnv {
	h := startHarness(t, 1, 3, `pools: [{name: vf, selectors: {rootDevices: ["0000:01:00.0"]}}]`, nil, zap.NewNop())
	regs := h.registrations(t, 1)
	c := h.kubelet.client(t, regs["sriov-cdi.io/vf"])
	if _, err := c.Allocate(context.Background(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"0000:01:00.1", "0000:01:00.2"}}}}); err != nil {
		t.Fatal(err)
	}
	return &releaseEnv{h: h, kl: kubelettest.New(), now: time.Now()}
}

func (e *releaseEnv) exists(id string) bool {
	_, err := os.Stat(filepath.Join(e.h.dir, "devinfo", "sriov-cdi.io-vf-"+id+"-device.json"))
	return err == nil
}

func (e *releaseEnv) poll(t *testing.T, d time.Duration) {
	t.Helper()
	e.now = e.now.Add(d)
	if err := e.h.mgr.pollReleases(context.Background(), e.kl, func() time.Time { return e.now }); err != nil {
		t.Fatal(err)
	}
}

func vf(ids ...string) kubelettest.Device {
	return kubelettest.Device{Resource: "sriov-cdi.io/vf", IDs: ids}
}

func TestDeviceInfoRemovedWhenReleased(t *testing.T) {
	e := newReleaseEnv(t)
	e.kl.SetPod("p", vf("0000:01:00.1"))
	// Within the grace period nothing goes (kubelet may not have recorded
	// the assignment yet).
	e.poll(t, 0)
	if !e.exists("0000:01:00.1") || !e.exists("0000:01:00.2") {
		t.Fatal("a file was removed within the grace period")
	}
	// Later, once the release rule is met (several answers over 30 s):
	// the device no pod holds loses its file; the held one keeps it.
	for range 8 {
		e.poll(t, 30*time.Second)
	}
	if !e.exists("0000:01:00.1") || e.exists("0000:01:00.2") {
		t.Errorf("after release: 01:00.1 kept=%v (want true), 01:00.2 kept=%v (want false)", e.exists("0000:01:00.1"), e.exists("0000:01:00.2"))
	}
}

// An incomplete answer after a kubelet restart, or a stale one, must not
// remove the device-info file of a device a running pod holds (issue
// 11.3; the same rule as the vfio release watcher).
func TestDeviceInfoKeptThroughIncompleteAndStaleAnswers(t *testing.T) {
	e := newReleaseEnv(t)
	before := e.kl.Snapshot()
	e.kl.SetPod("p", vf("0000:01:00.1", "0000:01:00.2"))
	for range 8 {
		e.poll(t, 30*time.Second)
	}
	e.kl.Script(kubelettest.Answer{Err: errors.New("connection refused")}, kubelettest.Answer{Only: []string{}}, kubelettest.Answer{From: before},
		kubelettest.Answer{Only: []string{}}, kubelettest.Answer{From: before})
	e.now = e.now.Add(10 * time.Second)
	if err := e.h.mgr.pollReleases(context.Background(), e.kl, func() time.Time { return e.now }); err == nil {
		t.Fatal("want the failed List reported")
	}
	for range 4 {
		e.poll(t, 20*time.Second)
	}
	if !e.exists("0000:01:00.1") || !e.exists("0000:01:00.2") {
		t.Errorf("a file was removed on incomplete or stale answers: 01:00.1 kept=%v, 01:00.2 kept=%v", e.exists("0000:01:00.1"), e.exists("0000:01:00.2"))
	}
}

// TestDeviceInfoReleaseTiming: Options.Release (the --release-* flags)
// replaces the default figures: with a 1 s grace and a one-answer rule the
// file goes at the first poll after the grace, not minutes later.
func TestDeviceInfoReleaseTiming(t *testing.T) {
	h := startHarness(t, 1, 2, `pools: [{name: vf, selectors: {rootDevices: ["0000:01:00.0"]}}]`, nil, zap.NewNop(), func(_ string, o *Options) {
		o.Release = ReleaseTiming{Grace: time.Second, Rule: binding.ReleaseRule{Lists: 1, Span: time.Millisecond, Settle: time.Millisecond}}
	})
	c := h.kubelet.client(t, h.registrations(t, 1)["sriov-cdi.io/vf"])
	if _, err := c.Allocate(context.Background(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"0000:01:00.1"}}}}); err != nil {
		t.Fatal(err)
	}
	e := &releaseEnv{h: h, kl: kubelettest.New(), now: time.Now()}
	e.poll(t, 0)
	if !e.exists("0000:01:00.1") {
		t.Fatal("removed within the 1 s grace")
	}
	e.poll(t, 2*time.Second)
	e.poll(t, 2*time.Second)
	if e.exists("0000:01:00.1") {
		t.Error("kept after the grace with a one-answer rule")
	}
	if d := DefaultReleaseTiming(); h.mgr.opts.Release.Poll != d.Poll {
		t.Errorf("unset poll = %v, want the default %v", h.mgr.opts.Release.Poll, d.Poll)
	}
}
