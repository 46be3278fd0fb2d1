package cdi

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	rspec "github.com/opencontainers/runtime-spec/specs-go"
	cdilib "tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/pkg/parser"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

const (
	devVF0   = "sriov-cdi.io/vf=0000:3b:02.0"
	devVF1   = "sriov-cdi.io/vf=0000:3b:02.1"
	devNVMe  = "sriov-cdi.io/nvme=0000:01:00.2"
	devNet   = "sriov-cdi.io/net=0000:5e:00.1"
	envVF0   = "PCIDEVICE_SRIOV-CDI_IO_VF_0000_3B_02_0=0000:3b:02.0"
	envVF1   = "PCIDEVICE_SRIOV-CDI_IO_VF_0000_3B_02_1=0000:3b:02.1"
	envNVMe  = "PCIDEVICE_SRIOV-CDI_IO_NVME_0000_01_00_2=0000:01:00.2"
	envNet   = "PCIDEVICE_SRIOV-CDI_IO_NET_0000_5E_00_1=0000:5e:00.1"
	envNetIf = "SRIOV_CDI_NETDEV_SRIOV_CDI_IO_NET_0000_5E_00_1=ens1f0v1"
)

// testCache writes the specs of three pools (two vfio, one kernel) built
// by SpecFor, with device numbers pinned so no host node is needed, and
// returns the CDI library's cache over them.
func testCache(t testing.TB) *cdilib.Cache {
	t.Helper()
	h := sysfs.NewHost([]*sysfs.Device{
		{Address: "0000:3b:02.0", IOMMUGroup: "41", Driver: "vfio-pci"},
		{Address: "0000:3b:02.1", IOMMUGroup: "42", Driver: "vfio-pci"},
		{Address: "0000:01:00.2", IOMMUGroup: "8", Driver: "vfio-pci"},
		{Address: "0000:5e:00.1", IOMMUGroup: "60", Driver: "iavf"},
	}, nil)
	pools := []pool.Pool{
		{Name: "vf", Resource: "sriov-cdi.io/vf", Mode: config.ModeVFIO, Units: []pool.Unit{
			{ID: "0000:3b:02.0", Members: []sysfs.Address{"0000:3b:02.0"}, Group: "41"},
			{ID: "0000:3b:02.1", Members: []sysfs.Address{"0000:3b:02.1"}, Group: "42"},
		}},
		{Name: "nvme", Resource: "sriov-cdi.io/nvme", Mode: config.ModeVFIO, Units: []pool.Unit{
			{ID: "0000:01:00.2", Members: []sysfs.Address{"0000:01:00.2"}, Group: "8"},
		}},
		{Name: "net", Resource: "sriov-cdi.io/net", Mode: config.ModeKernel, Units: []pool.Unit{
			{ID: "0000:5e:00.1", Members: []sysfs.Address{"0000:5e:00.1"}, Netdevs: []string{"ens1f0v1"}},
		}},
	}
	specs, err := SpecsFor(pools, h, sysfs.HostRoot())
	if err != nil {
		t.Fatal(err)
	}
	minor := int64(0)
	for _, s := range specs {
		for _, n := range s.ContainerEdits.DeviceNodes {
			n.Type, n.Major, n.Minor = "c", 10, 196
		}
		for _, d := range s.Devices {
			for _, n := range d.ContainerEdits.DeviceNodes {
				minor++
				n.Type, n.Major, n.Minor = "c", 243, minor
			}
		}
	}
	return cacheOf(t, t.TempDir(), specs)
}

// cacheOf writes specs into dir with our writer and returns the CDI
// library's cache over them, failing on any spec the library rejects.
func cacheOf(t testing.TB, dir string, specs []*cdispec.Spec) *cdilib.Cache {
	t.Helper()
	w, err := NewWriter(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Sync(specs); err != nil {
		t.Fatal(err)
	}
	cache, _ := cdilib.NewCache(cdilib.WithSpecDirs(dir), cdilib.WithAutoRefresh(false))
	if errs := cache.GetErrors(); len(errs) > 0 {
		t.Fatalf("cache errors: %v", errs)
	}
	return cache
}

func baseSpec(annotations map[string]string) *rspec.Spec {
	return &rspec.Spec{
		Version:     rspec.Version,
		Process:     &rspec.Process{Env: []string{"PATH=/usr/bin:/bin"}},
		Linux:       &rspec.Linux{Resources: &rspec.LinuxResources{Devices: []rspec.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}}},
		Annotations: annotations,
	}
}

