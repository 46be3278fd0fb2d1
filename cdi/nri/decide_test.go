package nri

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/nri/pkg/api"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	cdilib "tags.cncf.io/container-device-interface/pkg/cdi"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/sriov-cdi/sriov-cdi/cdi"
)

const (
	devVF0 = "sriov-cdi.io/vf=0000:3b:02.0"
	devVF1 = "sriov-cdi.io/vf=0000:3b:02.1"
	envVF0 = "PCIDEVICE_SRIOV-CDI_IO_VF_0000_3B_02_0=0000:3b:02.0"
)

// testCache is the CDI library's cache over one spec of ours with two
// vfio devices.
func testCache(t testing.TB) *cdilib.Cache {
	t.Helper()
	spec := &cdispec.Spec{Version: "0.5.0", Kind: "sriov-cdi.io/vf",
		ContainerEdits: cdispec.ContainerEdits{DeviceNodes: []*cdispec.DeviceNode{{Path: "/dev/vfio/vfio", Type: "c", Major: 10, Minor: 196}}},
		Devices: []cdispec.Device{
			{Name: "0000:3b:02.0", ContainerEdits: cdispec.ContainerEdits{Env: []string{envVF0},
				DeviceNodes: []*cdispec.DeviceNode{{Path: "/dev/vfio/41", Type: "c", Major: 243, Minor: 1}}}},
			{Name: "0000:3b:02.1", ContainerEdits: cdispec.ContainerEdits{Env: []string{"PCIDEVICE_SRIOV-CDI_IO_VF_0000_3B_02_1=0000:3b:02.1"},
				DeviceNodes: []*cdispec.DeviceNode{{Path: "/dev/vfio/42", Type: "c", Major: 243, Minor: 2}}}},
		}}
	dir := t.TempDir()
	w, err := cdi.NewWriter(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Sync([]*cdispec.Spec{spec}); err != nil {
		t.Fatal(err)
	}
	// Other vendors' specs: one pinning its node numbers, one not, and one
	// claiming our vendor in a file we did not write.
	for name, content := range map[string]string{
		"nvidia.yaml": "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: \"0\"\n  containerEdits:\n" +
			"    deviceNodes: [{path: /dev/nvidia0, type: c, major: 195, minor: 0}]\n    env: [NVIDIA_VISIBLE_DEVICES=0]\n",
		"example.yaml": "cdiVersion: 0.5.0\nkind: example.com/net\ndevices:\n- name: eth1\n  containerEdits:\n" +
			"    deviceNodes: [{path: /dev/net/tun}]\n    env: [EXAMPLE_NET=eth1]\n" +
			"- name: hooked\n  containerEdits:\n    env: [EXAMPLE_HOOKED=1]\n" +
			"    hooks: [{hookName: createContainer, path: /usr/bin/true}]\n",
		"impostor.yaml": "cdiVersion: 0.5.0\nkind: sriov-cdi.io/other\ndevices:\n- name: x\n  containerEdits:\n" +
			"    env: [IMPOSTOR=x]\n",
		// A migrated pool keeping the SR-IOV network device plugin's
		// prefix (an older YAML spec of ours), and another vendor's device
		// plugin with the same prefix.
		"sriov-cdi_intel.com_legacy.yaml": "cdiVersion: 0.5.0\nkind: intel.com/legacy\ndevices:\n- name: x\n  containerEdits:\n" +
			"    env: [LEGACY=x]\n",
		"intel-gpu.yaml": "cdiVersion: 0.5.0\nkind: intel.com/gpu\ndevices:\n- name: card0\n  containerEdits:\n" +
			"    env: [GPU=card0]\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c, _ := cdilib.NewCache(cdilib.WithSpecDirs(dir), cdilib.WithAutoRefresh(false))
	return c
}

const devGPU = "nvidia.com/gpu=0"

// gpuInjected is injected plus another vendor's device node and variable
// (as its spec defines them if major:minor is 195:0).
func gpuInjected(annotations map[string]string, major, minor int64) *api.Container {
	c := injected(annotations, &api.LinuxDevice{Path: "/dev/nvidia0", Type: "c", Major: major, Minor: minor})
	c.Env = append(c.Env, "NVIDIA_VISIBLE_DEVICES=0")
	return c
}

func dev(path string, minor int64) *api.LinuxDevice {
	return &api.LinuxDevice{Path: path, Type: "c", Major: 243, Minor: minor}
}

// injected is a container into which containerd injected devVF0 from the
// CRI device list.
func injected(annotations map[string]string, extra ...*api.LinuxDevice) *api.Container {
	return &api.Container{Id: "c1", Name: "app", Annotations: annotations,
		Env:   []string{"PATH=/bin", envVF0},
		Linux: &api.LinuxContainer{Devices: append([]*api.LinuxDevice{{Path: "/dev/vfio/vfio", Type: "c", Major: 10, Minor: 196}, dev("/dev/vfio/41", 1)}, extra...)}}
}

func TestDecide(t *testing.T) {
	cache := testCache(t)
	tests := []struct {
		name    string
		pod     *api.PodSandbox
		ctr     *api.Container
		noCache bool
		policy  Policy
		want    Decision
	}{
		{
			name: "pod annotation copied into the container (pod_annotations): removed",
			pod:  &api.PodSandbox{Annotations: map[string]string{"cdi.k8s.io/sriov-cdi.io_pod": devVF0}},
			ctr:  injected(map[string]string{"cdi.k8s.io/sriov-cdi.io_pod": devVF0, "io.kubernetes.x": "y"}),
			want: Decision{Remove: []Verdict{{"cdi.k8s.io/sriov-cdi.io_pod", sandboxReason}}},
		},
		{
			name: "container annotation whose devices are already injected: removed",
			pod:  &api.PodSandbox{},
			ctr:  injected(map[string]string{"cdi.k8s.io/ctr": devVF0}),
			want: Decision{Remove: []Verdict{{"cdi.k8s.io/ctr", "its devices are already in the container: " + devVF0}}},
		},
		{
			name: "container annotation for a device not yet in the container: kept",
			pod:  &api.PodSandbox{},
			ctr:  injected(map[string]string{"cdi.k8s.io/ctr": devVF0 + "," + devVF1}),
			want: Decision{Keep: []Verdict{{"cdi.k8s.io/ctr", `device "sriov-cdi.io/vf=0000:3b:02.1" is not in the container yet`}}},
		},
		{
			name: "same key on the pod with another value: judged by the devices",
			pod:  &api.PodSandbox{Annotations: map[string]string{"cdi.k8s.io/a": devVF1}},
			ctr:  injected(map[string]string{"cdi.k8s.io/a": devVF0}),
			want: Decision{Remove: []Verdict{{"cdi.k8s.io/a", "its devices are already in the container: " + devVF0}}},
		},
		{
			name: "unknown device: kept",
			pod:  &api.PodSandbox{},
			ctr:  injected(map[string]string{"cdi.k8s.io/a": "sriov-cdi.io/vf=0000:99:00.0"}),
			want: Decision{Keep: []Verdict{{"cdi.k8s.io/a", `device "sriov-cdi.io/vf=0000:99:00.0" is in no CDI spec`}}},
		},
		{
			name: "malformed container annotation: kept, never fails the container",
			pod:  &api.PodSandbox{},
			ctr:  injected(map[string]string{"cdi.k8s.io/a": "vf"}),
			want: Decision{Keep: []Verdict{{"cdi.k8s.io/a", `annotation "cdi.k8s.io/a": "vf" is not a qualified CDI device name (<vendor>/<class>=<device>): unqualified device "vf", missing vendor`}}},
		},
		{
			name: "malformed but carried by the sandbox: kept (nothing says it is ours)",
			pod:  &api.PodSandbox{Annotations: map[string]string{"cdi.k8s.io/a": "vf"}},
			ctr:  injected(map[string]string{"cdi.k8s.io/a": "vf"}),
			want: Decision{Keep: []Verdict{{"cdi.k8s.io/a", `annotation "cdi.k8s.io/a": "vf" is not a qualified CDI device name (<vendor>/<class>=<device>): unqualified device "vf", missing vendor`}}},
		},
		{
			name:    "no CDI cache: nothing is known to be ours, everything kept",
			pod:     &api.PodSandbox{Annotations: map[string]string{"cdi.k8s.io/pod": devVF0}},
			ctr:     injected(map[string]string{"cdi.k8s.io/pod": devVF0, "cdi.k8s.io/ctr": devVF0}),
			noCache: true,
			want: Decision{Keep: []Verdict{
				{"cdi.k8s.io/ctr", "no CDI cache to look its devices up in"},
				{"cdi.k8s.io/pod", "no CDI cache to look its devices up in"},
			}},
		},
		{
			name:    "no CDI cache, all vendors: only the sandbox rule",
			pod:     &api.PodSandbox{Annotations: map[string]string{"cdi.k8s.io/pod": devVF0}},
			ctr:     injected(map[string]string{"cdi.k8s.io/pod": devVF0, "cdi.k8s.io/ctr": devVF0}),
			noCache: true,
			policy:  Policy{AllVendors: true},
			want: Decision{
				Remove: []Verdict{{"cdi.k8s.io/pod", sandboxReason}},
				Keep:   []Verdict{{"cdi.k8s.io/ctr", "no CDI cache to look its devices up in"}},
			},
		},
		{
			name:   "all vendors: another vendor's annotation carried by the sandbox is removed",
			pod:    &api.PodSandbox{Annotations: map[string]string{"cdi.k8s.io/gpu": devGPU}},
			ctr:    injected(map[string]string{"cdi.k8s.io/gpu": devGPU}),
			policy: Policy{AllVendors: true},
			want:   Decision{Remove: []Verdict{{"cdi.k8s.io/gpu", sandboxReason}}},
		},
		{
			name:   "all vendors: another vendor's device judged by paths and variables only",
			pod:    &api.PodSandbox{},
			ctr:    gpuInjected(map[string]string{"cdi.k8s.io/gpu": devGPU}, 195, 1),
			policy: Policy{AllVendors: true},
			want:   Decision{Remove: []Verdict{{"cdi.k8s.io/gpu", "its devices are already in the container: " + devGPU}}},
		},
		{
			name:   "all vendors: malformed but carried by the sandbox is removed",
			pod:    &api.PodSandbox{Annotations: map[string]string{"cdi.k8s.io/a": "vf"}},
			ctr:    injected(map[string]string{"cdi.k8s.io/a": "vf"}),
			policy: Policy{AllVendors: true},
			want:   Decision{Remove: []Verdict{{"cdi.k8s.io/a", sandboxReason}}},
		},
		{
			name: "a migrated pool's prefix (intel.com) in a spec of ours: ours; the same vendor's other kind is not",
			pod: &api.PodSandbox{Annotations: map[string]string{
				"cdi.k8s.io/legacy": "intel.com/legacy=x", "cdi.k8s.io/gpu": "intel.com/gpu=card0"}},
			ctr: injected(map[string]string{"cdi.k8s.io/legacy": "intel.com/legacy=x", "cdi.k8s.io/gpu": "intel.com/gpu=card0"}),
			want: Decision{
				Remove: []Verdict{{"cdi.k8s.io/legacy", sandboxReason}},
				Keep:   []Verdict{{"cdi.k8s.io/gpu", `device "intel.com/gpu=card0" is not ours and not in the container yet`}},
			},
		},
		{
			name: "duplicate device entries are folded, the first entry kept",
			pod:  &api.PodSandbox{},
			ctr: injected(nil, dev("/dev/vfio/41", 1), &api.LinuxDevice{Path: "/dev/vfio/vfio", Type: "c", Major: 10, Minor: 196},
				&api.LinuxDevice{Path: "/dev/vfio/vfio", Type: "c", Major: 10, Minor: 196}),
			want: Decision{Dedupe: []*api.LinuxDevice{dev("/dev/vfio/41", 1), {Path: "/dev/vfio/vfio", Type: "c", Major: 10, Minor: 196}}, Extra: 1},
		},
		{
			name: "another vendor's annotation carried by the sandbox, devices not in the container: kept",
			pod:  &api.PodSandbox{Annotations: map[string]string{"cdi.k8s.io/gpu": devGPU}},
			ctr:  injected(map[string]string{"cdi.k8s.io/gpu": devGPU}),
			want: Decision{Keep: []Verdict{{"cdi.k8s.io/gpu", `device "nvidia.com/gpu=0" is not ours and not in the container yet`}}},
		},
		{
			name: "another vendor's device exactly in the container: removed",
			pod:  &api.PodSandbox{},
			ctr:  gpuInjected(map[string]string{"cdi.k8s.io/gpu": devGPU}, 195, 0),
			want: Decision{Remove: []Verdict{{"cdi.k8s.io/gpu", "its devices are already in the container: " + devGPU}}},
		},
		{
			name: "another vendor's device node with other numbers at its path: kept",
			pod:  &api.PodSandbox{},
			ctr:  gpuInjected(map[string]string{"cdi.k8s.io/gpu": devGPU}, 195, 1),
			want: Decision{Keep: []Verdict{{"cdi.k8s.io/gpu", `device "nvidia.com/gpu=0" is not ours and not exactly in the container: "/dev/nvidia0" is c 195:1, its spec says c 195:0`}}},
		},
		{
			name: "another vendor's device without pinned numbers, node and env present: removed",
			pod:  &api.PodSandbox{},
			ctr: func() *api.Container {
				c := injected(map[string]string{"cdi.k8s.io/net": "example.com/net=eth1"}, &api.LinuxDevice{Path: "/dev/net/tun", Type: "c", Major: 10, Minor: 200})
				c.Env = append(c.Env, "EXAMPLE_NET=eth1")
				return c
			}(),
			want: Decision{Remove: []Verdict{{"cdi.k8s.io/net", "its devices are already in the container: example.com/net=eth1"}}},
		},
		{
			name: "another vendor's device with hooks: cannot be verified, kept",
			pod:  &api.PodSandbox{},
			ctr: func() *api.Container {
				c := injected(map[string]string{"cdi.k8s.io/net": "example.com/net=hooked"})
				c.Env = append(c.Env, "EXAMPLE_HOOKED=1")
				return c
			}(),
			want: Decision{Keep: []Verdict{{"cdi.k8s.io/net", `device "example.com/net=hooked" is not ours and not exactly in the container: its hooks cannot be checked`}}},
		},
		{
			name: "our vendor in a spec file we did not write: not ours",
			pod:  &api.PodSandbox{Annotations: map[string]string{"cdi.k8s.io/x": "sriov-cdi.io/other=x"}},
			ctr:  injected(map[string]string{"cdi.k8s.io/x": "sriov-cdi.io/other=x"}),
			want: Decision{Keep: []Verdict{{"cdi.k8s.io/x", `device "sriov-cdi.io/other=x" is not ours and not in the container yet`}}},
		},
		{
			name: "ours and another vendor's in one annotation carried by the sandbox: kept for the other's sake",
			pod:  &api.PodSandbox{Annotations: map[string]string{"cdi.k8s.io/mix": devVF0 + "," + devGPU}},
			ctr:  injected(map[string]string{"cdi.k8s.io/mix": devVF0 + "," + devGPU}),
			want: Decision{Keep: []Verdict{{"cdi.k8s.io/mix", `device "nvidia.com/gpu=0" is not ours and not in the container yet`}}},
		},
		{
			name: "two entries for one path with different numbers: a conflict, not folded",
			pod:  &api.PodSandbox{},
			ctr:  injected(nil, dev("/dev/vfio/41", 2)),
			want: Decision{Conflicts: []Conflict{{Path: "/dev/vfio/41", Entries: []*api.LinuxDevice{dev("/dev/vfio/41", 1), dev("/dev/vfio/41", 2)}}}},
		},
		{
			name: "same numbers, different mode: not an exact duplicate, a conflict",
			pod:  &api.PodSandbox{},
			ctr: injected(nil, &api.LinuxDevice{Path: "/dev/vfio/41", Type: "c", Major: 243, Minor: 1,
				FileMode: &api.OptionalFileMode{Value: 0o666}}),
			want: Decision{Conflicts: []Conflict{{Path: "/dev/vfio/41", Entries: []*api.LinuxDevice{dev("/dev/vfio/41", 1),
				{Path: "/dev/vfio/41", Type: "c", Major: 243, Minor: 1, FileMode: &api.OptionalFileMode{Value: 0o666}}}}}},
		},
		{
			name: "another vendor's device at a conflicting path: kept, and the conflict reported",
			pod:  &api.PodSandbox{},
			ctr: func() *api.Container {
				c := gpuInjected(map[string]string{"cdi.k8s.io/gpu": devGPU}, 195, 0)
				c.Linux.Devices = append(c.Linux.Devices, &api.LinuxDevice{Path: "/dev/nvidia0", Type: "c", Major: 195, Minor: 1})
				return c
			}(),
			want: Decision{
				Keep: []Verdict{{"cdi.k8s.io/gpu", `device "nvidia.com/gpu=0" is not ours and not exactly in the container: "/dev/nvidia0" is listed with conflicting entries`}},
				Conflicts: []Conflict{{Path: "/dev/nvidia0", Entries: []*api.LinuxDevice{
					{Path: "/dev/nvidia0", Type: "c", Major: 195, Minor: 0}, {Path: "/dev/nvidia0", Type: "c", Major: 195, Minor: 1}}}},
			},
		},
		{
			name: "nothing to do",
			pod:  &api.PodSandbox{Annotations: map[string]string{"a": "b"}},
			ctr:  injected(map[string]string{"io.kubernetes.container.name": "app"}),
			want: Decision{},
		},
		{
			name: "no Linux section",
			pod:  nil,
			ctr:  &api.Container{Annotations: map[string]string{"cdi.k8s.io/a": devVF0}},
			want: Decision{Keep: []Verdict{{"cdi.k8s.io/a", `device "sriov-cdi.io/vf=0000:3b:02.0" is not in the container yet`}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var specs Specs = cache
			if tt.noCache {
				specs = nil
			}
			got := Decide(tt.pod, tt.ctr, specs, tt.policy)
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("Decide() (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecisionAdjustment(t *testing.T) {
	if adj := (Decision{Keep: []Verdict{{"cdi.k8s.io/a", "x"}}}).Adjustment(); adj != nil {
		t.Errorf("Adjustment() of a no-op decision = %v, want nil", adj)
	}
	got := Decision{Remove: []Verdict{{"cdi.k8s.io/a", "x"}}, Dedupe: []*api.LinuxDevice{dev("/dev/vfio/41", 1)}}.Adjustment()
	want := &api.ContainerAdjustment{
		Annotations: map[string]string{"-cdi.k8s.io/a": ""},
		Linux:       &api.LinuxContainerAdjustment{Devices: []*api.LinuxDevice{dev("/dev/vfio/41", 1)}},
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("Adjustment() (-want +got):\n%s", diff)
	}
}

func TestOurs(t *testing.T) {
	cache := testCache(t)
	tests := []struct {
		name  string
		specs Specs
		kind  string
		want  bool
	}{
		{"a spec the writer wrote", cache, "sriov-cdi.io/vf", true},
		{"an older YAML spec of ours with another prefix", cache, "intel.com/legacy", true},
		{"our vendor in a file we did not write", cache, "sriov-cdi.io/other", false},
		{"another vendor with a prefix one of our pools uses", cache, "intel.com/gpu", false},
		{"another vendor", cache, "nvidia.com/gpu", false},
		{"no spec of that kind", cache, "sriov-cdi.io/gone", false},
		{"not a kind", cache, "vf", false},
		{"no cache", nil, "sriov-cdi.io/vf", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Ours(tt.specs, tt.kind); got != tt.want {
				t.Errorf("Ours(%q) = %v, want %v", tt.kind, got, tt.want)
			}
		})
	}
}

// FuzzDecide runs Decide on fuzzed annotations (values, which the sandbox
// carries) and device entries, under both policies, and checks what must
// hold whatever the input: every cdi.k8s.io/* key is judged exactly once
// (removed or kept, each list sorted), nothing else is; a malformed value
// is never removed by default; the default removes a subset of what
// AllVendors removes; another vendor's device in an annotation removed by
// default has its nodes and variables in the container; every path listed
// more than once is folded (all entries identical, Extra counting the
// rest) or a conflict (entries differ), never both; and the adjustment
// removes exactly the removed keys.
func FuzzDecide(f *testing.F) {
	specs := testCache(f)
	f.Add(devVF0, devGPU, uint8(1), []byte{0x04, 0x04})
	f.Add(devVF0+","+devGPU, "example.com/net=eth1", uint8(7), []byte{0x04, 0x08, 0x44})
	f.Add("vf", "sriov-cdi.io/other=x", uint8(3), []byte{})
	f.Add(devVF1, "intel.com/legacy=x", uint8(2), []byte{0x01, 0x01, 0x01, 0x05})
	f.Fuzz(func(t *testing.T, v1, v2 string, flags uint8, devs []byte) {
		pod := &api.PodSandbox{Annotations: map[string]string{}}
		ctr := &api.Container{Annotations: map[string]string{"cdi.k8s.io/one": v1, "cdi.k8s.io/two": v2, "other": v1},
			Linux: &api.LinuxContainer{}}
		if flags&1 != 0 {
			pod.Annotations["cdi.k8s.io/one"] = v1
		}
		if flags&2 != 0 {
			pod.Annotations["cdi.k8s.io/two"] = v2
		}
		if flags&4 != 0 {
			ctr.Env = append(ctr.Env, envVF0, "NVIDIA_VISIBLE_DEVICES=0", "EXAMPLE_NET=eth1")
		}
		count := map[string]int{}
		for i, b := range devs {
			if i == 16 {
				break
			}
			d := &api.LinuxDevice{Path: []string{"/dev/vfio/41", "/dev/vfio/42", "/dev/nvidia0", "/dev/net/tun"}[b&3],
				Type: "c", Major: 243, Minor: int64(b>>2) & 3}
			if b&0x40 != 0 {
				d.FileMode = &api.OptionalFileMode{Value: 0o666}
			}
			ctr.Linux.Devices = append(ctr.Linux.Devices, d)
			count[d.Path]++
		}

		def := Decide(pod, ctr, specs, Policy{})
		all := Decide(pod, ctr, specs, Policy{AllVendors: true})
		removedByAll := map[string]bool{}
		for _, r := range all.Remove {
			removedByAll[r.Key] = true
		}
		for _, d := range []Decision{def, all} {
			var keys []string
			for _, v := range append(slices.Clone(d.Remove), d.Keep...) {
				keys = append(keys, v.Key)
			}
			slices.Sort(keys)
			if diff := cmp.Diff([]string{"cdi.k8s.io/one", "cdi.k8s.io/two"}, keys); diff != "" {
				t.Fatalf("judged keys (-want +got):\n%s", diff)
			}
			for _, l := range [][]Verdict{d.Remove, d.Keep} {
				if !slices.IsSortedFunc(l, func(a, b Verdict) int { return strings.Compare(a.Key, b.Key) }) {
					t.Fatalf("verdicts not sorted: %v", l)
				}
			}
			wantAdj := map[string]string{}
			for _, r := range d.Remove {
				wantAdj["-"+r.Key] = ""
			}
			if adj := d.Adjustment(); (adj == nil) != d.Empty() || !maps.Equal(wantAdj, adj.GetAnnotations()) && len(wantAdj) > 0 {
				t.Fatalf("Adjustment() = %v for %+v", adj, d)
			}

			folded, conflicting := map[string]bool{}, map[string]bool{}
			extra := 0
			for _, dev := range d.Dedupe {
				folded[dev.Path] = true
				extra += count[dev.Path] - 2
				for _, e := range ctr.Linux.Devices {
					if e.Path == dev.Path && !proto.Equal(e, dev) {
						t.Fatalf("%q folded although its entries differ", dev.Path)
					}
				}
			}
			for _, c := range d.Conflicts {
				conflicting[c.Path] = true
				if identical(c.Entries) || len(c.Entries) != count[c.Path] {
					t.Fatalf("conflict %q: %v", c.Path, c.Entries)
				}
			}
			for path, n := range count {
				if (n > 1) != (folded[path] != conflicting[path]) {
					t.Fatalf("%q listed %d times: folded %v, conflict %v", path, n, folded[path], conflicting[path])
				}
			}
			if extra != d.Extra {
				t.Fatalf("Extra = %d, want %d", d.Extra, extra)
			}
		}

		paths := make([]string, 0, len(ctr.Linux.Devices))
		for _, d := range ctr.Linux.Devices {
			paths = append(paths, d.Path)
		}
		have := cdi.ContentsOf(paths, ctr.Env)
		for _, r := range def.Remove {
			if !removedByAll[r.Key] {
				t.Fatalf("%q removed by default but not with AllVendors", r.Key)
			}
			reqs, err := cdi.ParseAnnotations(map[string]string{r.Key: ctr.Annotations[r.Key]})
			if err != nil {
				t.Fatalf("malformed %q removed by default: %v", r.Key, err)
			}
			for _, n := range reqs[0].Devices {
				if Ours(specs, kindOf(n)) {
					continue
				}
				if dev := specs.GetDevice(n); dev == nil || !have.Has(&dev.ContainerEdits) {
					t.Fatalf("%q removed by default, but another vendor's device %q is not in the container", r.Key, n)
				}
			}
		}
	})
}
