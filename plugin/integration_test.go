package plugin

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/sriov-cdi/sriov-cdi/cdi"
	"github.com/sriov-cdi/sriov-cdi/core/binding"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
	"github.com/sriov-cdi/sriov-cdi/sysfs/sysfstest"
)

// lazyPrep lets a test build the Preparer once the fixture tree exists.
type lazyPrep struct{ Preparer }

// specsIn returns a spec syncer writing through the real CDI writer into
// dir/cdi, and that directory.
func specsIn(t *testing.T, dir string, root sysfs.Root, log *zap.Logger) (cdi.PlanSyncer, string) {
	t.Helper()
	cdiDir := filepath.Join(dir, "cdi")
	w, err := cdi.NewWriter(cdiDir, log)
	if err != nil {
		t.Fatal(err)
	}
	return cdi.PlanSyncer{W: w, Root: root}, cdiDir
}

// fakeKernel puts the fake kernel (sysfstest.Kernel: no real kernel runs in
// unit tests; the e2e labs run the same path on one) under the harness's
// tree and returns a binding manager writing through it, with its state
// file at <dir>/state.json.
func (h *harness) fakeKernel(t *testing.T, log *zap.Logger) (*sysfstest.Kernel, *binding.Manager, sysfs.Root) {
	t.Helper()
	host := filepath.Join(h.dir, "host")
	k, err := sysfstest.NewKernel(host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Unhang)
	root := sysfs.Root{Sys: filepath.Join(host, "sys"), Dev: filepath.Join(host, "dev")}
	bm, err := binding.NewManager(root, filepath.Join(h.dir, "state.json"), log, binding.WithWriter(k),
		binding.WithTimeout(2*time.Second), binding.WithPollInterval(time.Millisecond), binding.WithFault(""))
	if err != nil {
		t.Fatal(err)
	}
	return k, bm, root
}

// TestAllocateBindsAndWritesSpecs runs the plugin with the real binding
// manager and CDI writer over a fixture tree whose kernel side is the fake
// kernel (sysfstest.Kernel: no real kernel runs in unit tests; the e2e
// kernel lab runs the same path on one). A vfio pool's Allocate binds the
// VF, the spec names it, a kernel pool's Allocate writes nothing.
func TestAllocateBindsAndWritesSpecs(t *testing.T) {
	log := zaptest.NewLogger(t)
	prep := &lazyPrep{}
	cfg := `
resourcePrefix: example.com
pools:
  - {name: vf, mode: vfio, selectors: {rootDevices: ["0000:01:00.0"]}}
  - {name: vf-kernel, mode: kernel, selectors: {rootDevices: ["0000:02:00.0"]}}
`
	var cdiDir string
	h := startHarness(t, 2, 2, cfg, prep, log, func(dir string, o *Options) {
		o.Specs, cdiDir = specsIn(t, dir, o.Root, log)
	})
	k, bm, root := h.fakeKernel(t, log)
	prep.Preparer = binding.ForAllocate{M: bm}

	regs := h.registrations(t, 2)
	spec, err := os.ReadFile(filepath.Join(cdiDir, "sriov-cdi_example.com_vf.json"))
	if err != nil {
		t.Fatalf("spec not written before the pool was advertised: %v", err)
	}
	if !strings.Contains(string(spec), `"name":"0000:01:00.1"`) || !strings.Contains(string(spec), `"path":"/dev/vfio/4"`) {
		t.Errorf("spec lacks the VF or its group node:\n%s", spec)
	}

	c := h.kubelet.client(t, regs["example.com/vf"])
	if _, err := c.Allocate(context.Background(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"0000:01:00.1"}}}}); err != nil {
		t.Fatal(err)
	}
	st, err := sysfs.NewBinder(root).Read("0000:01:00.1")
	if err != nil || st.Driver != "vfio-pci" {
		t.Fatalf("after Allocate: %+v, %v; want vfio-pci", st, err)
	}
	if _, err := os.Stat(root.VFIOGroupPath("4")); err != nil {
		t.Errorf("group node: %v", err)
	}
	writes := len(k.Writes())

	ck := h.kubelet.client(t, regs["example.com/vf-kernel"])
	if _, err := ck.Allocate(context.Background(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"0000:02:00.1"}}}}); err != nil {
		t.Fatal(err)
	}
	if got := k.Writes(); len(got) != writes {
		t.Errorf("a kernel pool's Allocate wrote driver attributes: %+v", got[writes:])
	}
}

// TestBindAtStartup: a vfio pool with bindAt: startup is bound before it is
// registered, through the same binding manager (fake kernel, as above).
func TestBindAtStartup(t *testing.T) {
	log := zaptest.NewLogger(t)
	var root sysfs.Root
	cfg := `pools: [{name: vf, mode: vfio, bindAt: startup, selectors: {rootDevices: ["0000:01:00.0"]}}]`
	h := startHarness(t, 1, 2, cfg, nil, log, func(dir string, o *Options) {
		host := filepath.Join(dir, "host")
		k, err := sysfstest.NewKernel(host)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(k.Unhang)
		root = o.Root
		bm, err := binding.NewManager(root, filepath.Join(dir, "state.json"), log, binding.WithWriter(k),
			binding.WithTimeout(2*time.Second), binding.WithPollInterval(time.Millisecond), binding.WithFault(""))
		if err != nil {
			t.Fatal(err)
		}
		o.Prepare = binding.ForAllocate{M: bm}
	})
	h.registrations(t, 1)
	for _, a := range []sysfs.Address{"0000:01:00.1", "0000:01:00.2"} {
		st, err := sysfs.NewBinder(root).Read(a)
		if err != nil || st.Driver != "vfio-pci" {
			t.Errorf("%s at registration: %+v, %v; want vfio-pci", a, st, err)
		}
	}
}
