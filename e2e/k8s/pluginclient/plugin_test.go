package pluginclient

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	api "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	"sigs.k8s.io/yaml"
)

// TestRegistration: the plugin registers one resource per pool, with
// options kubelet honours, and lists the snapshot's devices.
func TestRegistration(t *testing.T) {
	e := newEnv(t)
	k := e.startKubelet()
	e.startPlugin()
	k.waitRegistered(t, 1, vfioResource, kernelResource)
	e.checkPluginAlive()

	if diff := cmp.Diff([]string{kernelResource, vfioResource}, k.resourceNames()); diff != "" {
		t.Errorf("registered resources (-want +got):\n%s", diff)
	}
	for _, r := range []string{vfioResource, kernelResource} {
		s := k.resource(r)
		t.Logf("%s: options %v, socket %s", r, s.options, s.plugin.SocketPath())
		if !s.options.GetGetPreferredAllocationAvailable() {
			t.Errorf("%s: GetPreferredAllocationAvailable = false, want true", r)
		}
		if filepath.Dir(s.plugin.SocketPath()) != filepath.Clean(e.dpDir) {
			t.Errorf("%s: endpoint %q is not in the device-plugin dir %q", r, s.plugin.SocketPath(), e.dpDir)
		}
		if s.options.GetPreStartRequired() {
			// kubelet would call PreStartContainer before every start.
			_, err := s.plugin.API().PreStartContainer(ctx(t), &api.PreStartContainerRequest{DevicesIds: deviceIDs(s.devices)})
			if err != nil {
				t.Errorf("%s: PreStartRequired but PreStartContainer failed: %v", r, err)
			}
		}
	}

	want := map[string]map[string]string{
		vfioResource:   {vfioDevice: api.Healthy},
		kernelResource: {kernelDevice1: api.Healthy, kernelDevice2: api.Healthy},
	}
	for r, w := range want {
		s := k.resource(r)
		if diff := cmp.Diff(w, healthMap(s.devices)); diff != "" {
			t.Errorf("%s: ListAndWatch devices (-want +got):\n%s", r, diff)
		}
		for _, d := range s.devices {
			// The snapshot has a single NUMA node and numa_node = -1:
			// a NUMA ID kubelet's topology manager cannot use.
			for _, n := range d.GetTopology().GetNodes() {
				if n.GetID() < 0 {
					t.Errorf("%s: device %s reports NUMA node %d", r, d.GetID(), n.GetID())
				}
			}
		}
	}
}

// TestAllocate: Allocate answers with CDI device names, the SR-IOV device
// plugin and KubeVirt environment variables, and a CDI spec on disk that
// defines those names.
func TestAllocate(t *testing.T) {
	e := newEnv(t)
	k := e.startKubelet()
	e.startPlugin()
	k.waitRegistered(t, 1, vfioResource, kernelResource)

	cases := []struct {
		name     string
		resource string
		ids      []string
	}{
		{"vfio one device", vfioResource, []string{vfioDevice}},
		{"kernel one device", kernelResource, []string{kernelDevice2}},
		{"kernel two devices", kernelResource, []string{kernelDevice1, kernelDevice2}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := k.client(t, tc.resource).Allocate(ctx(t), &api.AllocateRequest{
				ContainerRequests: []*api.ContainerAllocateRequest{{DevicesIds: tc.ids}},
			})
			if err != nil {
				t.Fatalf("Allocate(%v): %v", tc.ids, err)
			}
			if n := len(resp.GetContainerResponses()); n != 1 {
				t.Fatalf("Allocate: %d container responses, want 1", n)
			}
			cr := resp.GetContainerResponses()[0]
			t.Logf("Allocate(%v) = %v", tc.ids, cr)

			var gotCDI, wantCDI []string
			for _, id := range tc.ids {
				wantCDI = append(wantCDI, tc.resource+"="+id)
			}
			for _, d := range cr.GetCdiDevices() {
				gotCDI = append(gotCDI, d.GetName())
			}
			slices.Sort(gotCDI)
			if diff := cmp.Diff(wantCDI, gotCDI); diff != "" {
				t.Errorf("CdiDevices (-want +got):\n%s", diff)
			}

			suffix := envSuffix(tc.resource)
			for _, name := range []string{"PCIDEVICE_" + suffix, "PCI_RESOURCE_" + suffix} {
				v, ok := cr.GetEnvs()[name]
				if !ok {
					t.Errorf("env %s missing; envs: %v (KubeVirt's ResourceNameToEnvVar and the SR-IOV device plugin upper-case the resource name and replace only '.' and '/'; a '-' stays)", name, cr.GetEnvs())
					continue
				}
				got := strings.Split(v, ",")
				slices.Sort(got)
				if diff := cmp.Diff(tc.ids, got); diff != "" {
					t.Errorf("env %s=%q (-want +got):\n%s", name, v, diff)
				}
			}

			// The CDI spec must define every returned name, and a vfio
			// device must carry its /dev/vfio nodes.
			specs := readCDISpecs(t, e.cdiDir)
			for _, name := range gotCDI {
				dev, ok := specs[name]
				if !ok {
					t.Errorf("CDI device %q is not defined by any spec in %s (defined: %v)", name, e.cdiDir, mapKeys(specs))
					continue
				}
				if tc.resource == vfioResource {
					// The group node, and the VFIO container node that
					// KubeVirt and DPDK open first.
					for _, want := range []string{"/dev/vfio/" + vfioGroup, "/dev/vfio/vfio"} {
						if !slices.Contains(dev.nodes, want) {
							t.Errorf("CDI device %q has device nodes %v, want %s", name, dev.nodes, want)
						}
					}
				}
			}
		})
	}

	t.Run("unknown device", func(t *testing.T) {
		_, err := k.client(t, vfioResource).Allocate(ctx(t), &api.AllocateRequest{
			ContainerRequests: []*api.ContainerAllocateRequest{{DevicesIds: []string{"0000:01:00.1"}}},
		})
		if err == nil {
			t.Errorf("Allocate of a device outside the pool succeeded, want an error")
		}
	})
}

