package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	rspec "github.com/opencontainers/runtime-spec/specs-go"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	cdilib "tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/sriov-cdi/sriov-cdi/core/deviceinfo"
	"github.com/sriov-cdi/sriov-cdi/plugin/kubelettest"
)

// vhostEnv: a vhost-user pool of 3 slots (base directory base) served by
// the plugin with the real CDI writer, a fake kubelet and a scripted
// PodResources.
type vhostEnv struct {
	h      *harness
	base   string
	cdiDir string
	kl     *kubelettest.PodResources
	c      pluginapi.DevicePluginClient
	now    time.Time
}

const vhostRes = "example.com/vhu"

func startVhost(t *testing.T, base string, more ...func(dir string, o *Options)) *vhostEnv {
	t.Helper()
	log := zaptest.NewLogger(t)
	e := &vhostEnv{base: base, kl: kubelettest.New(), now: time.Now()}
	cfg := `
resourcePrefix: example.com
pools:
  - name: vhu
    mode: vhost-user
    vhostUser: {count: 3, baseDir: ` + base + `, containerPath: /var/run/vhu, permissions: "0750", numaNode: 1}
`
	opts := append([]func(string, *Options){func(dir string, o *Options) {
		o.Specs, e.cdiDir = specsIn(t, dir, o.Root, log)
		o.PodResources = e.kl
	}}, more...)
	e.h = startHarness(t, 1, 1, cfg, nil, log, opts...)
	regs := e.h.registrations(t, 1)
	e.c = e.h.kubelet.client(t, regs[vhostRes])
	return e
}

func (e *vhostEnv) allocate(t *testing.T, ids ...[]string) (*pluginapi.AllocateResponse, error) {
	t.Helper()
	req := &pluginapi.AllocateRequest{}
	for _, c := range ids {
		req.ContainerRequests = append(req.ContainerRequests, &pluginapi.ContainerAllocateRequest{DevicesIds: c})
	}
	return e.c.Allocate(context.Background(), req)
}

func (e *vhostEnv) dir(slot string) string { return filepath.Join(e.base, "sriov-cdi.vhu."+slot) }

