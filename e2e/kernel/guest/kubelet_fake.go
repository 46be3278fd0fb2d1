package main

// A stand-in for kubelet's device manager. No kubelet runs in the guest (the
// lab is a bare kernel + busybox), so this fake serves the v1beta1
// Registration service on <dir>/kubelet.sock and drives each plugin that
// registers through the DevicePlugin API the way kubelet does:
// GetDevicePluginOptions, a long-lived ListAndWatch, Allocate. The real
// kubelet is exercised by the e2e-kubelet lab; here the point is the kernel.

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

type fakeKubelet struct {
	pluginapi.UnimplementedRegistrationServer

	dir string
	srv *grpc.Server
	t   *T

	mu      sync.Mutex
	eps     map[string]*endpoint // by resource name
	changed chan struct{}        // closed and replaced on every registration
	podRes  *fakePodResources    // nil unless the env serves PodResources
}

var _ pluginapi.RegistrationServer = (*fakeKubelet)(nil)

func startFakeKubelet(t *T, dir string) (*fakeKubelet, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "kubelet.sock")
	_ = os.Remove(sock)
	lis, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", sock, err)
	}
	k := &fakeKubelet{dir: dir, srv: grpc.NewServer(), t: t, eps: map[string]*endpoint{}, changed: make(chan struct{})}
	pluginapi.RegisterRegistrationServer(k.srv, k)
	go func() { _ = k.srv.Serve(lis) }()
	return k, nil
}

func (k *fakeKubelet) stop() {
	k.srv.Stop()
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.podRes != nil {
		k.podRes.stop()
	}
	for _, ep := range k.eps {
		ep.close()
	}
}

// Register is kubelet's side of plugin registration. Like kubelet it checks
// the version and dials the plugin's endpoint before answering.
func (k *fakeKubelet) Register(ctx context.Context, r *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	k.logf("kubelet: Register version=%s endpoint=%s resource=%s options=%v", r.Version, r.Endpoint, r.ResourceName, r.Options)
	if r.Version != pluginapi.Version {
		return nil, fmt.Errorf("unsupported version %q", r.Version)
	}
	if strings.Contains(r.Endpoint, "/") {
		return nil, fmt.Errorf("endpoint %q must be a bare socket name in %s", r.Endpoint, k.dir)
	}
	ep, err := dialEndpoint(k, r.ResourceName, filepath.Join(k.dir, r.Endpoint))
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	if old := k.eps[r.ResourceName]; old != nil {
		old.close()
	}
	k.eps[r.ResourceName] = ep
	close(k.changed)
	k.changed = make(chan struct{})
	k.mu.Unlock()
	return &pluginapi.Empty{}, nil
}

