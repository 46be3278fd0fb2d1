package main

// kubelet's PodResources API (v1 List) for the fake kubelet: the plugin's
// release watcher and device-info cleanup ask it which devices containers
// still hold. The fake answers from what the scenarios say: a device is
// assigned after assign (done on every successful Allocate, as kubelet
// records an assignment) until release (the pod is gone).

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

type fakePodResources struct {
	podresourcesv1.UnimplementedPodResourcesListerServer

	srv      *grpc.Server
	mu       sync.Mutex
	assigned map[string]map[string]bool // resource -> device ID
	lists    int
	lastList time.Time
}

// withPodResources makes the env's fake kubelet serve PodResources and the
// plugin use it (and write device-info files). Call before start.
func (e *pluginEnv) withPodResources() error {
	e.podResSock = filepath.Join(e.dir, "pod-resources", "kubelet.sock")
	e.deviceInfoDir = filepath.Join(e.dir, "devinfo")
	for _, d := range []string{filepath.Dir(e.podResSock), e.deviceInfoDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	_ = os.Remove(e.podResSock)
	lis, err := net.Listen("unix", e.podResSock)
	if err != nil {
		return fmt.Errorf("listen %s: %w", e.podResSock, err)
	}
	pr := &fakePodResources{srv: grpc.NewServer(), assigned: map[string]map[string]bool{}}
	podresourcesv1.RegisterPodResourcesListerServer(pr.srv, pr)
	go func() { _ = pr.srv.Serve(lis) }()
	e.kubelet.mu.Lock()
	e.kubelet.podRes = pr
	e.kubelet.mu.Unlock()
	return nil
}

func (p *fakePodResources) stop() { p.srv.Stop() }

func (p *fakePodResources) assign(resource string, ids ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.assigned[resource] == nil {
		p.assigned[resource] = map[string]bool{}
	}
	for _, id := range ids {
		p.assigned[resource][id] = true
	}
}

func (p *fakePodResources) release(resource string, ids ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range ids {
		delete(p.assigned[resource], id)
	}
}

func (p *fakePodResources) stats() (int, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lists, p.lastList
}

// List answers with one pod per assigned device (one container each).
func (p *fakePodResources) List(context.Context, *podresourcesv1.ListPodResourcesRequest) (*podresourcesv1.ListPodResourcesResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lists++
	p.lastList = time.Now()
	resp := &podresourcesv1.ListPodResourcesResponse{}
	var res []string
	for r := range p.assigned {
		res = append(res, r)
	}
	sort.Strings(res)
	for _, r := range res {
		var ids []string
		for id := range p.assigned[r] {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for i, id := range ids {
			resp.PodResources = append(resp.PodResources, &podresourcesv1.PodResources{
				Name: fmt.Sprintf("pod-%s-%d", filepath.Base(r), i), Namespace: "e2e",
				Containers: []*podresourcesv1.ContainerResources{{
					Name:    "c",
					Devices: []*podresourcesv1.ContainerDevices{{ResourceName: r, DeviceIds: []string{id}}},
				}},
			})
		}
	}
	return resp, nil
}
