package pool

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
	"github.com/sriov-cdi/sriov-cdi/sysfs/sample"
)

func mustConfig(t *testing.T, y string) *config.Config {
	t.Helper()
	c, err := config.Parse("test.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// host: root port 00:01.0 (group 1); PF 3b:00.0 i40e with 4 VFs (groups
// 10-13), VF 3 bound to vfio-pci without /dev/vfio node; a two-function
// device 5e:00.{0,1} in one group 20 (GPU + audio); 5f:00.0 in group 21 with
// 5f:00.1 whose netdev the host uses; 60:00.0 in group 22 with an nvme
// controller 60:00.1; 61:00.0 without IOMMU group.
func testHost() *sysfs.Host {
	pf := &sysfs.Device{Address: "0000:3b:00.0", Vendor: "8086", Device: "1572", Class: "020000", Driver: "i40e", NUMANode: 0, IOMMUGroup: "2", VFIndex: -1,
		SRIOV:   &sysfs.SRIOV{TotalVFs: 8, NumVFs: 4, VFs: []sysfs.Address{"0000:3b:02.0", "0000:3b:02.1", "0000:3b:02.2", "0000:3b:02.3"}},
		Netdevs: []sysfs.Netdev{{Name: "ens1f0", OperState: "up", LinkType: "ether", HostUse: "holds address 192.0.2.1"}}}
	devs := []*sysfs.Device{
		{Address: "0000:00:01.0", Vendor: "8086", Device: "2030", Class: "060400", Driver: "pcieport", NUMANode: 0, IOMMUGroup: "1", VFIndex: -1},
		pf,
	}
	for i, drv := range []string{"iavf", "iavf", "", "vfio-pci"} {
		devs = append(devs, &sysfs.Device{Address: pf.SRIOV.VFs[i], Vendor: "8086", Device: "154c", Class: "020000", Driver: drv, NUMANode: 0,
			IOMMUGroup: []string{"10", "11", "12", "13"}[i], PhysFn: pf.Address, VFIndex: i})
	}
	devs = append(devs,
		&sysfs.Device{Address: "0000:5e:00.0", Vendor: "10de", Device: "20b5", Class: "030200", Driver: "", NUMANode: 1, IOMMUGroup: "20", VFIndex: -1},
		&sysfs.Device{Address: "0000:5e:00.1", Vendor: "10de", Device: "1aef", Class: "040300", Driver: "snd_hda_intel", NUMANode: 1, IOMMUGroup: "20", VFIndex: -1},
		&sysfs.Device{Address: "0000:5f:00.0", Vendor: "8086", Device: "1521", Class: "020000", Driver: "igb", NUMANode: 1, IOMMUGroup: "21", VFIndex: -1},
		&sysfs.Device{Address: "0000:5f:00.1", Vendor: "8086", Device: "1521", Class: "020000", Driver: "igb", NUMANode: 1, IOMMUGroup: "21", VFIndex: -1,
			Netdevs: []sysfs.Netdev{{Name: "eno2", OperState: "up", HostUse: "carries the default route"}}},
		&sysfs.Device{Address: "0000:60:00.0", Vendor: "1af4", Device: "1041", Class: "020000", Driver: "virtio-pci", NUMANode: 1, IOMMUGroup: "22", VFIndex: -1},
		&sysfs.Device{Address: "0000:60:00.1", Vendor: "144d", Device: "a808", Class: "010802", Driver: "nvme", NUMANode: 1, IOMMUGroup: "22", VFIndex: -1},
		&sysfs.Device{Address: "0000:61:00.0", Vendor: "1af4", Device: "1041", Class: "020000", Driver: "", NUMANode: -1, VFIndex: -1},
	)
	return sysfs.NewHost(devs, nil)
}

func TestBuild(t *testing.T) {
	c := mustConfig(t, `
resourcePrefix: example.com
pools:
  - name: vf
    mode: vfio
    selectors: {vendors: ["8086"], devices: ["154c"]}
  - name: gpu
    mode: vfio
    selectors: {vendors: ["10de"], devices: ["20b5"]}
  - name: igb
    mode: vfio
    allowUnbindFrom: [igb]
    selectors: {pciAddresses: ["0000:5f:00.0"]}
  - name: virtio
    mode: vfio
    allowUnbindFrom: [virtio-pci]
    selectors: {vendors: ["1af4"]}
  - name: vf-kernel
    mode: kernel
    selectors: {vendors: ["8086"]}
`)
	plan := Build(c, testHost())
	type unit struct {
		ID      sysfs.Address
		Members []sysfs.Address
		Healthy bool
		Reason  string
	}
	got := map[string][]unit{}
	for _, p := range plan.Pools {
		got[p.Resource] = []unit{}
		for _, u := range p.Units {
			got[p.Resource] = append(got[p.Resource], unit{u.ID, u.Members, u.Healthy, u.Reason})
		}
	}
	want := map[string][]unit{
		"example.com/vf": {
			{"0000:3b:02.0", []sysfs.Address{"0000:3b:02.0"}, true, ""},
			{"0000:3b:02.1", []sysfs.Address{"0000:3b:02.1"}, true, ""},
			{"0000:3b:02.2", []sysfs.Address{"0000:3b:02.2"}, true, ""},
			{"0000:3b:02.3", []sysfs.Address{"0000:3b:02.3"}, false, "0000:3b:02.3 is bound to vfio-pci but /dev/vfio/13 is missing"},
		},
		// The audio function is free to travel with the GPU? No: it is
		// bound to snd_hda_intel, which the pool may not unbind.
		"example.com/gpu":       {},
		"example.com/igb":       {},
		"example.com/virtio":    {},
		"example.com/vf-kernel": {},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("units (-want +got)\n%s", diff)
	}
	wantUnselected := []Refusal{
		{"0000:00:01.0", "vf-kernel", "bridge or host controller (class 060400); never handed out"},
		{"0000:3b:00.0", "vf-kernel", "PF with 4 VFs enabled; its VFs are the candidates"},
		{"0000:5e:00.0", "gpu", "group 20: 0000:5e:00.1 is bound to snd_hda_intel, which pool \"gpu\" may not unbind (add \"snd_hda_intel\" to allowUnbindFrom if that is intended)"},
		{"0000:5e:00.1", "", "matches no pool's selectors"},
		{"0000:5f:00.0", "igb", "group 21 also holds 0000:5f:00.1 bound to igb, in use by host (netdev eno2 carries the default route)"},
		{"0000:5f:00.1", "vf-kernel", "netdev eno2 carries the default route"},
		{"0000:60:00.0", "virtio", "group 22: 0000:60:00.1 is bound to nvme, which pool \"virtio\" may not unbind (add \"nvme\" to allowUnbindFrom if that is intended)"},
		{"0000:60:00.1", "", "matches no pool's selectors"},
		{"0000:61:00.0", "virtio", "no IOMMU group: enable the IOMMU (intel_iommu=on or amd_iommu=on on the kernel command line) to use vfio"},
	}
	if diff := cmp.Diff(wantUnselected, plan.Unselected); diff != "" {
		t.Errorf("unselected (-want +got)\n%s", diff)
	}
	wantNotes := []Refusal{
		{"0000:3b:02.0", "vf", `also matches pool "vf-kernel"; the first pool in the config wins`},
		{"0000:3b:02.1", "vf", `also matches pool "vf-kernel"; the first pool in the config wins`},
		{"0000:3b:02.2", "vf", `also matches pool "vf-kernel"; the first pool in the config wins`},
		{"0000:3b:02.3", "vf", `also matches pool "vf-kernel"; the first pool in the config wins`},
		{"0000:5f:00.0", "igb", `also matches pool "vf-kernel"; the first pool in the config wins`},
	}
	if diff := cmp.Diff(wantNotes, plan.Notes); diff != "" {
		t.Errorf("notes (-want +got)\n%s", diff)
	}
}

func TestBuildGroupTravelsAsUnit(t *testing.T) {
	c := mustConfig(t, `
pools:
  - name: gpu
    mode: vfio
    allowUnbindFrom: [snd_hda_intel]
    selectors: {vendors: ["10de"], devices: ["20b5"]}
  - name: host-in-use
    mode: vfio
    selectors: {pciAddresses: ["0000:3b:00.0"]}
`)
	h := testHost()
	plan := Build(c, h)
	gpu := plan.Pool("gpu")
	if len(gpu.Units) != 1 {
		t.Fatalf("gpu units = %+v", gpu.Units)
	}
	if diff := cmp.Diff([]sysfs.Address{"0000:5e:00.0", "0000:5e:00.1"}, gpu.Units[0].Members); diff != "" {
		t.Errorf("members (-want +got)\n%s", diff)
	}
	if gpu.Units[0].ID != "0000:5e:00.0" || gpu.Units[0].Group != "20" || gpu.Units[0].NUMANode != 1 {
		t.Errorf("unit = %+v", gpu.Units[0])
	}
}

func TestBuildKernelHealth(t *testing.T) {
	c := mustConfig(t, `pools: [{name: k, mode: kernel, selectors: {devices: ["154c"]}}]`)
	h := testHost()
	h.Device("0000:3b:00.0").Netdevs[0].OperState = "down"
	plan := Build(c, h)
	for _, u := range plan.Pool("k").Units {
		if u.Healthy {
			t.Errorf("%s healthy with PF link down", u.ID)
		}
	}
	if got := plan.Pool("k").Unit("0000:3b:02.2").Reason; got != "no driver bound; a kernel pool hands devices out with their driver" {
		t.Errorf("reason = %q", got)
	}
	if got := plan.Pool("k").Unit("0000:3b:02.0").Reason; got != "PF 0000:3b:00.0 link ens1f0 is down" {
		t.Errorf("reason = %q", got)
	}
}

// TestBuildRDMAHealth: in an rdma pool a function without an RDMA device,
// or whose RDMA nodes are missing under /dev, is unhealthy with the
// reason; one with its nodes is healthy and its unit carries them.
func TestBuildRDMAHealth(t *testing.T) {
	c := mustConfig(t, `pools: [{name: roce, rdma: true, selectors: {devices: ["154c"], drivers: ["iavf"]}}]`)
	h := testHost()
	h.Device("0000:3b:02.0").RDMA = []sysfs.RDMADevice{{Name: "irdma0", Nodes: []string{"uverbs0"}}}
	h.Device("0000:3b:02.1").RDMA = []sysfs.RDMADevice{{Name: "irdma1", Nodes: []string{"uverbs1"}, Missing: []string{"uverbs1"}}}
	h.Device("0000:3b:00.0").Netdevs[0].HostUse = ""
	plan := Build(c, h)
	type row struct {
		ID      sysfs.Address
		Healthy bool
		Reason  string
		RDMA    []sysfs.RDMADevice
	}
	var got []row
	for _, u := range plan.Pool("roce").Units {
		got = append(got, row{u.ID, u.Healthy, u.Reason, u.RDMA})
	}
	want := []row{
		{"0000:3b:02.0", true, "", []sysfs.RDMADevice{{Name: "irdma0", Nodes: []string{"uverbs0"}}}},
		{"0000:3b:02.1", false, "RDMA device irdma1: /dev/infiniband/uverbs1 missing on the host (is ib_uverbs/ib_umad loaded, and /dev the host's?)",
			[]sysfs.RDMADevice{{Name: "irdma1", Nodes: []string{"uverbs1"}, Missing: []string{"uverbs1"}}}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("units (-want +got)\n%s", diff)
	}
	h.Device("0000:3b:02.0").RDMA = nil
	if u := Build(c, h).Pool("roce").Unit("0000:3b:02.0"); u.Healthy || !strings.HasPrefix(u.Reason, "no RDMA device on the function") {
		t.Errorf("without an RDMA device: healthy %v, reason %q", u.Healthy, u.Reason)
	}
	// Without rdma the same function is healthy.
	c = mustConfig(t, `pools: [{name: k, selectors: {devices: ["154c"], drivers: ["iavf"]}}]`)
	if u := Build(c, h).Pool("k").Unit("0000:3b:02.0"); !u.Healthy {
		t.Errorf("kernel pool without rdma: unhealthy: %s", u.Reason)
	}
}

// TestBuildHostControllerGroup: the ICH9 functions of the real-kernel
// snapshot share group 4 with an LPC bridge; a pool selecting the SATA
// controller must refuse the group, while a root port in a group is left
// alone.
func TestBuildHostControllerGroup(t *testing.T) {
	h, _, err := sample.Scan(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := mustConfig(t, `pools: [{name: sata, mode: vfio, selectors: {pciAddresses: ["0000:00:1f.2"]}}]`)
	plan := Build(c, h)
	if len(plan.Pool("sata").Units) != 0 {
		t.Fatalf("units = %+v", plan.Pool("sata").Units)
	}
	want := Refusal{"0000:00:1f.2", "sata", "group 4 also holds 0000:00:1f.0, a host bridge or controller (class 060100); the group cannot leave the host"}
	if !slices.Contains(plan.Unselected, want) {
		t.Errorf("unselected lacks %+v:\n%+v", want, plan.Unselected)
	}

	// A root port sharing the group (no ACS) is tolerated and not a member.
	port := &sysfs.Device{Address: "0000:00:01.0", Class: "060400", Driver: "pcieport", IOMMUGroup: "9", VFIndex: -1, NUMANode: -1}
	ep := &sysfs.Device{Address: "0000:01:00.0", Vendor: "1af4", Class: "020000", IOMMUGroup: "9", VFIndex: -1, NUMANode: -1}
	plan = Build(mustConfig(t, `pools: [{name: nic, mode: vfio, selectors: {vendors: ["1af4"]}}]`), sysfs.NewHost([]*sysfs.Device{port, ep}, nil))
	if u := plan.Pool("nic").Units; len(u) != 1 || !slices.Equal(u[0].Members, []sysfs.Address{"0000:01:00.0"}) {
		t.Errorf("units = %+v", u)
	}
}

// TestBuildSample plans the bundled real-kernel snapshot with its config.
func TestBuildSample(t *testing.T) {
	h, _, err := sample.Scan(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse("sample", sample.Config())
	if err != nil {
		t.Fatal(err)
	}
	plan := Build(c, h)
	ids := func(p *Pool) []sysfs.Address {
		var out []sysfs.Address
		for _, u := range p.Units {
			out = append(out, u.ID)
		}
		return out
	}
	if diff := cmp.Diff([]sysfs.Address{"0000:01:00.1", "0000:01:00.2", "0000:01:00.3", "0000:01:00.4"}, ids(plan.Pool("nvme-vf"))); diff != "" {
		t.Errorf("nvme-vf (-want +got)\n%s", diff)
	}
	if diff := cmp.Diff([]sysfs.Address{"0000:02:00.1", "0000:02:00.2"}, ids(plan.Pool("nvme-vf-kernel"))); diff != "" {
		t.Errorf("nvme-vf-kernel (-want +got)\n%s", diff)
	}
	if u := plan.Pool("nvme-vf").Unit("0000:01:00.2"); !u.Healthy || u.Group != "8" {
		t.Errorf("bound VF unit = %+v", u)
	}
}

// TestBuildHeld: a function sriov-cdi bound for a vfio pool stays in that
// pool although the selectors no longer match it (its driver is vfio-pci
// now and its netdev is gone); a record naming a kernel pool or a pool no
// longer configured changes nothing.
func TestBuildHeld(t *testing.T) {
	c := mustConfig(t, `
resourcePrefix: example.com
pools:
  - {name: by-driver, mode: vfio, allowUnbindFrom: [iavf], selectors: {drivers: [iavf]}}
  - {name: kernel, mode: kernel, selectors: {drivers: [vfio-pci]}}
`)
	for _, tc := range []struct {
		name     string
		held     Held
		byDriver []sysfs.Address
		kernel   []sysfs.Address
	}{
		{"no records", nil, []sysfs.Address{"0000:3b:02.0", "0000:3b:02.1"}, []sysfs.Address{"0000:3b:02.3"}},
		{"bound for the vfio pool", Held{"0000:3b:02.3": "by-driver"}, []sysfs.Address{"0000:3b:02.0", "0000:3b:02.1", "0000:3b:02.3"}, nil},
		{"record names a kernel pool", Held{"0000:3b:02.3": "kernel"}, []sysfs.Address{"0000:3b:02.0", "0000:3b:02.1"}, []sysfs.Address{"0000:3b:02.3"}},
		{"record names a pool gone from the config", Held{"0000:3b:02.3": "renamed"}, []sysfs.Address{"0000:3b:02.0", "0000:3b:02.1"}, []sysfs.Address{"0000:3b:02.3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan := Build(c, testHost(), WithHeld(tc.held))
			unitIDs := func(p *Pool) []sysfs.Address {
				var out []sysfs.Address
				for _, u := range p.Units {
					out = append(out, u.ID)
				}
				return out
			}
			if diff := cmp.Diff(tc.byDriver, unitIDs(plan.Pool("by-driver"))); diff != "" {
				t.Errorf("by-driver units (-want +got)\n%s", diff)
			}
			if diff := cmp.Diff(tc.kernel, unitIDs(plan.Pool("kernel"))); diff != "" {
				t.Errorf("kernel units (-want +got)\n%s", diff)
			}
		})
	}
}

// TestVFLinkHealth: a kernel-pool VF whose own link goes down after it was
// seen up is unhealthy until it is up again; an idle VF that never came up
// is healthy; a netdev that vanished (moved into a pod, unbound) is
// forgotten, so it comes back healthy while down.
func TestVFLinkHealth(t *testing.T) {
	c := mustConfig(t, `pools: [{name: k, mode: kernel, selectors: {pciAddresses: ["0000:3b:02.0"]}}]`)
	host := func(state string, netdev bool) *sysfs.Host {
		h := testHost()
		d := h.Device("0000:3b:02.0")
		d.Netdevs = nil
		if netdev {
			d.Netdevs = []sysfs.Netdev{{Name: "ens1f0v0", OperState: state}}
		}
		h.Device("0000:3b:00.0").Netdevs[0].HostUse = "" // PF link up, not our concern here
		return h
	}
	var lh LinkHistory
	for _, step := range []struct {
		name    string
		h       *sysfs.Host
		healthy bool
		reason  string
	}{
		{"idle VF, link never up", host("down", true), true, ""},
		{"link up", host("up", true), true, ""},
		{"link down after up", host("down", true), false, "link ens1f0v0 went down after being up"},
		{"still down", host("down", true), false, "link ens1f0v0 went down after being up"},
		{"up again", host("up", true), true, ""},
		{"netdev moved into a pod", host("", false), true, ""},
		{"back on the host, down", host("down", true), true, ""},
	} {
		u := Build(c, step.h, WithLinkHistory(lh)).Pool("k").Unit("0000:3b:02.0")
		if u == nil || u.Healthy != step.healthy || u.Reason != step.reason {
			t.Fatalf("%s: unit %+v; want healthy=%v reason %q", step.name, u, step.healthy, step.reason)
		}
		lh = lh.SeenUp(step.h)
	}
}

// A vhost-user pool has count slots on the switch's NUMA node, takes no
// PCI function, and leaves every function to the other pools.
func TestBuildVhostUser(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  string
		want []Unit
	}{
		{"numa node", `{name: vhu, mode: vhost-user, vhostUser: {count: 3, baseDir: /run/vhu, numaNode: 1}}`, []Unit{
			{ID: "slot-0", NUMANode: 1, VFIndex: -1, Healthy: true},
			{ID: "slot-1", NUMANode: 1, VFIndex: -1, Healthy: true},
			{ID: "slot-2", NUMANode: 1, VFIndex: -1, Healthy: true},
		}},
		{"no numa node", `{name: vhu, mode: vhost-user, vhostUser: {count: 1, baseDir: /run/vhu}}`, []Unit{
			{ID: "slot-0", NUMANode: -1, VFIndex: -1, Healthy: true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustConfig(t, "pools:\n  - "+tc.cfg+"\n  - {name: vf, mode: kernel, selectors: {vendors: [\"8086\"]}}\n")
			all := Build(c, testHost())
			only := Build(mustConfig(t, `pools: [{name: vf, mode: kernel, selectors: {vendors: ["8086"]}}]`), testHost())
			if diff := cmp.Diff(tc.want, all.Pool("vhu").Units); diff != "" {
				t.Errorf("slots (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(only.Pool("vf").Units, all.Pool("vf").Units); diff != "" {
				t.Errorf("the vhost-user pool changed another pool's units (-without +with):\n%s", diff)
			}
			if diff := cmp.Diff(only.Unselected, all.Unselected); diff != "" {
				t.Errorf("the vhost-user pool changed the refusals (-without +with):\n%s", diff)
			}
		})
	}
	// Prefer treats slots like units without a PF: must-include first,
	// then the switch's node.
	got := Prefer([]Candidate{{"slot-0", 1, ""}, {"slot-1", 1, ""}, {"slot-2", 0, ""}}, []sysfs.Address{"slot-1"}, 2, config.PolicySpread)
	if diff := cmp.Diff([]sysfs.Address{"slot-1", "slot-0"}, got); diff != "" {
		t.Errorf("Prefer over slots (-want +got):\n%s", diff)
	}
}

// TestBuildRefusesCrossAPIOverlap: a function matched by a deviceplugin
// pool and a dra pool goes to neither (kubelet would count it twice), with
// both names; an overlap within one API keeps "first pool wins".
func TestBuildRefusesCrossAPIOverlap(t *testing.T) {
	c := mustConfig(t, `
resourcePrefix: example.com
pools:
  - name: vf-dp
    selectors: {vendors: ["8086"], devices: ["154c"]}
  - name: vf-dra
    api: dra
    selectors: {pciAddresses: ["0000:3b:02.0", "0000:3b:02.1"]}
  - name: vf-dp2
    selectors: {pciAddresses: ["0000:3b:02.2"]}
`)
	plan := Build(c, testHost())
	var ids []sysfs.Address
	for _, u := range plan.Pool("vf-dp").Units {
		ids = append(ids, u.ID)
	}
	if diff := cmp.Diff([]sysfs.Address{"0000:3b:02.2", "0000:3b:02.3"}, ids); diff != "" {
		t.Errorf("vf-dp units (-want +got):\n%s", diff)
	}
	if n := len(plan.Pool("vf-dra").Units); n != 0 {
		t.Errorf("vf-dra has %d units, want 0", n)
	}
	want := `matches pool "vf-dp" (api: deviceplugin) and pool "vf-dra" (api: dra); a device is never served by both APIs`
	for _, a := range []sysfs.Address{"0000:3b:02.0", "0000:3b:02.1"} {
		i := slices.IndexFunc(plan.Unselected, func(r Refusal) bool { return r.Address == a })
		if i < 0 || !strings.Contains(plan.Unselected[i].Reason, want) {
			t.Errorf("%s: refusal %+v, want one containing %q", a, plan.Unselected, want)
		}
	}
	// 3b:02.2 matches vf-dp and vf-dp2 (same API): the first wins, with a note.
	if !slices.ContainsFunc(plan.Notes, func(r Refusal) bool {
		return r.Address == "0000:3b:02.2" && strings.Contains(r.Reason, "first pool in the config wins")
	}) {
		t.Errorf("no first-wins note for 0000:3b:02.2: %+v", plan.Notes)
	}
}