func (e *vhostEnv) poll(t *testing.T, d time.Duration) {
	t.Helper()
	e.now = e.now.Add(d)
	if err := e.h.mgr.pollReleases(context.Background(), e.kl, func() time.Time { return e.now }); err != nil {
		t.Fatal(err)
	}
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// listen makes a real unix socket at p, as the container's application
// does, and leaves it there.
func listen(t *testing.T, p string) {
	t.Helper()
	l, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
}

// Allocate of a slot makes its own directory, and the CDI device kubelet
// is told about mounts exactly that directory when the real CDI library
// injects it from the spec the plugin wrote; the device-info file and the
// env name the socket. A second slot is another directory.
func TestVhostUserAllocate(t *testing.T) {
	e := startVhost(t, t.TempDir())
	stream, err := e.c.ListAndWatch(context.Background(), &pluginapi.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	devs := recvList(t, stream)
	if diff := cmp.Diff([]string{"slot-0 Healthy", "slot-1 Healthy", "slot-2 Healthy"}, ids(devs)); diff != "" {
		t.Errorf("advertised (-want +got):\n%s", diff)
	}
	for _, d := range devs {
		if d.Topology == nil || len(d.Topology.Nodes) != 1 || d.Topology.Nodes[0].ID != 1 {
			t.Errorf("%s: topology %v, want NUMA node 1", d.ID, d.Topology)
		}
	}
	if exists(e.dir("slot-1")) {
		t.Fatal("a directory exists before Allocate")
	}

	resp, err := e.allocate(t, []string{"slot-1"}, []string{"slot-2"})
	if err != nil {
		t.Fatal(err)
	}
	for i, slot := range []string{"slot-1", "slot-2"} {
		cr := resp.ContainerResponses[i]
		if len(cr.CdiDevices) != 1 || cr.CdiDevices[0].Name != vhostRes+"="+slot {
			t.Errorf("container %d: CDI devices %v", i, cr.CdiDevices)
		}
		wantEnv := map[string]string{"SRIOV_CDI_VHOSTUSER_EXAMPLE_COM_VHU": "/var/run/vhu/" + slot + "/vhost.sock"}
		if diff := cmp.Diff(wantEnv, cr.Envs); diff != "" {
			t.Errorf("container %d env (-want +got):\n%s", i, diff)
		}
		if len(cr.Mounts) != 0 || len(cr.Devices) != 0 {
			t.Errorf("container %d: mounts %v devices %v; the directory must come from the CDI spec only", i, cr.Mounts, cr.Devices)
		}
		fi, err := os.Lstat(e.dir(slot))
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o750 {
			t.Errorf("%s: %v, %v; want a directory with mode 0750", slot, fi, err)
		}
		b, err := os.ReadFile(filepath.Join(e.h.dir, "devinfo", "example.com-vhu-"+slot+"-device.json"))
		if err != nil {
			t.Fatal(err)
		}
		var info deviceinfo.Info
		if err := json.Unmarshal(b, &info); err != nil {
			t.Fatal(err)
		}
		want := deviceinfo.Info{Type: "vhost-user", Version: "1.1.0", VhostUser: &deviceinfo.VhostUser{Mode: "server", Path: "/var/run/vhu/" + slot + "/vhost.sock"}}
		if diff := cmp.Diff(want, info); diff != "" {
			t.Errorf("%s device-info (-want +got):\n%s", slot, diff)
		}
	}

	// The runtime's view: the CDI library injects the names from the
	// Allocate answer into an OCI spec.
	cache, err := cdilib.NewCache(cdilib.WithSpecDirs(e.cdiDir), cdilib.WithAutoRefresh(false))
	if err != nil {
		t.Fatal(err)
	}
	oci := &rspec.Spec{Process: &rspec.Process{}, Linux: &rspec.Linux{}}
	if _, err := cache.InjectDevices(oci, resp.ContainerResponses[0].CdiDevices[0].Name); err != nil {
		t.Fatal(err)
	}
	if len(oci.Mounts) != 1 || oci.Mounts[0].Source != e.dir("slot-1") || oci.Mounts[0].Destination != "/var/run/vhu/slot-1" {
		t.Fatalf("injected mounts %+v; want %s at /var/run/vhu/slot-1", oci.Mounts, e.dir("slot-1"))
	}
	if diff := cmp.Diff([]string{"SRIOV_CDI_VHOSTUSER_EXAMPLE_COM_VHU_SLOT_1=/var/run/vhu/slot-1/vhost.sock"}, oci.Process.Env); diff != "" {
		t.Errorf("injected env (-want +got):\n%s", diff)
	}

	// The pod's application makes its socket; slot-2's directory does not
	// show it.
	listen(t, filepath.Join(oci.Mounts[0].Source, "vhost.sock"))
	if exists(filepath.Join(e.dir("slot-2"), "vhost.sock")) {
		t.Error("slot-2 sees slot-1's socket")
	}
	// kubelet hands slot-1 to a new pod (the first released it before
	// the plugin noticed): the directory starts empty.
	if _, err := e.allocate(t, []string{"slot-1"}); err != nil {
		t.Fatal(err)
	}
	if exists(filepath.Join(e.dir("slot-1"), "vhost.sock")) {
		t.Error("a new allocation of slot-1 sees the earlier pod's socket")
	}
}

// Released slots lose their directory (and device-info file) under the
// release rule; held ones keep theirs.
func TestVhostUserRelease(t *testing.T) {
	e := startVhost(t, t.TempDir())
	if _, err := e.allocate(t, []string{"slot-0", "slot-2"}); err != nil {
		t.Fatal(err)
	}
	listen(t, filepath.Join(e.dir("slot-0"), "vhost.sock"))
	listen(t, filepath.Join(e.dir("slot-2"), "vhost.sock"))
	e.kl.SetPod("a", kubelettest.Device{Resource: vhostRes, IDs: []string{"slot-0"}})
	e.poll(t, 0)
	if !exists(e.dir("slot-0")) || !exists(e.dir("slot-2")) {
		t.Fatal("a directory was removed within the grace period")
	}
	for range 8 {
		e.poll(t, 30*time.Second)
	}
	if !exists(filepath.Join(e.dir("slot-0"), "vhost.sock")) {
		t.Error("the held slot lost its socket")
	}
	if exists(e.dir("slot-2")) {
		t.Error("the released slot's directory is still there")
	}
	if exists(filepath.Join(e.h.dir, "devinfo", "example.com-vhu-slot-2-device.json")) {
		t.Error("the released slot's device-info file is still there")
	}
	if !exists(filepath.Join(e.h.dir, "devinfo", "example.com-vhu-slot-0-device.json")) {
		t.Error("the held slot lost its device-info file")
	}
	// The pod goes: so does its directory.
	e.kl.DeletePod("a")
	for range 8 {
		e.poll(t, 30*time.Second)
	}
	if exists(e.dir("slot-0")) {
		t.Error("slot-0's directory outlived its pod")
	}
}

// After a restart: a directory of a slot beyond the pool's count goes at
// start unless kubelet lists it; directories of the pool's slots stay
// until the release rule says they were released; foreign files stay.
func TestVhostUserReconcileAtStart(t *testing.T) {
	base := t.TempDir()
	for _, d := range []string{"sriov-cdi.vhu.slot-0", "sriov-cdi.vhu.slot-1", "sriov-cdi.vhu.slot-5", "sriov-cdi.vhu.slot-7", "ovs-dpdk-port", "sriov-cdi.other.slot-0"} {
		if err := os.Mkdir(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	kl := kubelettest.New()
	kl.SetPod("old", kubelettest.Device{Resource: vhostRes, IDs: []string{"slot-1", "slot-7"}})
	e := startVhost(t, base, func(_ string, o *Options) { o.PodResources = kl })
	e.kl = kl
	var left []string
	entries, _ := os.ReadDir(base)
	for _, en := range entries {
		left = append(left, en.Name())
	}
	want := []string{"ovs-dpdk-port", "sriov-cdi.other.slot-0", "sriov-cdi.vhu.slot-0", "sriov-cdi.vhu.slot-1", "sriov-cdi.vhu.slot-7"}
	if diff := cmp.Diff(want, left); diff != "" {
		t.Errorf("after start (-want +got):\n%s", diff)
	}
	// Old directories look old to the release rule: move the clock past
	// the grace; slot-0 (no pod) goes, slot-1 (held) stays.
	for range 10 {
		e.poll(t, 30*time.Second)
	}
	if exists(e.dir("slot-0")) || !exists(e.dir("slot-1")) {
		t.Errorf("after the release rule: slot-0 kept=%v (want false), slot-1 kept=%v (want true)", exists(e.dir("slot-0")), exists(e.dir("slot-1")))
	}
}

// A missing base directory: Allocate fails saying so and creates nothing.
func TestVhostUserBaseMissing(t *testing.T) {
	base := filepath.Join(t.TempDir(), "missing")
	e := startVhost(t, base)
	_, err := e.allocate(t, []string{"slot-0"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), base+`" does not exist: create it`) {
		t.Fatalf("Allocate: %v; want FailedPrecondition naming the missing base", err)
	}
	if _, serr := os.Lstat(base); !errors.Is(serr, os.ErrNotExist) {
		t.Error("the base directory was created")
	}
	// Once it exists, Allocate works.
	if err := os.Mkdir(base, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := e.allocate(t, []string{"slot-0"}); err != nil {
		t.Fatal(err)
	}
	if !exists(e.dir("slot-0")) {
		t.Error("no directory after the base appeared")
	}
}
