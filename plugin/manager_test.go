package plugin

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/deviceinfo"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
	"github.com/sriov-cdi/sriov-cdi/sysfs/sysfstest"
)

const twoPools = `
resourcePrefix: example.com
pools:
  - name: vf-a
    mode: kernel
    selectors: {rootDevices: ["0000:01:00.0"]}
  - name: vf-b
    mode: kernel
    selectors: {rootDevices: ["0000:02:00.0"]}
`

type harness struct {
	dir, dpDir, cfgPath string
	kubelet             *fakeKubelet
	mgr                 *Manager
	cancel              context.CancelFunc
	done                chan error
}

// startHarness writes a fixture host (pfs x vfs NIC VFs), a config, a fake
// kubelet, and runs a Manager with a short rescan period.
func startHarness(t testing.TB, pfs, vfs int, cfg string, prep Preparer, log *zap.Logger, more ...func(dir string, o *Options)) *harness {
	t.Helper()
	h := &harness{dir: t.TempDir()}
	b := sysfstest.SRIOVNICHost(filepath.Join(h.dir, "host"), pfs, vfs)
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	h.dpDir = filepath.Join(h.dir, "dp")
	if err := os.MkdirAll(h.dpDir, 0o755); err != nil {
		t.Fatal(err)
	}
	h.cfgPath = filepath.Join(h.dir, "cfg", "config.yaml")
	writeConfig(t, h.cfgPath, cfg)
	h.kubelet = startFakeKubelet(t, h.dpDir)
	mgr, err := newManagerWith(h.dir, Options{
		ConfigPath: h.cfgPath, Root: sysfs.Root{Sys: b.Sys(), Dev: b.Dev()}, DevicePluginDir: h.dpDir,
		RescanInterval: 50 * time.Millisecond, Prepare: prep, Log: log,
		DeviceInfo: &deviceinfo.Writer{Dir: filepath.Join(h.dir, "devinfo")},
	}, more...)
	if err != nil {
		t.Fatal(err)
	}
	h.mgr = mgr
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- mgr.Run(ctx) }()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	if h.cancel != nil {
		h.cancel()
		<-h.done
		h.cancel = nil
	}
}

func newManagerWith(dir string, o Options, more ...func(dir string, o *Options)) (*Manager, error) {
	for _, f := range more {
		f(dir, &o)
	}
	return NewManager(o)
}

