package dra

import (
	"maps"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/dynamic-resource-allocation/deviceattribute"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
	"github.com/sriov-cdi/sriov-cdi/sysfs/sysfstest"
)

// fixture writes a host of pfs PFs with vfs VFs each (sysfstest) and plans
// cfg on it.
func fixture(t testing.TB, pfs, vfs int, cfg string) (*pool.Plan, *sysfs.Host) {
	t.Helper()
	return planOf(t, sysfstest.SRIOVNICHost(filepath.Join(t.TempDir(), "host"), pfs, vfs), cfg)
}

// planOf writes b and plans cfg over it.
func planOf(t testing.TB, b *sysfstest.Builder, cfg string) (*pool.Plan, *sysfs.Host) {
	t.Helper()
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	h, err := sysfs.Scan(sysfs.Root{Sys: b.Sys(), Dev: b.Dev()})
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse("test.yaml", []byte(cfg))
	if err != nil {
		t.Fatal(err)
	}
	return pool.Build(c, h), h
}

const draKernel = `
resourcePrefix: example.com
pools:
  - name: vf
    api: dra
    selectors: {vendors: ["8086"], devices: ["154c"]}
  - name: other
    selectors: {vendors: ["1b36"]}
`

const draVFIO = `
resourcePrefix: example.com
pools:
  - name: vfio
    api: dra
    mode: vfio
    selectors: {vendors: ["8086"], devices: ["154c"]}
`

func TestDeviceForAttributes(t *testing.T) {
	for _, tc := range []struct {
		name, cfg string
		pool      string
		want      map[resourceapi.QualifiedName]resourceapi.DeviceAttribute
	}{
		{
			name: "kernel VF", cfg: draKernel, pool: "vf",
			want: map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
				deviceattribute.StandardDeviceAttributePCIBusID: str("0000:02:00.2"),
				deviceattribute.StandardDeviceAttributePCIeRoot: str("pci0000:00"),
				deviceattribute.StandardDeviceAttributeNUMANode: integer(1),
				AttrPool:       str("vf"),
				AttrIOMMUGroup: integer(9), AttrPF: str("0000:02:00.0"), AttrPFNetdev: str("ens1f0"), AttrVFIndex: integer(1),
				AttrVendor: str("8086"), AttrDevice: str("154c"), AttrDriver: str("iavf"), AttrLinkType: str("ether"),
			},
		},
		{
			name: "vfio VF: driver is what the container gets", cfg: draVFIO, pool: "vfio",
			want: map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
				deviceattribute.StandardDeviceAttributePCIBusID: str("0000:02:00.2"),
				deviceattribute.StandardDeviceAttributePCIeRoot: str("pci0000:00"),
				deviceattribute.StandardDeviceAttributeNUMANode: integer(1),
				AttrPool:       str("vfio"),
				AttrIOMMUGroup: integer(9), AttrPF: str("0000:02:00.0"), AttrPFNetdev: str("ens1f0"), AttrVFIndex: integer(1),
				AttrVendor: str("8086"), AttrDevice: str("154c"), AttrDriver: str("vfio-pci"), AttrLinkType: str("ether"),
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan, h := fixture(t, 2, 2, tc.cfg)
			p := plan.Pool(tc.pool)
			u := p.Unit("0000:02:00.2")
			if u == nil {
				t.Fatalf("no unit 0000:02:00.2 in %+v", p.Units)
			}
			d := DeviceFor(p, u, h)
			if d.Name != "pci-0000-02-00-2" {
				t.Errorf("name = %q", d.Name)
			}
			if diff := cmp.Diff(tc.want, d.Attributes); diff != "" {
				t.Errorf("attributes (-want +got):\n%s", diff)
			}
			if n := len(d.Attributes) + len(d.Capacity); n > resourceapi.ResourceSliceMaxAttributesAndCapacitiesPerDevice {
				t.Errorf("%d attributes and capacities, the API allows %d", n, resourceapi.ResourceSliceMaxAttributesAndCapacitiesPerDevice)
			}
		})
	}
}

