package binding

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap/zaptest"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/sriov-cdi/sriov-cdi/plugin/kubelettest"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// The watcher against the fake kubelet served over gRPC (kubelettest; a
// real kubelet cannot run in unit tests, the kubelet lab runs one).
func TestWatcherRestoresReleasedDevices(t *testing.T) {
	e := newEnv(t, 4)
	now := time.Date(2026, 11, 22, 1, 0, 0, 0, time.UTC)
	m := e.manager(func(o *options) { o.now = func() time.Time { return now } })
	pc, units := e.plan("vf")
	ctx := context.Background()
	if err := m.Prepare(ctx, pc, units[:3]); err != nil {
		t.Fatal(err)
	}
	kl := kubelettest.New()
	conn, err := DialPodResources(kubelettest.Serve(t, kl))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rule := ReleaseRule{Lists: 2, Span: 10 * time.Second, Settle: 30 * time.Second}
	w := NewWatcher(m, podresourcesv1.NewPodResourcesListerClient(conn), zaptest.NewLogger(t), time.Second, time.Minute, WithReleaseRule(rule))
	poll := func(d time.Duration) {
		t.Helper()
		now = now.Add(d)
		if err := w.Poll(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// Pod a holds 01:00.1, pod b holds 01:00.2; 01:00.3 was allocated but
	// its pod never showed up.
	kl.SetPod("a", pod("0000:01:00.1"))
	kl.SetPod("b", pod("0000:01:00.2"))
	for range 4 {
		poll(10 * time.Second)
	}
	want := allOn(iavf, vfAddrs...)
	want["0000:01:00.1"], want["0000:01:00.2"], want["0000:01:00.3"] = vfio, vfio, vfio
	if diff := cmp.Diff(want, e.drivers(vfAddrs...)); diff != "" {
		t.Errorf("all assigned or within grace (-want +got)\n%s", diff)
	}

	// Pod a is deleted: after two answers 10 s apart its device goes back
	// to iavf.
	kl.DeletePod("a")
	poll(5 * time.Second)
	if diff := cmp.Diff(want, e.drivers(vfAddrs...)); diff != "" {
		t.Errorf("one answer without pod a (-want +got)\n%s", diff)
	}
	poll(10 * time.Second)
	want["0000:01:00.1"] = iavf
	if diff := cmp.Diff(want, e.drivers(vfAddrs...)); diff != "" {
		t.Errorf("after pod a deleted (-want +got)\n%s", diff)
	}

	// The grace period passes: 01:00.3 (never assigned) and 01:00.2 (pod b
	// gone) are restored.
	kl.DeletePod("b")
	now = now.Add(time.Minute)
	poll(10 * time.Second)
	poll(10 * time.Second)
	if diff := cmp.Diff(allOn(iavf, vfAddrs...), e.drivers(vfAddrs...)); diff != "" {
		t.Errorf("after grace (-want +got)\n%s", diff)
	}
	if r := m.Records(); len(r) != 0 {
		t.Errorf("records left: %+v", r)
	}
}

// A pool without restoreOnRelease keeps its devices bound for the next pod.
func TestWatcherKeepsPoolsWithoutRestoreOnRelease(t *testing.T) {
	e := newEnv(t, 2)
	e.cfg.Pools[0].RestoreOnRelease = false
	now := time.Date(2026, 11, 22, 1, 0, 0, 0, time.UTC)
	m := e.manager(func(o *options) { o.now = func() time.Time { return now } })
	pc, units := e.plan("vf")
	ctx := context.Background()
	if err := m.Prepare(ctx, pc, units[:1]); err != nil {
		t.Fatal(err)
	}
	kl := kubelettest.New()
	w := NewWatcher(m, kl, zaptest.NewLogger(t), time.Second, time.Nanosecond)
	kl.SetPod("a", pod("0000:01:00.1"))
	for range 30 {
		now = now.Add(10 * time.Second)
		if err := w.Poll(ctx); err != nil {
			t.Fatal(err)
		}
		kl.DeletePod("a")
	}
	if diff := cmp.Diff(map[sysfs.Address]sysfs.State{"0000:01:00.1": vfio}, e.drivers("0000:01:00.1")); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
}

// AssignedDevices keeps PCI addresses and vhost-user slot IDs, and leaves
// out other plugins' IDs.
func TestAssignedDevicesKeepsSlots(t *testing.T) {
	resp := &podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{{
		Containers: []*podresourcesv1.ContainerResources{{Devices: []*podresourcesv1.ContainerDevices{
			{ResourceName: "example.com/vf", DeviceIds: []string{"0000:3B:02.1", "gpu-7"}},
			{ResourceName: "example.com/vhu", DeviceIds: []string{"slot-3", "slot-03", "slot-x"}},
		}}},
	}}}
	got := AssignedDevices(resp)
	want := map[string]map[sysfs.Address]bool{"example.com/vf": {"0000:3b:02.1": true}, "example.com/vhu": {"slot-3": true}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("AssignedDevices (-want +got):\n%s", diff)
	}
}
