// Package kubelettest is a scriptable fake of kubelet's PodResources List
// for tests of code that learns from it which devices were released. No
// real kubelet runs in unit tests (the kubelet lab, e2e/kubelet, runs the
// real one); this fake can do what a real one does around a restart:
// answer with only some pods, slowly, with an error, or with an old
// picture after a newer one.
//
// A PodResources holds the pods and their devices. Each List takes the
// next scripted Answer (Script), or answers completely and at once when
// none is left. It implements binding.PodLister and, through Serve, the
// gRPC server for code that dials a socket.
package kubelettest

import (
	"context"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// Device is one resource's device IDs in a pod.
type Device struct {
	Resource string
	IDs      []string
}

// Snapshot is the pods as they were at one moment (for stale answers).
type Snapshot struct{ pods map[string][]Device }

// Answer scripts one List call.
type Answer struct {
	// Err: the call fails with it (after Delay and Gate).
	Err error
	// Only, when non-nil, answers with just these pods (an incomplete
	// answer, as right after a kubelet restart); empty: no pod at all.
	Only []string
	// From answers from an earlier Snapshot instead of the pods now (a
	// stale answer, possibly after newer ones).
	From *Snapshot
	// Delay waits this long before answering; the caller's context ends
	// the wait with its error.
	Delay time.Duration
	// Gate, when set, holds the answer until it is closed (or the
	// context ends): with two calls in flight, the later can be let
	// through first.
	Gate <-chan struct{}
}

// PodResources is the fake. The zero value is not usable: use New.
type PodResources struct {
	mu      sync.Mutex
	pods    map[string][]Device
	script  []Answer
	calls   int
	started chan int
}

// New returns a fake with no pods and no script.
func New() *PodResources {
	return &PodResources{pods: map[string][]Device{}, started: make(chan int, 1024)}
}

// SetPod adds or replaces a pod holding devices; no devices deletes it.
func (f *PodResources) SetPod(name string, devs ...Device) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(devs) == 0 {
		delete(f.pods, name)
		return
	}
	f.pods[name] = slices.Clone(devs)
}

// DeletePod removes a pod.
func (f *PodResources) DeletePod(name string) { f.SetPod(name) }

// Snapshot returns the pods as they are now.
func (f *PodResources) Snapshot() *Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &Snapshot{pods: maps.Clone(f.pods)}
}

// Script queues answers for the next List calls, in order.
func (f *PodResources) Script(a ...Answer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.script = append(f.script, a...)
}

// Calls returns how many List calls started.
func (f *PodResources) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// Started delivers the number of each List call as it starts (buffered;
// for tests that must know a call is in flight).
func (f *PodResources) Started() <-chan int { return f.started }

// List implements the PodResources client's List (binding.PodLister).
func (f *PodResources) List(ctx context.Context, _ *podresourcesv1.ListPodResourcesRequest, _ ...grpc.CallOption) (*podresourcesv1.ListPodResourcesResponse, error) {
	f.mu.Lock()
	f.calls++
	n := f.calls
	var a Answer
	if len(f.script) > 0 {
		a, f.script = f.script[0], f.script[1:]
	}
	pods := f.pods
	if a.From != nil {
		pods = a.From.pods
	}
	pods = maps.Clone(pods)
	f.mu.Unlock()
	select {
	case f.started <- n:
	default:
	}

	if a.Delay > 0 {
		t := time.NewTimer(a.Delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
	if a.Gate != nil {
		select {
		case <-a.Gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if a.Err != nil {
		return nil, a.Err
	}
	return response(pods, a.Only), nil
}

func response(pods map[string][]Device, only []string) *podresourcesv1.ListPodResourcesResponse {
	names := slices.Sorted(maps.Keys(pods))
	if only != nil {
		names = slices.DeleteFunc(names, func(n string) bool { return !slices.Contains(only, n) })
	}
	resp := &podresourcesv1.ListPodResourcesResponse{}
	for _, name := range names {
		c := &podresourcesv1.ContainerResources{Name: "c"}
		for _, d := range pods[name] {
			c.Devices = append(c.Devices, &podresourcesv1.ContainerDevices{ResourceName: d.Resource, DeviceIds: slices.Clone(d.IDs)})
		}
		resp.PodResources = append(resp.PodResources, &podresourcesv1.PodResources{Name: name, Namespace: "default", Containers: []*podresourcesv1.ContainerResources{c}})
	}
	return resp
}

// server adapts the fake to the gRPC server interface.
type server struct {
	podresourcesv1.UnimplementedPodResourcesListerServer
	f *PodResources
}

func (s server) List(ctx context.Context, in *podresourcesv1.ListPodResourcesRequest) (*podresourcesv1.ListPodResourcesResponse, error) {
	return s.f.List(ctx, in)
}

// Serve serves the fake's List on a fresh unix socket until the test ends
// and returns the socket's path.
func Serve(t testing.TB, f *PodResources) string {
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
	srv := grpc.NewServer()
	podresourcesv1.RegisterPodResourcesListerServer(srv, server{f: f})
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return sock
}
