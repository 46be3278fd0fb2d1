package dra

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/dynamic-resource-allocation/resourceslice"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"
	cdilib "tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/sriov-cdi/sriov-cdi/core/binding"
	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/deviceinfo"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
	"github.com/sriov-cdi/sriov-cdi/sysfs/sysfstest"
)

const driverCfg = `
resourcePrefix: example.com
pools:
  - name: vf
    api: dra
    selectors: {rootDevices: ["0000:01:00.0"]}
  - name: vfio
    api: dra
    mode: vfio
    restoreOnRelease: true
    selectors: {rootDevices: ["0000:02:00.0"]}
`

// rig is a driver started with the real kubeletplugin helper over a fake
// clientset, a fixture host whose kernel side is the fake kernel, the real
// binding manager, and kubelet's DRA gRPC client on dra.sock.
type rig struct {
	dir, cdiDir, pluginDir, regDir string
	root                           sysfs.Root
	cfg                            *config.Config
	client                         *fake.Clientset
	kernel                         *sysfstest.Kernel
	bm                             *binding.Manager
	drv                            *Driver
	kubelet                        drapb.DRAPluginClient
	cancel                         context.CancelFunc
	log                            *zap.Logger
}

func newRig(t *testing.T) *rig {
	t.Helper()
	return newRigWith(t, driverCfg)
}

// newRigWith is newRig with another config; "$DIR" in it is the rig's
// temporary directory.
func newRigWith(t *testing.T, cfg string) *rig {
	t.Helper()
	return newRigBefore(t, cfg, nil)
}

// newRigBefore is newRigWith; before runs before the driver starts (the
// fake API server's reactors).
func newRigBefore(t *testing.T, cfg string, before func(*rig)) *rig {
	t.Helper()
	r := &rig{dir: t.TempDir(), log: zaptest.NewLogger(t)}
	host := filepath.Join(r.dir, "host")
	b := sysfstest.SRIOVNICHost(host, 2, 2)
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	r.root = sysfs.Root{Sys: b.Sys(), Dev: b.Dev()}
	var err error
	if r.kernel, err = sysfstest.NewKernel(host); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.kernel.Unhang)
	if r.bm, err = binding.NewManager(r.root, filepath.Join(r.dir, "state.json"), r.log, binding.WithWriter(r.kernel),
		binding.WithTimeout(2*time.Second), binding.WithPollInterval(time.Millisecond), binding.WithFault("")); err != nil {
		t.Fatal(err)
	}
	if r.cfg, err = config.Parse("test.yaml", []byte(strings.ReplaceAll(cfg, "$DIR", r.dir))); err != nil {
		t.Fatal(err)
	}
	r.cdiDir, r.pluginDir, r.regDir = filepath.Join(r.dir, "cdi"), filepath.Join(r.dir, "plugins", "example.com"), filepath.Join(r.dir, "registry")
	// Like kubelet on a fresh node: the registry directory exists, the
	// driver's own plugin directory does not (Start makes it).
	if err := os.MkdirAll(r.regDir, 0o755); err != nil {
		t.Fatal(err)
	}
	r.client = fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1", UID: "node1-uid"}})
	if before != nil {
		before(r)
	}
	r.start(t)
	return r
}

