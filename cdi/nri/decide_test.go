package nri

import (
	"testing"

	"github.com/containerd/nri/pkg/api"
	"github.com/google/go-cmp/cmp"
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
	c, _ := cdilib.NewCache(cdilib.WithSpecDirs(dir), cdilib.WithAutoRefresh(false))
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
	const sandboxReason = "the pod sandbox carries it: its devices were cold-plugged with the sandbox"
	tests := []struct {
		name    string
		pod     *api.PodSandbox
		ctr     *api.Container
		noCache bool
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
			name: "malformed but carried by the sandbox: removed",
			pod:  &api.PodSandbox{Annotations: map[string]string{"cdi.k8s.io/a": "vf"}},
			ctr:  injected(map[string]string{"cdi.k8s.io/a": "vf"}),
			want: Decision{Remove: []Verdict{{"cdi.k8s.io/a", sandboxReason}}},
		},
		{
			name:    "no CDI cache: only the sandbox rule",
			pod:     &api.PodSandbox{Annotations: map[string]string{"cdi.k8s.io/pod": devVF0}},
			ctr:     injected(map[string]string{"cdi.k8s.io/pod": devVF0, "cdi.k8s.io/ctr": devVF0}),
			noCache: true,
			want: Decision{
				Remove: []Verdict{{"cdi.k8s.io/pod", sandboxReason}},
				Keep:   []Verdict{{"cdi.k8s.io/ctr", "no CDI cache to look its devices up in"}},
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
			var devices cdi.Resolver = cache
			if tt.noCache {
				devices = nil
			}
			got := Decide(tt.pod, tt.ctr, devices)
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