// waitRegistrations waits until the manager counted n successful
// registrations (the fake kubelet records a Register before the plugin
// reads the answer).
func (h *harness) waitRegistrations(t testing.TB, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); h.mgr.Registrations() < int64(n); {
		if time.Now().After(deadline) {
			t.Fatalf("manager counted %d registrations, want %d", h.mgr.Registrations(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// writeConfig replaces the config the way a ConfigMap update does: a new
// file renamed over the old one.
func writeConfig(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// registrations collects n registrations keyed by resource.
func (h *harness) registrations(t testing.TB, n int) map[string]*pluginapi.RegisterRequest {
	t.Helper()
	out := map[string]*pluginapi.RegisterRequest{}
	for range n {
		r := h.kubelet.waitRegister(t, 5*time.Second)
		out[r.ResourceName] = r
	}
	return out
}

func ids(devs []*pluginapi.Device) []string {
	var out []string
	for _, d := range devs {
		out = append(out, d.ID+" "+d.Health)
	}
	sort.Strings(out)
	return out
}

func recvList(t testing.TB, s pluginapi.DevicePlugin_ListAndWatchClient) []*pluginapi.Device {
	t.Helper()
	type res struct {
		r   *pluginapi.ListAndWatchResponse
		err error
	}
	ch := make(chan res, 1)
	go func() { r, err := s.Recv(); ch <- res{r, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("ListAndWatch: %v", r.err)
		}
		return r.r.Devices
	case <-time.After(5 * time.Second):
		t.Fatal("no ListAndWatch update within 5s")
		return nil
	}
}

// waitList reads lists until one equals want (5 s at most).
func waitList(t testing.TB, s pluginapi.DevicePlugin_ListAndWatchClient, want []string) {
	t.Helper()
	var got []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if got = ids(recvList(t, s)); cmp.Equal(want, got) {
			return
		}
	}
	t.Fatalf("list never became %v; last %v", want, got)
}

func TestRegisterListAndWatchUpdates(t *testing.T) {
	h := startHarness(t, 2, 4, twoPools, nil, zaptest.NewLogger(t))
	regs := h.registrations(t, 2)
	for _, res := range []string{"example.com/vf-a", "example.com/vf-b"} {
		r := regs[res]
		if r == nil {
			t.Fatalf("no registration for %s: %v", res, regs)
		}
		if r.Version != pluginapi.Version || !r.Options.GetPreferredAllocationAvailable || !strings.HasPrefix(r.Endpoint, "sriov-cdi-") {
			t.Errorf("registration %+v", r)
		}
	}
	c := h.kubelet.client(t, regs["example.com/vf-a"])
	stream, err := c.ListAndWatch(context.Background(), &pluginapi.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	first := recvList(t, stream)
	want := []string{"0000:01:00.1 Healthy", "0000:01:00.2 Healthy", "0000:01:00.3 Healthy", "0000:01:00.4 Healthy"}
	if diff := cmp.Diff(want, ids(first)); diff != "" {
		t.Fatalf("initial list (-want +got)\n%s", diff)
	}
	if first[0].Topology == nil || first[0].Topology.Nodes[0].ID != 0 {
		t.Errorf("topology = %v, want NUMA node 0", first[0].Topology)
	}
	// The kernel removes two VFs (sriov_numvfs 4 -> 2). A rescan may catch
	// the removal half-way (a VF unbound before it goes), as on a real
	// host; the list must settle on the final state.
	if err := sysfstest.SetNumVFs(filepath.Join(h.dir, "host"), "0000:01:00.0", 2); err != nil {
		t.Fatal(err)
	}
	waitList(t, stream, []string{"0000:01:00.1 Healthy", "0000:01:00.2 Healthy"})
	// Someone unbinds a VF's driver: reported Unhealthy, not hidden.
	if err := sysfstest.SetDriver(filepath.Join(h.dir, "host"), "0000:01:00.2", ""); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"0000:01:00.1 Healthy", "0000:01:00.2 Unhealthy"}, ids(recvList(t, stream))); diff != "" {
		t.Fatalf("after unbind (-want +got)\n%s", diff)
	}
	// Shutdown: an empty list, then the stream ends and the socket goes.
	h.stop()
	if got := recvList(t, stream); len(got) != 0 {
		t.Errorf("final list = %v, want empty", ids(got))
	}
	if _, err := os.Stat(filepath.Join(h.dpDir, regs["example.com/vf-a"].Endpoint)); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}

func TestReregisterAfterKubeletRestarts(t *testing.T) {
	h := startHarness(t, 1, 2, `pools: [{name: vf, selectors: {rootDevices: ["0000:01:00.0"]}}]`, nil, zap.NewNop())
	h.registrations(t, 1)
	h.waitRegistrations(t, 1)
	const restarts = 50
	var worst time.Duration
	for i := range restarts {
		created := h.kubelet.restart(t)
		r := h.kubelet.waitRegister(t, 5*time.Second)
		if r.ResourceName != "sriov-cdi.io/vf" {
			t.Fatalf("restart %d: registered %q", i, r.ResourceName)
		}
		worst = max(worst, time.Since(created))
		// Wait for the plugin to see the answer before the next restart.
		h.waitRegistrations(t, i+2)
		// The new socket really serves.
		c := h.kubelet.client(t, r)
		if _, err := c.GetDevicePluginOptions(context.Background(), &pluginapi.Empty{}); err != nil {
			t.Fatalf("restart %d: plugin not serving: %v", i, err)
		}
	}
	if got := h.mgr.Registrations(); got != restarts+1 {
		t.Errorf("registrations = %d, want %d", got, restarts+1)
	}
	t.Logf("worst kubelet.sock creation -> Register over %d restarts: %v", restarts, worst)
}

func TestStartsBeforeKubelet(t *testing.T) {
	h := startHarness(t, 1, 1, `pools: [{name: vf, selectors: {rootDevices: ["0000:01:00.0"]}}]`, nil, zap.NewNop())
	h.registrations(t, 1)
	// Kubelet goes away; the plugin keeps running; kubelet comes back.
	h.kubelet.stop()
	os.Remove(filepath.Join(h.dpDir, KubeletSocketName))
	time.Sleep(150 * time.Millisecond) // a few failed rescans/registrations
	h.kubelet.restart(t)
	h.kubelet.waitRegister(t, 5*time.Second)
}

func TestConfigReload(t *testing.T) {
	h := startHarness(t, 2, 2, twoPools, nil, zaptest.NewLogger(t))
	regs := h.registrations(t, 2)
	streamA, err := h.kubelet.client(t, regs["example.com/vf-a"]).ListAndWatch(context.Background(), &pluginapi.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	recvList(t, streamA)
	streamB, err := h.kubelet.client(t, regs["example.com/vf-b"]).ListAndWatch(context.Background(), &pluginapi.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	recvList(t, streamB)

	// A bad config is rejected; both pools keep serving.
	writeConfig(t, h.cfgPath, "pools: [{name: vf-a, mode: bogus}]")
	time.Sleep(200 * time.Millisecond)
	if !h.mgr.Ready() {
		t.Fatal("not ready after a rejected config")
	}
	// A good config drops vf-b and adds vf-c; vf-a is unchanged.
	writeConfig(t, h.cfgPath, `
resourcePrefix: example.com
pools:
  - name: vf-a
    mode: kernel
    selectors: {rootDevices: ["0000:01:00.0"]}
  - name: vf-c
    mode: kernel
    selectors: {pciAddresses: ["0000:02:00.1"]}
`)
	if r := h.kubelet.waitRegister(t, 5*time.Second); r.ResourceName != "example.com/vf-c" {
		t.Fatalf("registered %q, want example.com/vf-c", r.ResourceName)
	}
	if got := recvList(t, streamB); len(got) != 0 {
		t.Errorf("removed pool sent %v, want an empty list", ids(got))
	}
	// vf-a's stream saw no blip: nothing new arrives on it.
	got := make(chan struct{})
	go func() { streamA.Recv(); close(got) }()
	select {
	case <-got:
		t.Error("unchanged pool vf-a sent a new list on reload")
	case <-time.After(300 * time.Millisecond):
	}
}

func TestAllocateResponses(t *testing.T) {
	cfg := `
resourcePrefix: example.com
pools:
  - name: vf-a
    mode: vfio
    deviceNodes: true
    cdiAnnotations: true
    selectors: {rootDevices: ["0000:01:00.0"]}
  - name: vf-b
    mode: kernel
    selectors: {rootDevices: ["0000:02:00.0"]}
`
	h := startHarness(t, 2, 2, cfg, nil, zaptest.NewLogger(t))
	regs := h.registrations(t, 2)
	a := h.kubelet.client(t, regs["example.com/vf-a"])
	b := h.kubelet.client(t, regs["example.com/vf-b"])
	ctx := context.Background()

	ra, err := a.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"0000:01:00.2", "0000:01:00.1"}}}})
	if err != nil {
		t.Fatal(err)
	}
	rb, err := b.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"0000:02:00.1"}}}})
	if err != nil {
		t.Fatal(err)
	}
	ca, cb := ra.ContainerResponses[0], rb.ContainerResponses[0]
	var cdiNames []string
	for _, d := range append(ca.CdiDevices, cb.CdiDevices...) {
		cdiNames = append(cdiNames, d.Name)
	}
	if diff := cmp.Diff([]string{"example.com/vf-a=0000:01:00.2", "example.com/vf-a=0000:01:00.1", "example.com/vf-b=0000:02:00.1"}, cdiNames); diff != "" {
		t.Errorf("CDI devices (-want +got)\n%s", diff)
	}
	// One container with devices of two pools: kubelet merges the two
	// answers; no variable of one overwrites the other's.
	merged := map[string]string{}
	for _, envs := range []map[string]string{ca.Envs, cb.Envs} {
		for k, v := range envs {
			if old, dup := merged[k]; dup {
				t.Errorf("env %s set by both pools (%q, %q)", k, old, v)
			}
			merged[k] = v
		}
	}
	// '-' stays: KubeVirt computes PCI_RESOURCE_<name> by replacing only
	// '.' and '/'.
	wantEnv := map[string]string{
		"PCIDEVICE_EXAMPLE_COM_VF-A":    "0000:01:00.2,0000:01:00.1",
		"PCI_RESOURCE_EXAMPLE_COM_VF-A": "0000:01:00.2,0000:01:00.1",
		"PCIDEVICE_EXAMPLE_COM_VF-B":    "0000:02:00.1",
		"PCI_RESOURCE_EXAMPLE_COM_VF-B": "0000:02:00.1",
	}
	if diff := cmp.Diff(wantEnv, merged); diff != "" {
		t.Errorf("env (-want +got)\n%s", diff)
	}
	var nodes []string
	for _, d := range ca.Devices {
		nodes = append(nodes, d.ContainerPath)
	}
	if diff := cmp.Diff([]string{"/dev/vfio/vfio", "/dev/vfio/4", "/dev/vfio/5"}, nodes); diff != "" {
		t.Errorf("vfio device nodes (-want +got)\n%s", diff)
	}
	if len(cb.Devices) != 0 || len(cb.Annotations) != 0 {
		t.Errorf("kernel pool without deviceNodes/cdiAnnotations returned %v %v", cb.Devices, cb.Annotations)
	}
	if diff := cmp.Diff(map[string]string{"cdi.k8s.io/sriov-cdi_vf-a_0000-01-00.2": "example.com/vf-a=0000:01:00.2,example.com/vf-a=0000:01:00.1"}, ca.Annotations); diff != "" {
		t.Errorf("annotations (-want +got)\n%s", diff)
	}

	// Multus device-info files for the network VFs handed out.
	for _, f := range []string{"example.com-vf-a-0000:01:00.1-device.json", "example.com-vf-a-0000:01:00.2-device.json", "example.com-vf-b-0000:02:00.1-device.json"} {
		if _, err := os.Stat(filepath.Join(h.dir, "devinfo", f)); err != nil {
			t.Errorf("device-info file: %v", err)
		}
	}

	// Errors name the device.
	_, err = a.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"0000:09:00.1"}}}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `unknown device "0000:09:00.1"`) {
		t.Errorf("unknown device: %v", err)
	}
	if err := sysfstest.SetDriver(filepath.Join(h.dir, "host"), "0000:02:00.2", ""); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err = b.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"0000:02:00.2"}}}})
		if err != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), `device "0000:02:00.2" is unhealthy: no driver bound`) {
		t.Errorf("unhealthy device: %v", err)
	}
	// A VF that goes away loses its device-info file.
	if err := sysfstest.SetNumVFs(filepath.Join(h.dir, "host"), "0000:01:00.0", 1); err != nil {
		t.Fatal(err)
	}
	gone := filepath.Join(h.dir, "devinfo", "example.com-vf-a-0000:01:00.2-device.json")
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(gone); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("device-info file of a removed VF still there")
		}
	}
	if _, err := os.Stat(filepath.Join(h.dir, "devinfo", "example.com-vf-a-0000:01:00.1-device.json")); err != nil {
		t.Errorf("device-info file of a remaining VF: %v", err)
	}
}