// TestDeviceForGroup: a vfio unit of a two-function IOMMU group is one
// device named by its lowest address, with functions 2 (a single-function
// unit publishes no functions attribute: see TestDeviceForAttributes).
func TestDeviceForGroup(t *testing.T) {
	b := sysfstest.New(filepath.Join(t.TempDir(), "host"))
	b.AddPF(sysfstest.Function{Addr: "0000:02:00.0", Vendor: "8086", Device: "1572", Driver: "i40e", NUMA: 0, Group: "1", TotalVFs: 2,
		Netdevs: []sysfstest.Netdev{{Name: "ens1f0", OperState: "up", Carrier: true}}},
		sysfstest.Function{Addr: "0000:02:00.1", Vendor: "8086", Device: "154c", Driver: "vfio-pci", NUMA: 0, Group: "7"},
		sysfstest.Function{Addr: "0000:02:00.2", Vendor: "8086", Device: "154c", Driver: "vfio-pci", NUMA: 0, Group: "7"})
	plan, h := planOf(t, b, draVFIO)
	p := plan.Pool("vfio")
	if p == nil || len(p.Units) != 1 {
		t.Fatalf("vfio pool = %+v, want one unit (group 7)", p)
	}
	d := DeviceFor(p, &p.Units[0], h)
	if d.Name != "pci-0000-02-00-1" {
		t.Errorf("name = %q, want pci-0000-02-00-1", d.Name)
	}
	if got, want := d.Attributes[AttrFunctions], integer(2); !cmp.Equal(got, want) {
		t.Errorf("functions = %v, want 2", got)
	}
	if got, want := d.Attributes[AttrIOMMUGroup], integer(7); !cmp.Equal(got, want) {
		t.Errorf("iommuGroup = %v, want 7", got)
	}
}

type poolSlices [][]string

func names(t *testing.T, plan *pool.Plan, h *sysfs.Host, o PublishOptions) map[string]poolSlices {
	t.Helper()
	out := map[string]poolSlices{}
	for name, p := range Resources(plan, h, o).Pools {
		var ps poolSlices
		for _, s := range p.Slices {
			var ns []string
			for _, d := range s.Devices {
				ns = append(ns, d.Name)
				if len(d.Taints) > 0 {
					ns[len(ns)-1] += " tainted"
				}
			}
			ps = append(ps, ns)
		}
		out[name] = ps
	}
	return out
}