// outcome is the part of an OCI spec injection changes.
type outcome struct {
	Paths       []string
	Env         []string
	Annotations map[string]string
	CgroupRules int
}

func outcomeOf(s *rspec.Spec) outcome {
	o := outcome{Env: s.Process.Env, Annotations: s.Annotations, CgroupRules: len(s.Linux.Resources.Devices)}
	for _, d := range s.Linux.Devices {
		o.Paths = append(o.Paths, d.Path)
	}
	return o
}

func TestInjectOnce(t *testing.T) {
	cache := testCache(t)
	tests := []struct {
		name string
		// pre are devices the runtime injected before (e.g. containerd
		// from the CRI device list).
		pre         []string
		annotations map[string]string
		devices     []string
		want        *Injection
		wantOut     outcome
		wantErr     []string
	}{
		{
			name:        "1: pod annotation cold-plug and container device list name the same device: injected once",
			annotations: map[string]string{"cdi.k8s.io/sriov-cdi.io_pod": devVF0, "other": "kept"},
			devices:     []string{devVF0},
			want:        &Injection{Injected: []string{devVF0}, RemovedAnnotations: []string{"cdi.k8s.io/sriov-cdi.io_pod"}},
			wantOut: outcome{Paths: []string{"/dev/vfio/vfio", "/dev/vfio/41"}, Env: []string{"PATH=/usr/bin:/bin", envVF0},
				Annotations: map[string]string{"other": "kept"}, CgroupRules: 3},
		},
		{
			name:        "1b: runtime already injected the device list, the copied pod annotation is re-read (Kata shim): skipped",
			pre:         []string{devVF0},
			annotations: map[string]string{"cdi.k8s.io/sriov-cdi.io_pod": devVF0},
			want:        &Injection{Present: []string{devVF0}, RemovedAnnotations: []string{"cdi.k8s.io/sriov-cdi.io_pod"}},
			wantOut: outcome{Paths: []string{"/dev/vfio/vfio", "/dev/vfio/41"}, Env: []string{"PATH=/usr/bin:/bin", envVF0},
				Annotations: map[string]string{}, CgroupRules: 3},
		},
		{
			name:    "2: devices from two pools: both, once each",
			devices: []string{devVF0, devNVMe, devVF0},
			want:    &Injection{Injected: []string{devVF0, devNVMe}},
			wantOut: outcome{Paths: []string{"/dev/vfio/41", "/dev/vfio/vfio", "/dev/vfio/8"}, Env: []string{"PATH=/usr/bin:/bin", envVF0, envNVMe},
				CgroupRules: 5}, // deny-all, vfio, 41, vfio again (once per spec: the library's doing), 8
		},
		{
			name:        "3: annotation-only runtime: injected once",
			annotations: map[string]string{"cdi.k8s.io/a": devVF1 + "," + devNet, "cdi.k8s.io/b": devVF1},
			want:        &Injection{Injected: []string{devVF1, devNet}, RemovedAnnotations: []string{"cdi.k8s.io/a", "cdi.k8s.io/b"}},
			wantOut: outcome{Paths: []string{"/dev/vfio/vfio", "/dev/vfio/42"}, Env: []string{"PATH=/usr/bin:/bin", envVF1, envNet, envNetIf},
				Annotations: map[string]string{}, CgroupRules: 3},
		},
		{
			name:        "an env-only (kernel) device already present is recognised",
			pre:         []string{devNet},
			annotations: map[string]string{"cdi.k8s.io/a": devNet},
			devices:     []string{devNet, devVF1},
			want:        &Injection{Injected: []string{devVF1}, Present: []string{devNet}, RemovedAnnotations: []string{"cdi.k8s.io/a"}},
			wantOut: outcome{Paths: []string{"/dev/vfio/vfio", "/dev/vfio/42"}, Env: []string{"PATH=/usr/bin:/bin", envNet, envNetIf, envVF1},
				Annotations: map[string]string{}, CgroupRules: 3},
		},
		{
			name:        "4: unresolvable device: an error naming it and who asked, spec untouched",
			annotations: map[string]string{"cdi.k8s.io/y": "sriov-cdi.io/nvme=0000:01:00.7", "other": "kept"},
			devices:     []string{devVF0, "sriov-cdi.io/vf=0000:99:00.0"},
			wantErr: []string{
				`"sriov-cdi.io/vf=0000:99:00.0" (requested by the device list)`,
				`"sriov-cdi.io/nvme=0000:01:00.7" (requested by annotation cdi.k8s.io/y)`,
			},
		},
		{
			name:        "malformed annotation: an error naming the key, spec untouched",
			annotations: map[string]string{"cdi.k8s.io/y": devVF0 + ",vf=1"},
			devices:     []string{devVF0},
			wantErr:     []string{`annotation "cdi.k8s.io/y": "vf=1" is not a qualified CDI device name`},
		},
		{
			name:    "malformed device list entry",
			devices: []string{"0000:3b:02.0"},
			wantErr: []string{`"0000:3b:02.0" in the device list is not a qualified CDI device name`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := baseSpec(tt.annotations)
			if len(tt.pre) > 0 {
				if _, err := cache.InjectDevices(spec, tt.pre...); err != nil {
					t.Fatal(err)
				}
			}
			before, err := deepCopy(spec)
			if err != nil {
				t.Fatal(err)
			}
			got, err := InjectOnce(spec, tt.devices, cache)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("InjectOnce() = %+v, want an error", got)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("InjectOnce() error = %v; want it to contain %s", err, w)
					}
				}
				if diff := cmp.Diff(before, spec); diff != "" {
					t.Errorf("spec changed on error (-before +after):\n%s", diff)
				}
				return
			}
			if err != nil {
				t.Fatalf("InjectOnce() error = %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("InjectOnce() (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantOut, outcomeOf(spec)); diff != "" {
				t.Errorf("OCI spec after InjectOnce() (-want +got):\n%s", diff)
			}

			// Injecting again, as a second component downstream would,
			// changes nothing.
			again, err := deepCopy(spec)
			if err != nil {
				t.Fatal(err)
			}
			res, err := InjectOnce(again, append(tt.devices, tt.pre...), cache)
			if err != nil {
				t.Fatalf("second InjectOnce() error = %v", err)
			}
			if len(res.Injected) != 0 {
				t.Errorf("second InjectOnce() injected %v again", res.Injected)
			}
			if diff := cmp.Diff(spec, again, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("second InjectOnce() changed the spec (-first +second):\n%s", diff)
			}
		})
	}
	if _, err := InjectOnce(baseSpec(nil), []string{"sriov-cdi.io/vf=0000:99:00.0"}, cache); !errors.Is(err, ErrUnresolvable) {
		t.Errorf("error %v does not wrap ErrUnresolvable", err)
	}
}