func TestGetPreferredAllocation(t *testing.T) {
	h := startHarness(t, 2, 4, `pools: [{name: vf, allocationPolicy: spread, selectors: {vendors: ["8086"], devices: ["154c"]}}]`, nil, zap.NewNop())
	regs := h.registrations(t, 1)
	c := h.kubelet.client(t, regs["sriov-cdi.io/vf"])
	avail := []string{"0000:01:00.1", "0000:01:00.2", "0000:01:00.3", "0000:02:00.1", "0000:02:00.2"}
	resp, err := c.GetPreferredAllocation(context.Background(), &pluginapi.PreferredAllocationRequest{ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{
		{AvailableDeviceIDs: avail, MustIncludeDeviceIDs: []string{"0000:02:00.2"}, AllocationSize: 2},
	}})
	if err != nil {
		t.Fatal(err)
	}
	// PF 1 is on NUMA node 1 in the fixture, PF 0 on node 0: the
	// must-include unit pulls the rest to node 1.
	if diff := cmp.Diff([]string{"0000:02:00.2", "0000:02:00.1"}, resp.ContainerResponses[0].DeviceIDs); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
}

// overlapDetector is a Preparer that fails the test if two Allocates
// prepare the same unit at once.
type overlapDetector struct {
	t      testing.TB
	mu     sync.Mutex
	active map[sysfs.Address]bool
	calls  atomic.Int64
}