// start starts (or restarts) the driver process part and dials dra.sock.
func (r *rig) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	drv, err := Start(ctx, Options{
		DriverName: "example.com", NodeName: "node1", Client: r.client,
		PluginDir: r.pluginDir, RegistryDir: r.regDir, CDIDir: r.cdiDir, Root: r.root,
		Binder: binding.ForClaim{M: r.bm}, Metadata: true, Log: r.log,
		DeviceInfo: &deviceinfo.Writer{Dir: filepath.Join(r.dir, "devinfo")},
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	r.drv, r.cancel = drv, cancel
	t.Cleanup(r.stop)
	r.replan(t)
	conn, err := grpc.NewClient("unix://"+filepath.Join(r.pluginDir, "dra.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	r.kubelet = drapb.NewDRAPluginClient(conn)
}

func (r *rig) stop() {
	if r.cancel != nil {
		r.drv.Stop()
		r.cancel()
		r.cancel = nil
	}
}

// replan scans the fixture and publishes, as the Manager does.
func (r *rig) replan(t *testing.T) *pool.Plan {
	t.Helper()
	h, err := sysfs.Scan(r.root)
	if err != nil {
		t.Fatal(err)
	}
	plan := pool.Build(r.cfg, h, pool.WithHeld(binding.NewHoldings(filepath.Join(r.dir, "state.json")).Held()))
	r.drv.Publish(plan, h)
	return plan
}

// published waits until the ResourceSlice controller holds the newest
// resources (a minute at most: a bound on a hang) and returns them.
func (r *rig) published(t *testing.T) *resourceslice.DriverResources {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(5 * time.Millisecond) {
		r.drv.mu.Lock()
		seq, pub, in := r.drv.seq, r.drv.pubSeq, r.drv.in
		r.drv.mu.Unlock()
		if seq > 0 && seq == pub {
			res := in.Resources()
			return &res
		}
		if time.Now().After(deadline) {
			t.Fatal("the publisher did not hand the newest resources to the controller within a minute")
		}
	}
}

// claim stores an allocated claim in the fake API server.
func (r *rig) claim(t *testing.T, name string, devices ...[2]string) *resourceapi.ResourceClaim {
	t.Helper()
	c := &resourceapi.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name)}}
	c.Status.Allocation = &resourceapi.AllocationResult{}
	for _, d := range devices {
		c.Status.Allocation.Devices.Results = append(c.Status.Allocation.Devices.Results,
			resourceapi.DeviceRequestAllocationResult{Request: "nic", Driver: "example.com", Pool: d[0], Device: d[1]})
	}
	c, err := r.client.ResourceV1().ResourceClaims("ns").Create(context.Background(), c, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (r *rig) prepare(t *testing.T, c *resourceapi.ResourceClaim) *drapb.NodePrepareResourceResponse {
	t.Helper()
	resp, err := r.kubelet.NodePrepareResources(context.Background(), &drapb.NodePrepareResourcesRequest{
		Claims: []*drapb.Claim{{Namespace: c.Namespace, Name: c.Name, Uid: string(c.UID)}}})
	if err != nil {
		t.Fatalf("NodePrepareResources: %v", err)
	}
	return resp.Claims[string(c.UID)]
}

func (r *rig) unprepare(t *testing.T, c *resourceapi.ResourceClaim) string {
	t.Helper()
	resp, err := r.kubelet.NodeUnprepareResources(context.Background(), &drapb.NodeUnprepareResourcesRequest{
		Claims: []*drapb.Claim{{Namespace: c.Namespace, Name: c.Name, Uid: string(c.UID)}}})
	if err != nil {
		t.Fatalf("NodeUnprepareResources: %v", err)
	}
	return resp.Claims[string(c.UID)].GetError()
}

// ourCDIIDs are the device IDs of a response minus the helper's metadata
// device.
func ourCDIIDs(resp *drapb.NodePrepareResourceResponse) []string {
	var out []string
	for _, d := range resp.GetDevices() {
		for _, id := range d.CdiDeviceIds {
			if !strings.Contains(id, "_metadata_") && !strings.Contains(id, "metadata") {
				out = append(out, id)
			}
		}
	}
	return out
}

func TestPrepareKernelClaimIdempotentExclusiveAndAfterRestart(t *testing.T) {
	r := newRig(t)
	c1 := r.claim(t, "c1", [2]string{"vf", "pci-0000-01-00-1"})
	resp := r.prepare(t, c1)
	if resp.GetError() != "" {
		t.Fatalf("prepare: %s", resp.GetError())
	}
	want := []string{"example.com/vf=uid-c1_0000:01:00.1"}
	if diff := cmp.Diff(want, ourCDIIDs(resp)); diff != "" {
		t.Fatalf("CDI device IDs (-want +got):\n%s", diff)
	}
	if d := resp.Devices[0]; d.PoolName != "vf" || d.DeviceName != "pci-0000-01-00-1" || d.RequestNames[0] != "nic" {
		t.Errorf("device = %+v", d)
	}
	// The runtime's view: the CDI library resolves the ID from the spec
	// directory and injects the device's variables.
	cache, err := cdilib.NewCache(cdilib.WithSpecDirs(r.cdiDir), cdilib.WithAutoRefresh(false))
	if err != nil {
		t.Fatal(err)
	}
	if errs := cache.GetErrors(); len(errs) > 0 {
		t.Fatalf("CDI spec errors: %v", errs)
	}
	dev := cache.GetDevice(want[0])
	if dev == nil {
		t.Fatalf("CDI device %s not found in %s", want[0], r.cdiDir)
	}
	if env := strings.Join(dev.GetSpec().ContainerEdits.Env, " "); !strings.Contains(env, "PCIDEVICE_EXAMPLE_COM_VF=0000:01:00.1") {
		t.Errorf("spec-wide env %q lacks PCIDEVICE_EXAMPLE_COM_VF", env)
	}
	// The helper wrote the KEP-5304 metadata file with pciBusID.
	md := findFile(t, r.pluginDir, "metadata.json")
	if b, _ := os.ReadFile(md); !strings.Contains(string(b), `"resource.kubernetes.io/pciBusID"`) || !strings.Contains(string(b), "0000:01:00.1") {
		t.Errorf("metadata file %s lacks pciBusID:\n%s", md, b)
	}

	// Idempotent: the same answer again.
	if again := r.prepare(t, c1); again.GetError() != "" || !cmp.Equal(ourCDIIDs(again), want) {
		t.Errorf("second prepare = %v / %q, want the same IDs", ourCDIIDs(again), again.GetError())
	}
	// The same device for another claim is refused, naming the holder.
	c2 := r.claim(t, "c2", [2]string{"vf", "pci-0000-01-00-1"})
	if e := r.prepare(t, c2).GetError(); !strings.Contains(e, "already prepared for claim ns/c1 (UID uid-c1)") {
		t.Errorf("conflicting prepare error = %q", e)
	}
	// A device the pool does not have.
	c3 := r.claim(t, "c3", [2]string{"vf", "pci-0000-09-00-1"})
	if e := r.prepare(t, c3).GetError(); !strings.Contains(e, "the pool has no such device now") {
		t.Errorf("unknown device error = %q", e)
	}

	// A restart: the new process unprepares from the checkpoint.
	r.stop()
	r.start(t)
	if e := r.unprepare(t, c1); e != "" {
		t.Fatalf("unprepare after restart: %s", e)
	}
	if files, _ := filepath.Glob(filepath.Join(r.cdiDir, "sriov-cdi-dra_*")); len(files) != 0 {
		t.Errorf("CDI specs left after unprepare: %v", files)
	}
	if e := r.unprepare(t, c1); e != "" {
		t.Errorf("second unprepare: %s", e)
	}
	// Now c2 may have it.
	if e := r.prepare(t, c2).GetError(); e != "" {
		t.Errorf("prepare after the first claim went: %s", e)
	}
}

func TestPrepareVFIOClaimBindsAndUnprepareRestores(t *testing.T) {
	r := newRig(t)
	c := r.claim(t, "v1", [2]string{"vfio", "pci-0000-02-00-2"})
	resp := r.prepare(t, c)
	if resp.GetError() != "" {
		t.Fatalf("prepare: %s", resp.GetError())
	}
	h, err := sysfs.Scan(r.root)
	if err != nil {
		t.Fatal(err)
	}
	if d := h.Device("0000:02:00.2"); d.Driver != "vfio-pci" {
		t.Fatalf("driver after prepare = %q, want vfio-pci", d.Driver)
	}
	spec := findFile(t, r.cdiDir, "sriov-cdi-dra_uid-v1_example.com_vfio.json")
	b, _ := os.ReadFile(spec)
	if !strings.Contains(string(b), "/vfio/") {
		t.Errorf("spec lacks the VFIO group node:\n%s", b)
	}
	cp, err := loadCheckpoint(filepath.Join(r.pluginDir, CheckpointFile))
	if err != nil {
		t.Fatal(err)
	}
	if got := cp.Claims["uid-v1"].Devices[0].Bound; !cmp.Equal(got, []sysfs.Address{"0000:02:00.2"}) {
		t.Errorf("checkpoint bound = %v", got)
	}
	// The PodResources release watcher must never restore it.
	for _, rec := range r.bm.Records() {
		if rec.Origin != binding.OriginDRA {
			t.Errorf("record %+v: origin %q, want dra", rec, rec.Origin)
		}
	}
	r.replan(t)
	if e := r.unprepare(t, c); e != "" {
		t.Fatalf("unprepare: %s", e)
	}
	h, _ = sysfs.Scan(r.root)
	if d := h.Device("0000:02:00.2"); d.Driver != "iavf" {
		t.Errorf("driver after unprepare = %q, want iavf (restoreOnRelease)", d.Driver)
	}
	if len(r.bm.Records()) != 0 {
		t.Errorf("binding records left: %+v", r.bm.Records())
	}
}

// TestPrepareFailureRollsBack: a bind that fails leaves no driver change,
// no spec and no checkpoint entry.
func TestPrepareFailureRollsBack(t *testing.T) {
	r := newRig(t)
	r.kernel.Inject(sysfstest.Fault{Attr: "drivers_probe", Device: "0000:02:00.1", Err: os.ErrPermission})
	c := r.claim(t, "f1", [2]string{"vfio", "pci-0000-02-00-1"})
	if e := r.prepare(t, c).GetError(); e == "" {
		t.Fatal("prepare succeeded, want the injected failure")
	}
	h, _ := sysfs.Scan(r.root)
	if d := h.Device("0000:02:00.1"); d.Driver != "iavf" {
		t.Errorf("driver after failed prepare = %q, want iavf", d.Driver)
	}
	if files, _ := filepath.Glob(filepath.Join(r.cdiDir, "sriov-cdi-dra_*")); len(files) != 0 {
		t.Errorf("CDI specs after failed prepare: %v", files)
	}
	cp, _ := loadCheckpoint(filepath.Join(r.pluginDir, CheckpointFile))
	if len(cp.Claims) != 0 {
		t.Errorf("checkpoint after failed prepare: %+v", cp.Claims)
	}
}

func findFile(t *testing.T, dir, suffix string) string {
	t.Helper()
	var found string
	filepath.WalkDir(dir, func(p string, _ os.DirEntry, _ error) error {
		if strings.HasSuffix(p, suffix) {
			found = p
		}
		return nil
	})
	if found == "" {
		t.Fatalf("no file *%s under %s", suffix, dir)
	}
	return found
}

// A process that stopped after binding a claim's function and before its
// checkpoint was saved: the next process restores the function to its
// original driver before kubelet can call (kubelet prepares again, binding
// anew, or never unprepares that claim).
func TestStartRestoresFunctionsBoundForNoCheckpointedClaim(t *testing.T) {
	r := newRig(t)
	// A claim prepared and checkpointed: its binding stays.
	kept := r.claim(t, "kept", [2]string{"vfio", "pci-0000-02-00-2"})
	if e := r.prepare(t, kept).GetError(); e != "" {
		t.Fatalf("prepare: %s", e)
	}
	// The interrupted prepare: bound, never checkpointed.
	p := r.replan(t).Pool("vfio")
	u := p.Unit("0000:02:00.1")
	if u == nil {
		t.Fatal("no unit 0000:02:00.1 in pool vfio")
	}
	if _, err := (binding.ForClaim{M: r.bm}).Bind(context.Background(), p.Config, []pool.Unit{*u}); err != nil {
		t.Fatal(err)
	}
	r.stop()
	// The next process, with the same state file.
	var err error
	if r.bm, err = binding.NewManager(r.root, filepath.Join(r.dir, "state.json"), r.log, binding.WithWriter(r.kernel),
		binding.WithTimeout(2*time.Second), binding.WithPollInterval(time.Millisecond), binding.WithFault("")); err != nil {
		t.Fatal(err)
	}
	r.start(t)
	h, err := sysfs.Scan(r.root)
	if err != nil {
		t.Fatal(err)
	}
	if d := h.Device("0000:02:00.1"); d.Driver != "iavf" {
		t.Errorf("driver of the unclaimed function after the restart = %q, want iavf (its original)", d.Driver)
	}
	if d := h.Device("0000:02:00.2"); d.Driver != "vfio-pci" {
		t.Errorf("driver of the checkpointed claim's function after the restart = %q, want vfio-pci", d.Driver)
	}
	var left []sysfs.Address
	for _, rec := range r.bm.Records() {
		left = append(left, rec.Address)
	}
	if !cmp.Equal(left, []sysfs.Address{"0000:02:00.2"}) {
		t.Errorf("binding records after the restart: %v, want the checkpointed claim's only", left)
	}
	if e := r.unprepare(t, kept); e != "" {
		t.Errorf("unprepare of the kept claim: %s", e)
	}
}