func TestContentsHas(t *testing.T) {
	c := ContentsOf([]string{"/dev/vfio/41", "/dev/iommu"}, []string{"A=1", "B=2"})
	tests := []struct {
		name  string
		edits *cdispec.ContainerEdits
		want  bool
	}{
		{"nodes and env present", &cdispec.ContainerEdits{DeviceNodes: []*cdispec.DeviceNode{{Path: "/dev/vfio/41"}}, Env: []string{"A=1"}}, true},
		{"a node missing", &cdispec.ContainerEdits{DeviceNodes: []*cdispec.DeviceNode{{Path: "/dev/vfio/41"}, {Path: "/dev/vfio/devices/vfio0"}}}, false},
		{"env with another value", &cdispec.ContainerEdits{Env: []string{"A=2"}}, false},
		{"nothing recognisable", &cdispec.ContainerEdits{Mounts: []*cdispec.Mount{{HostPath: "/x", ContainerPath: "/x"}}}, false},
		{"nil", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := c.Has(tt.edits); got != tt.want {
				t.Errorf("Has() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseAnnotations(t *testing.T) {
	got, err := ParseAnnotations(map[string]string{
		"cdi.k8s.io/b":       devVF0 + "," + devNVMe,
		"cdi.k8s.io/a":       devNet,
		"io.kubernetes.x":    "not=a/cdi,request",
		"cdi.k8s.io.similar": "junk",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []AnnotationRequest{{Key: "cdi.k8s.io/a", Devices: []string{devNet}}, {Key: "cdi.k8s.io/b", Devices: []string{devVF0, devNVMe}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseAnnotations (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"", devVF0 + ",", " " + devVF0, "vendor.com/class", "vendor.com/class=dev=x"} {
		if _, err := ParseAnnotations(map[string]string{"cdi.k8s.io/x": bad}); err == nil {
			t.Errorf("ParseAnnotations(%q) accepted it", bad)
		}
	}
}

// FuzzParseAnnotations checks our parser against the CDI library's on two
// annotations at once: the same inputs are accepted; there is one request
// per annotation key with the prefix, sorted by key; each request's devices
// joined by ',' give back that key's own value, and each device splits into
// vendor/class=name and composes back; together they are the library's
// devices (the library's order follows map iteration, so both are sorted).
func FuzzParseAnnotations(f *testing.F) {
	for _, seed := range []struct{ key, value string }{
		{"cdi.k8s.io/x", devVF0},
		{"cdi.k8s.io/sriov-cdi.io_0000_3b_02.0", devVF0 + "," + devNVMe},
		{"cdi.k8s.io/x", ""},
		{"cdi.k8s.io/x", ","},
		{"cdi.k8s.io/x", "vendor.com/class=dev,"},
		{"cdi.k8s.io/x", "vendor.com/class=0000:3b:02.0 "},
		{"cdi.k8s.io/x", "a/b=c=d"},
		{"cdi.k8s.io/x", "1vendor.com/class=dev"},
		{"cdi.k8s.io/x", "vendor.com/cla.ss=dev"},
		{"other/x", "anything"},
		{"cdi.k8s.io/", "v.com/c=d"},
	} {
		// Alone (the second key equal to the first), and next to a
		// second annotation that sorts before it.
		f.Add(seed.key, seed.value, seed.key, seed.value)
		f.Add(seed.key, seed.value, "cdi.k8s.io/a", devNet)
	}
	f.Fuzz(func(t *testing.T, key1, value1, key2, value2 string) {
		ann := map[string]string{key1: value1, key2: value2}
		got, err := ParseAnnotations(ann)
		_, libDevices, libErr := cdilib.ParseAnnotations(ann)
		if (err == nil) != (libErr == nil) {
			t.Fatalf("ParseAnnotations(%q): ours %v, library %v", ann, err, libErr)
		}
		if err != nil {
			return
		}
		var wantKeys []string
		for k := range ann {
			if strings.HasPrefix(k, AnnotationPrefix) {
				wantKeys = append(wantKeys, k)
			}
		}
		slices.Sort(wantKeys)
		var keys, devices []string
		for _, r := range got {
			keys = append(keys, r.Key)
			if j := strings.Join(r.Devices, ","); j != ann[r.Key] {
				t.Fatalf("devices %q of %q do not join back to its value %q", r.Devices, r.Key, ann[r.Key])
			}
			for _, d := range r.Devices {
				vendor, class, name, err := parser.ParseQualifiedName(d)
				if err != nil || vendor+"/"+class+"="+name != d {
					t.Fatalf("device %q of %q does not split and compose back: %q/%q=%q, %v", d, r.Key, vendor, class, name, err)
				}
			}
			devices = append(devices, r.Devices...)
		}
		if diff := cmp.Diff(wantKeys, keys); diff != "" {
			t.Fatalf("request keys (-want +got):\n%s", diff)
		}
		slices.Sort(devices)
		slices.Sort(libDevices)
		if diff := cmp.Diff(libDevices, devices); diff != "" {
			t.Fatalf("devices differ from the library's (-library +ours):\n%s", diff)
		}
	})
}