func (o *overlapDetector) Prepare(_ context.Context, _ *config.Pool, units []pool.Unit) (func(context.Context) error, error) {
	o.calls.Add(1)
	o.mu.Lock()
	for _, u := range units {
		if o.active[u.ID] {
			o.t.Errorf("unit %s prepared by two Allocates at once", u.ID)
		}
		o.active[u.ID] = true
	}
	o.mu.Unlock()
	time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
	o.mu.Lock()
	for _, u := range units {
		delete(o.active, u.ID)
	}
	o.mu.Unlock()
	return nil, nil
}

func TestConcurrentAllocates(t *testing.T) {
	det := &overlapDetector{t: t, active: map[sysfs.Address]bool{}}
	h := startHarness(t, 2, 8, `pools: [{name: vf, mode: vfio, selectors: {devices: ["154c"]}}]`, det, zap.NewNop())
	regs := h.registrations(t, 1)
	c := h.kubelet.client(t, regs["sriov-cdi.io/vf"])
	var all []string
	for pf := 1; pf <= 2; pf++ {
		for vf := 1; vf <= 8; vf++ {
			all = append(all, fmt.Sprintf("0000:%02x:%02x.%d", pf, vf/8, vf%8))
		}
	}
	const calls = 1000
	var ok, busy atomic.Int64
	var wg sync.WaitGroup
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := all[i%len(all)]
			resp, err := c.Allocate(context.Background(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{id}}}})
			switch {
			case err == nil:
				if got := resp.ContainerResponses[0].CdiDevices[0].Name; got != "sriov-cdi.io/vf="+id {
					t.Errorf("Allocate(%s) answered %s", id, got)
				}
				ok.Add(1)
			case status.Code(err) == codes.FailedPrecondition && strings.Contains(err.Error(), "already being allocated"):
				busy.Add(1)
			default:
				t.Errorf("Allocate(%s): %v", id, err)
			}
		}()
	}
	wg.Wait()
	if ok.Load()+busy.Load() != calls || ok.Load() == 0 {
		t.Errorf("ok=%d busy=%d, want %d in all and some ok", ok.Load(), busy.Load(), calls)
	}
	if det.calls.Load() != ok.Load() {
		t.Errorf("Prepare calls = %d, successful Allocates = %d", det.calls.Load(), ok.Load())
	}
	t.Logf("%d concurrent Allocates: %d answered, %d refused as in flight", calls, ok.Load(), busy.Load())
}