// registrations returns the registered resource names.
func (k *fakeKubelet) registrations() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for r := range k.eps {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

// waitEndpoint waits until resource registers (again, if after is non-nil
// and is the current endpoint).
func (k *fakeKubelet) waitEndpoint(resource string, after *endpoint, timeout time.Duration) (*endpoint, error) {
	deadline := time.After(timeout)
	for {
		k.mu.Lock()
		ep, ch := k.eps[resource], k.changed
		k.mu.Unlock()
		if ep != nil && ep != after {
			return ep, nil
		}
		select {
		case <-ch:
		case <-deadline:
			return nil, fmt.Errorf("resource %q did not register within %s (registered: %v)", resource, timeout, k.registrations())
		}
	}
}

// endpoint is kubelet's connection to one registered plugin resource.
type endpoint struct {
	k        *fakeKubelet
	resource string
	socket   string
	conn     *grpc.ClientConn
	client   pluginapi.DevicePluginClient
	options  *pluginapi.DevicePluginOptions
	cancel   context.CancelFunc

	mu      sync.Mutex
	updates []lwUpdate
	lwErr   error
	changed chan struct{}
}

type lwUpdate struct {
	at      time.Time
	devices []*pluginapi.Device
}

func (k *fakeKubelet) logf(format string, args ...any) {
	k.mu.Lock()
	t := k.t
	k.mu.Unlock()
	t.Logf(format, args...)
}

func dialEndpoint(k *fakeKubelet, resource, socket string) (*endpoint, error) {
	logf := k.logf
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", socket, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ep := &endpoint{k: k, resource: resource, socket: socket, conn: conn, client: pluginapi.NewDevicePluginClient(conn), cancel: cancel, changed: make(chan struct{})}
	octx, ocancel := context.WithTimeout(ctx, 10*time.Second)
	defer ocancel()
	ep.options, err = ep.client.GetDevicePluginOptions(octx, &pluginapi.Empty{})
	if err != nil {
		cancel()
		conn.Close()
		return nil, fmt.Errorf("GetDevicePluginOptions on %s: %w", socket, err)
	}
	stream, err := ep.client.ListAndWatch(ctx, &pluginapi.Empty{})
	if err != nil {
		cancel()
		conn.Close()
		return nil, fmt.Errorf("ListAndWatch on %s: %w", socket, err)
	}
	go func() {
		for {
			r, err := stream.Recv()
			ep.mu.Lock()
			if err != nil {
				ep.lwErr = err
			} else {
				ep.updates = append(ep.updates, lwUpdate{at: time.Now(), devices: r.Devices})
			}
			close(ep.changed)
			ep.changed = make(chan struct{})
			ep.mu.Unlock()
			if err != nil {
				return
			}
			logf("kubelet: ListAndWatch %s: %s", resource, fmtDevices(r.Devices))
		}
	}()
	return ep, nil
}

func (ep *endpoint) close() {
	ep.cancel()
	ep.conn.Close()
}

func fmtDevices(devs []*pluginapi.Device) string {
	var parts []string
	for _, d := range devs {
		s := d.ID + "=" + d.Health
		if d.Topology != nil && len(d.Topology.Nodes) > 0 {
			s += fmt.Sprintf("@numa%d", d.Topology.Nodes[0].ID)
		}
		parts = append(parts, s)
	}
	return fmt.Sprintf("%d devices [%s]", len(devs), strings.Join(parts, " "))
}

// waitDevices waits for a ListAndWatch update received at or after since for
// which cond holds, and returns it.
func (ep *endpoint) waitDevices(since time.Time, timeout time.Duration, cond func([]*pluginapi.Device) bool) (lwUpdate, error) {
	deadline := time.After(timeout)
	seen := 0
	for {
		ep.mu.Lock()
		ups, lwErr, ch := ep.updates, ep.lwErr, ep.changed
		ep.mu.Unlock()
		for ; seen < len(ups); seen++ {
			u := ups[seen]
			if !u.at.Before(since) && cond(u.devices) {
				return u, nil
			}
		}
		// The latest list still counts if it arrived before since: the
		// plugin sends only changes.
		if len(ups) > 0 && ups[len(ups)-1].at.Before(since) && cond(ups[len(ups)-1].devices) {
			return ups[len(ups)-1], nil
		}
		if lwErr != nil {
			return lwUpdate{}, fmt.Errorf("ListAndWatch %s ended: %w", ep.resource, lwErr)
		}
		select {
		case <-ch:
		case <-deadline:
			last := "none"
			if len(ups) > 0 {
				last = fmtDevices(ups[len(ups)-1].devices)
			}
			return lwUpdate{}, fmt.Errorf("ListAndWatch %s: no matching update within %s (last: %s)", ep.resource, timeout, last)
		}
	}
}

// received reports whether ListAndWatch sent at least one list.
func (ep *endpoint) received() bool {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	return len(ep.updates) > 0
}

func (ep *endpoint) latest() []*pluginapi.Device {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if len(ep.updates) == 0 {
		return nil
	}
	return ep.updates[len(ep.updates)-1].devices
}

// allocate is kubelet's Allocate call for one container.
func (ep *endpoint) allocate(ids []string, timeout time.Duration) (*pluginapi.ContainerAllocateResponse, time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	resp, err := ep.client.Allocate(ctx, &pluginapi.AllocateRequest{
		ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: ids}},
	})
	d := time.Since(start)
	if err != nil {
		return nil, d, err
	}
	if len(resp.ContainerResponses) != 1 {
		return nil, d, fmt.Errorf("allocate %v: %d container responses, want 1", ids, len(resp.ContainerResponses))
	}
	// Like kubelet, record the assignment (PodResources lists it).
	ep.k.mu.Lock()
	pr := ep.k.podRes
	ep.k.mu.Unlock()
	if pr != nil {
		pr.assign(ep.resource, ids...)
	}
	return resp.ContainerResponses[0], d, nil
}

func healthyIDs(devs []*pluginapi.Device) []string {
	var out []string
	for _, d := range devs {
		if d.Health == pluginapi.Healthy {
			out = append(out, d.ID)
		}
	}
	sort.Strings(out)
	return out
}

func allIDs(devs []*pluginapi.Device) []string {
	var out []string
	for _, d := range devs {
		out = append(out, d.ID)
	}
	sort.Strings(out)
	return out
}