// TestPreferredAllocation: the answer has the requested size, comes from the
// available devices and includes the must-include ones.
func TestPreferredAllocation(t *testing.T) {
	e := newEnv(t)
	k := e.startKubelet()
	e.startPlugin()
	k.waitRegistered(t, 1, vfioResource, kernelResource)

	cases := []struct {
		name        string
		available   []string
		mustInclude []string
		size        int32
	}{
		{"one of two", []string{kernelDevice1, kernelDevice2}, nil, 1},
		{"must include", []string{kernelDevice1, kernelDevice2}, []string{kernelDevice2}, 1},
		{"all", []string{kernelDevice1, kernelDevice2}, nil, 2},
		{"must include plus one", []string{kernelDevice1, kernelDevice2}, []string{kernelDevice1}, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := k.client(t, kernelResource).GetPreferredAllocation(ctx(t), &api.PreferredAllocationRequest{
				ContainerRequests: []*api.ContainerPreferredAllocationRequest{{
					AvailableDeviceIDs:   tc.available,
					MustIncludeDeviceIDs: tc.mustInclude,
					AllocationSize:       tc.size,
				}},
			})
			if err != nil {
				t.Fatalf("GetPreferredAllocation: %v", err)
			}
			if n := len(resp.GetContainerResponses()); n != 1 {
				t.Fatalf("%d container responses, want 1", n)
			}
			got := resp.GetContainerResponses()[0].GetDeviceIDs()
			if int32(len(got)) != tc.size {
				t.Errorf("got %v, want %d devices", got, tc.size)
			}
			for _, id := range got {
				if !slices.Contains(tc.available, id) {
					t.Errorf("got %v: %s is not available", got, id)
				}
			}
			for _, id := range tc.mustInclude {
				if !slices.Contains(got, id) {
					t.Errorf("got %v: must-include %s missing", got, id)
				}
			}
			dup := slices.Clone(got)
			slices.Sort(dup)
			if len(slices.Compact(dup)) != len(got) {
				t.Errorf("got %v: duplicate device IDs", got)
			}
		})
	}
}

// TestListAndWatchUpdate: when a VF disappears from sysfs (sriov_numvfs
// lowered, the kernel removes the device), the plugin sends a new list in
// which it is gone or Unhealthy; when it comes back, it is Healthy again.
func TestListAndWatchUpdate(t *testing.T) {
	e := newEnv(t)
	k := e.startKubelet()
	e.startPlugin()
	k.waitRegistered(t, 1, vfioResource, kernelResource)
	before := k.resource(kernelResource).updates

	// What `echo 1 > sriov_numvfs` on PF 0000:02:00.0 does to sysfs.
	pfDir := filepath.Join(e.sysRoot(), "bus", "pci", "devices", kernelPF)
	if err := os.Remove(filepath.Join(pfDir, "virtfn1")); err != nil {
		t.Fatal(err)
	}
	gone := removeDevice(t, e.sysRoot(), kernelDevice2, t.TempDir())
	writeAttr(t, filepath.Join(pfDir, "sriov_numvfs"), "1")

	k.waitUntil(t, kernelDevice2+" gone or Unhealthy", waitFor+30*time.Second, func() bool {
		s := k.res[kernelResource]
		h, present := healthMap(s.devices)[kernelDevice2]
		return s.updates > before && (!present || h == api.Unhealthy)
	})
	s := k.resource(kernelResource)
	t.Logf("after removing %s: %s", kernelDevice2, deviceSummary(s.devices))
	if h := healthMap(s.devices)[kernelDevice1]; h != api.Healthy {
		t.Errorf("%s: health %q after its sibling vanished, want Healthy", kernelDevice1, h)
	}
	// The other pool must not lose its device.
	if h := healthMap(k.resource(vfioResource).devices)[vfioDevice]; h != api.Healthy {
		t.Errorf("%s: health %q, want Healthy", vfioDevice, h)
	}

	// `echo 2 > sriov_numvfs` again.
	gone.restore(t)
	if err := os.Symlink("../"+kernelDevice2, filepath.Join(pfDir, "virtfn1")); err != nil {
		t.Fatal(err)
	}
	writeAttr(t, filepath.Join(pfDir, "sriov_numvfs"), "2")
	k.waitUntil(t, kernelDevice2+" Healthy again", waitFor+30*time.Second, func() bool {
		return healthMap(k.res[kernelResource].devices)[kernelDevice2] == api.Healthy
	})
	e.checkPluginAlive()
}

