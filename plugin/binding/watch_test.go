package binding

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// fakeKubelet serves the PodResources API on a unix socket. It is a fake
// because a real kubelet cannot run in unit tests; the kubelet lab
// (e2e/kubelet) exercises the real one.
type fakeKubelet struct {
	podresourcesv1.UnimplementedPodResourcesListerServer
	mu      sync.Mutex
	devices map[string][]string // pod name -> device IDs of resource example.com/vf
	fail    bool
}

func (f *fakeKubelet) set(pod string, ids ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(ids) == 0 {
		delete(f.devices, pod)
		return
	}
	f.devices[pod] = ids
}

func (f *fakeKubelet) List(context.Context, *podresourcesv1.ListPodResourcesRequest) (*podresourcesv1.ListPodResourcesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return nil, os.ErrDeadlineExceeded
	}
	resp := &podresourcesv1.ListPodResourcesResponse{}
	for pod, ids := range f.devices {
		resp.PodResources = append(resp.PodResources, &podresourcesv1.PodResources{
			Name: pod, Namespace: "default",
			Containers: []*podresourcesv1.ContainerResources{{Name: "c", Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "example.com/vf", DeviceIds: ids}}}},
		})
	}
	return resp, nil
}

func startFakeKubelet(t *testing.T) (*fakeKubelet, string) {
	t.Helper()
	// Unix socket paths are limited to 108 bytes: keep it short.
	dir, err := os.MkdirTemp("", "pr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "kubelet.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeKubelet{devices: map[string][]string{}}
	srv := grpc.NewServer()
	podresourcesv1.RegisterPodResourcesListerServer(srv, f)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return f, sock
}

func TestWatcherRestoresReleasedDevices(t *testing.T) {
	e := newEnv(t, 4)
	now := time.Date(2026, 11, 22, 1, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	m := e.manager(func(o *options) { o.now = clock })
	pc, units := e.plan("vf")
	ctx := context.Background()
	if err := m.Prepare(ctx, pc, units[:3]); err != nil {
		t.Fatal(err)
	}
	kl, sock := startFakeKubelet(t)
	conn, err := DialPodResources(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	w := NewWatcher(m, podresourcesv1.NewPodResourcesListerClient(conn), zaptest.NewLogger(t), time.Second, time.Minute)

	// Pod a holds 01:00.1, pod b holds 01:00.2; 01:00.3 was allocated but
	// its pod never showed up.
	kl.set("a", "0000:01:00.1")
	kl.set("b", "0000:01:00.2")
	poll := func() {
		t.Helper()
		if err := w.Poll(ctx); err != nil {
			t.Fatal(err)
		}
	}
	poll()
	want := allOn(iavf, vfAddrs...)
	want["0000:01:00.1"], want["0000:01:00.2"], want["0000:01:00.3"] = vfio, vfio, vfio
	if diff := cmp.Diff(want, e.drivers(vfAddrs...)); diff != "" {
		t.Errorf("all assigned or within grace (-want +got)\n%s", diff)
	}

	// Pod a is deleted: its device goes back to iavf.
	kl.set("a")
	poll()
	want["0000:01:00.1"] = iavf
	if diff := cmp.Diff(want, e.drivers(vfAddrs...)); diff != "" {
		t.Errorf("after pod a deleted (-want +got)\n%s", diff)
	}

	// kubelet restarting: List fails, nothing is released.
	kl.mu.Lock()
	kl.fail = true
	kl.mu.Unlock()
	kl.set("b")
	if err := w.Poll(ctx); err == nil {
		t.Error("want the failed List reported")
	}
	if diff := cmp.Diff(want, e.drivers(vfAddrs...)); diff != "" {
		t.Errorf("a failed poll changed drivers (-want +got)\n%s", diff)
	}
	kl.mu.Lock()
	kl.fail = false
	kl.mu.Unlock()

	// The grace period passes: 01:00.3 (never assigned) and 01:00.2 (pod b
	// gone) are restored.
	now = now.Add(2 * time.Minute)
	poll()
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
	m := e.manager()
	pc, units := e.plan("vf")
	ctx := context.Background()
	if err := m.Prepare(ctx, pc, units[:1]); err != nil {
		t.Fatal(err)
	}
	kl, sock := startFakeKubelet(t)
	conn, err := DialPodResources(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	w := NewWatcher(m, podresourcesv1.NewPodResourcesListerClient(conn), zaptest.NewLogger(t), time.Second, time.Nanosecond)
	kl.set("a", "0000:01:00.1")
	for range 2 {
		if err := w.Poll(ctx); err != nil {
			t.Fatal(err)
		}
		kl.set("a")
	}
	if diff := cmp.Diff(map[sysfs.Address]sysfs.State{"0000:01:00.1": vfio}, e.drivers("0000:01:00.1")); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
}