func TestResourcesSlicing(t *testing.T) {
	plan, h := fixture(t, 2, 3, draKernel)
	got := names(t, plan, h, PublishOptions{Driver: "example.com"})
	want := map[string]poolSlices{"vf": {
		{"pci-0000-01-00-1", "pci-0000-01-00-2", "pci-0000-01-00-3"},
		{"pci-0000-02-00-1", "pci-0000-02-00-2", "pci-0000-02-00-3"},
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("one slice per PF, only the dra pool (-want +got):\n%s", diff)
	}

	// An unhealthy VF: without taints it leaves its slice and no other
	// device moves; with taints it stays, tainted.
	p := plan.Pool("vf")
	p.Unit("0000:01:00.2").Healthy, p.Unit("0000:01:00.2").Reason = false, "no driver bound"
	got = names(t, plan, h, PublishOptions{Driver: "example.com"})
	want = map[string]poolSlices{"vf": {
		{"pci-0000-01-00-1", "pci-0000-01-00-3"},
		{"pci-0000-02-00-1", "pci-0000-02-00-2", "pci-0000-02-00-3"},
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("unhealthy without taints (-want +got):\n%s", diff)
	}
	got = names(t, plan, h, PublishOptions{Driver: "example.com", Taints: true, Unhealthy: map[sysfs.Address]string{"0000:02:00.3": "IOMMU group changed"}})
	want = map[string]poolSlices{"vf": {
		{"pci-0000-01-00-1", "pci-0000-01-00-2 tainted", "pci-0000-01-00-3"},
		{"pci-0000-02-00-1", "pci-0000-02-00-2", "pci-0000-02-00-3 tainted"},
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("unhealthy with taints (-want +got):\n%s", diff)
	}
	// Every unit unhealthy, no taints: the slices stay, empty.
	for i := range p.Units {
		p.Units[i].Healthy = false
	}
	got = names(t, plan, h, PublishOptions{Driver: "example.com"})
	if diff := cmp.Diff(map[string]poolSlices{"vf": {nil, nil}}, got); diff != "" {
		t.Errorf("all unhealthy (-want +got):\n%s", diff)
	}
}

func TestResourcesEmptyPoolPublishesOneEmptySlice(t *testing.T) {
	plan, h := fixture(t, 1, 0, draKernel)
	got := Resources(plan, h, PublishOptions{Driver: "example.com"})
	if n := len(got.Pools["vf"].Slices); n != 1 || len(got.Pools["vf"].Slices[0].Devices) != 0 {
		t.Errorf("empty pool: %+v, want one empty slice", got.Pools["vf"])
	}
}

func TestResourcesLimits(t *testing.T) {
	// 200 VFs on one PF: 128 + 72 without taints, 64 x 3 + 8 with.
	plan, h := fixture(t, 1, 200, draKernel)
	for _, tc := range []struct {
		taints bool
		want   []int
	}{{false, []int{128, 72}}, {true, []int{64, 64, 64, 8}}} {
		var got []int
		for _, s := range Resources(plan, h, PublishOptions{Driver: "example.com", Taints: tc.taints}).Pools["vf"].Slices {
			got = append(got, len(s.Devices))
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("taints=%v: devices per slice (-want +got):\n%s", tc.taints, diff)
		}
	}
}

func TestBucket(t *testing.T) {
	tests := []struct {
		u    pool.Unit
		per  int
		want string
	}{
		{pool.Unit{ID: "0000:3b:02.0", PF: "0000:3b:00.0", VFIndex: 0}, 128, "vf/0000:3b:00.0/0000"},
		{pool.Unit{ID: "0000:3b:12.0", PF: "0000:3b:00.0", VFIndex: 127}, 128, "vf/0000:3b:00.0/0000"},
		{pool.Unit{ID: "0000:3b:12.1", PF: "0000:3b:00.0", VFIndex: 128}, 128, "vf/0000:3b:00.0/0001"},
		{pool.Unit{ID: "0000:3b:12.1", PF: "0000:3b:00.0", VFIndex: 64}, 64, "vf/0000:3b:00.0/0001"},
		{pool.Unit{ID: "0000:5e:00.0", VFIndex: -1}, 128, "fn/0000:5e/0000"},
		{pool.Unit{ID: "0000:5e:1f.7", VFIndex: -1}, 128, "fn/0000:5e/0001"},
		{pool.Unit{ID: "0000:5e:1f.7", VFIndex: -1}, 64, "fn/0000:5e/0003"},
		{pool.Unit{ID: "slot-0", VFIndex: -1}, 128, "slot/0000"},
		{pool.Unit{ID: "slot-127", VFIndex: -1}, 128, "slot/0000"},
		{pool.Unit{ID: "slot-128", VFIndex: -1}, 128, "slot/0001"},
		{pool.Unit{ID: "slot-1023", VFIndex: -1}, 64, "slot/0015"},
	}
	for _, tc := range tests {
		if got := bucket(&tc.u, tc.per); got != tc.want {
			t.Errorf("bucket(%s, %d) = %q, want %q", tc.u.ID, tc.per, got, tc.want)
		}
	}
}

const draVhost = `
resourcePrefix: example.com
pools:
  - name: vhu
    api: dra
    mode: vhost-user
    vhostUser: {count: 130, baseDir: /run/vhu, socketMode: client, numaNode: 1}
  - name: vhu-nonuma
    api: dra
    mode: vhost-user
    vhostUser: {count: 1, baseDir: /run/vhu}
  - name: vhu-dp
    mode: vhost-user
    vhostUser: {count: 1, baseDir: /run/vhu}
`

// A vhost-user pool with api: dra publishes one device per slot, named by
// the slot, with pool, mode, NUMA node and socket mode and no PCI
// attributes; 130 slots take two slices; device-plugin pools are not
// published.
func TestResourcesVhostUser(t *testing.T) {
	plan, h := fixture(t, 1, 1, draVhost)
	res := Resources(plan, h, PublishOptions{Driver: "example.com"})
	if _, ok := res.Pools["vhu-dp"]; ok || len(res.Pools) != 2 {
		t.Fatalf("pools = %v, want vhu and vhu-nonuma", slices.Sorted(maps.Keys(res.Pools)))
	}
	for _, tc := range []struct {
		pool, device string
		slices       int
		want         map[resourceapi.QualifiedName]resourceapi.DeviceAttribute
	}{
		{"vhu", "slot-129", 2, map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
			AttrPool: str("vhu"), AttrSocketMode: str("client"),
			deviceattribute.StandardDeviceAttributeNUMANode: integer(1),
		}},
		{"vhu-nonuma", "slot-0", 1, map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
			AttrPool: str("vhu-nonuma"), AttrSocketMode: str("server"),
		}},
	} {
		rp := res.Pools[tc.pool]
		if len(rp.Slices) != tc.slices {
			t.Errorf("pool %s: %d slices, want %d", tc.pool, len(rp.Slices), tc.slices)
		}
		var got *resourceapi.Device
		for _, s := range rp.Slices {
			for i := range s.Devices {
				if errs := validation.IsDNS1123Label(s.Devices[i].Name); len(errs) > 0 {
					t.Errorf("device name %q: %v", s.Devices[i].Name, errs)
				}
				if s.Devices[i].Name == tc.device {
					got = &s.Devices[i]
				}
			}
		}
		if got == nil {
			t.Errorf("pool %s: no device %s", tc.pool, tc.device)
			continue
		}
		if diff := cmp.Diff(tc.want, got.Attributes); diff != "" {
			t.Errorf("%s/%s attributes (-want +got):\n%s", tc.pool, tc.device, diff)
		}
	}
	// Health reports name the same devices.
	for _, hr := range HealthOf(plan, nil, time.Time{}) {
		if hr.PoolName == "vhu-nonuma" && hr.DeviceName != "slot-0" {
			t.Errorf("health report names %s/%s", hr.PoolName, hr.DeviceName)
		}
	}
}