func TestRelevantUevent(t *testing.T) {
	msg := func(parts ...string) []byte { return []byte(strings.Join(parts, "\x00")) }
	tests := []struct {
		name string
		in   []byte
		want bool
		addr sysfs.Address
	}{
		{"pci add", msg("add@/devices/pci0000:00/0000:00:01.0/0000:01:00.1", "ACTION=add", "SUBSYSTEM=pci"), true, "0000:01:00.1"},
		{"driver bind", msg("bind@/devices/pci0000:00/0000:00:01.0/0000:01:00.1", "ACTION=bind", "SUBSYSTEM=pci", "DRIVER=vfio-pci"), true, "0000:01:00.1"},
		{"vfio group: no function named, rescan all", msg("add@/devices/virtual/vfio/8", "ACTION=add", "SUBSYSTEM=vfio"), true, ""},
		{"netdev of a VF", msg("change@/devices/pci0000:00/0000:00:01.0/0000:01:02.3/net/ens1f0v2", "ACTION=change", "SUBSYSTEM=net"), true, "0000:01:02.3"},
		{"virtual net", msg("change@/devices/virtual/net/eth0", "ACTION=change", "SUBSYSTEM=net"), true, ""},
		{"RDMA device of a VF", msg("add@/devices/pci0000:00/0000:00:01.0/0000:3b:00.2/infiniband/mlx5_2", "ACTION=add", "SUBSYSTEM=infiniband"), true, "0000:3b:00.2"},
		{"soft-RoCE link added: no function named, rescan all", msg("add@/devices/virtual/infiniband/rxe7", "ACTION=add", "SUBSYSTEM=infiniband"), true, ""},
		{"soft-RoCE verbs node removed", msg("remove@/devices/virtual/infiniband_verbs/uverbs0", "ACTION=remove", "SUBSYSTEM=infiniband_verbs"), true, ""},
		{"block", msg("add@/devices/virtual/block/loop0", "ACTION=add", "SUBSYSTEM=block"), false, ""},
		{"libudev echo has no SUBSYSTEM= field", []byte("libudev\x00\xfe\xed"), false, ""},
		{"empty", nil, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, addr, _ := relevantUevent(tc.in)
			if got != tc.want || addr != tc.addr {
				t.Errorf("relevantUevent = %v, %q; want %v, %q", got, addr, tc.want, tc.addr)
			}
		})
	}
}

// TestRefusalsAreLoggedOnce: the DaemonSet log says why a matched function
// is not offered, once, not at every rescan.
func TestRefusalsAreLoggedOnce(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel) // a PF with VFs is logged at info
	h := startHarness(t, 1, 2, `pools: [{name: vf, mode: vfio, selectors: {rootDevices: ["0000:01:00.0"]}}]`, nil, zap.New(core))
	h.registrations(t, 1)
	time.Sleep(300 * time.Millisecond) // several rescans
	var got []string
	for _, e := range logs.FilterMessage("device refused").All() {
		f := e.ContextMap()
		got = append(got, fmt.Sprint(f["device"], " ", f["pool"], " ", f["reason"]))
	}
	want := []string{"0000:01:00.0 vf PF with 2 VFs enabled; its VFs are the candidates"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
}