// TestKubeletRestart: when kubelet restarts (registration server stopped,
// every socket in the device-plugin dir removed, kubelet.sock re-created),
// the plugin registers again, and the new connection allocates.
func TestKubeletRestart(t *testing.T) {
	e := newEnv(t)
	k := e.startKubelet()
	e.startPlugin()
	k.waitRegistered(t, 1, vfioResource, kernelResource)

	for round := 1; round <= 2; round++ {
		k.stop()
		// The plugin's streams must end; kubelet is down for a moment.
		k.waitUntil(t, "disconnects", waitFor, func() bool {
			return !k.res[vfioResource].connected && !k.res[kernelResource].connected
		})
		time.Sleep(500 * time.Millisecond)
		e.checkPluginAlive()

		k = e.startKubelet() // CleanupPluginDirectory removes the plugin's sockets
		start := time.Now()
		k.waitRegistered(t, 1, vfioResource, kernelResource)
		t.Logf("round %d: re-registered %v after kubelet restart", round, time.Since(start).Round(time.Millisecond))

		resp, err := k.client(t, vfioResource).Allocate(ctx(t), &api.AllocateRequest{
			ContainerRequests: []*api.ContainerAllocateRequest{{DevicesIds: []string{vfioDevice}}},
		})
		if err != nil {
			t.Fatalf("round %d: Allocate after re-registration: %v", round, err)
		}
		if got := resp.GetContainerResponses()[0].GetCdiDevices(); len(got) != 1 || got[0].GetName() != vfioResource+"="+vfioDevice {
			t.Errorf("round %d: CdiDevices %v, want [%s=%s]", round, got, vfioResource, vfioDevice)
		}
	}
}

// TestPluginStartsBeforeKubelet: the plugin waits for kubelet.sock.
func TestPluginStartsBeforeKubelet(t *testing.T) {
	e := newEnv(t)
	e.startPlugin()
	time.Sleep(2 * time.Second)
	e.checkPluginAlive()
	k := e.startKubelet()
	k.waitRegistered(t, 1, vfioResource, kernelResource)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func deviceIDs(devs []*api.Device) []string {
	var ids []string
	for _, d := range devs {
		ids = append(ids, d.GetID())
	}
	return ids
}

// envSuffix is the resource name as KubeVirt (ResourceNameToEnvVar) and the
// SR-IOV device plugin put it in env names: upper case, '.' and '/' as '_'.
// A '-' stays: "sriov-cdi.io/vf" gives PCIDEVICE_SRIOV-CDI_IO_VF.
func envSuffix(resource string) string {
	return strings.ToUpper(strings.NewReplacer(".", "_", "/", "_").Replace(resource))
}

// cdiDevice is what the tests check of one CDI device.
type cdiDevice struct {
	nodes []string // container paths of device nodes, spec-wide and device edits
}

// cdiSpec is the subset of a CDI spec the tests read (JSON or YAML).
type cdiSpec struct {
	Kind           string       `json:"kind"`
	ContainerEdits cdiEdits     `json:"containerEdits"`
	Devices        []cdiSpecDev `json:"devices"`
}

type cdiSpecDev struct {
	Name           string   `json:"name"`
	ContainerEdits cdiEdits `json:"containerEdits"`
}

type cdiEdits struct {
	DeviceNodes []struct {
		Path string `json:"path"`
	} `json:"deviceNodes"`
}

// readCDISpecs reads every spec in dir into "kind=name" -> device.
func readCDISpecs(t *testing.T, dir string) map[string]cdiDevice {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read CDI dir: %v", err)
	}
	out := map[string]cdiDevice{}
	for _, de := range entries {
		ext := filepath.Ext(de.Name())
		if de.IsDir() || (ext != ".json" && ext != ".yaml") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		var s cdiSpec
		if ext == ".json" {
			err = json.Unmarshal(b, &s)
		} else {
			err = yaml.Unmarshal(b, &s)
		}
		if err != nil {
			t.Errorf("parse CDI spec %s: %v", de.Name(), err)
			continue
		}
		for _, d := range s.Devices {
			var dev cdiDevice
			for _, n := range append(s.ContainerEdits.DeviceNodes, d.ContainerEdits.DeviceNodes...) {
				dev.nodes = append(dev.nodes, n.Path)
			}
			out[s.Kind+"="+d.Name] = dev
		}
	}
	return out
}

func mapKeys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
