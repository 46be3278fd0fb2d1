package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

func TestParseOwnFormat(t *testing.T) {
	in := `
resourcePrefix: example.com
pools:
  - name: vf-vfio
    mode: vfio
    allocationPolicy: pack
    selectors:
      vendors: ["8086"]
      devices: ["154c"]
      pfNames: ["ens1f0#0,2-7"]
  - name: vf-kernel
    selectors:
      - rootDevices: ["0000:3b:00.0"]
      - pciAddresses: ["0000:5E:00.1"]
`
	c, err := Parse("pools.yaml", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		ResourcePrefix: "example.com",
		Source:         "pools.yaml",
		Pools: []Pool{
			{Name: "vf-vfio", Mode: ModeVFIO, API: APIDevicePlugin, BindAt: BindAtAllocate, AllocationPolicy: PolicyPack, AllowUnbindFrom: DefaultAllowUnbindFrom,
				Selectors: SelectorList{{Vendors: []string{"8086"}, Devices: []string{"154c"}, PFNames: []string{"ens1f0#0,2-7"}}}},
			{Name: "vf-kernel", Mode: ModeKernel, API: APIDevicePlugin, AllocationPolicy: PolicySpread,
				Selectors: SelectorList{{RootDevices: []string{"0000:3b:00.0"}}, {PCIAddresses: []string{"0000:5E:00.1"}}}},
		},
	}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
	if got := c.Resource(&c.Pools[0]); got != "example.com/vf-vfio" {
		t.Errorf("Resource = %q", got)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // each must appear in the error
	}{
		{name: "not yaml", in: "pools: [", want: []string{`config "c.yaml": not valid YAML`}},
		{name: "top level list", in: "- a", want: []string{"top level must be an object"}},
		{name: "unknown top-level field", in: "pool: []", want: []string{`unknown field "pool"`}},
		{name: "unknown selector field", in: "pools: [{name: a, selectors: {vendor: ['8086']}}]", want: []string{`unknown field "vendor"`}},
		{name: "wrong type", in: "pools: [{name: a, selectors: {numaNodes: ['x']}}]", want: []string{`numaNodes`}},
		{name: "no pools", in: "resourcePrefix: example.com", want: []string{"pools: empty"}},
		{
			name: "every pool problem at once",
			in: `resourcePrefix: nodot
pools:
  - name: bad!name
    mode: passthrough
    allocationPolicy: random
    selectors: {vendors: ["80861"], devices: ["zz"], pciAddresses: ["3b:00.0"], pfNames: ["ens1#7-2"], rootDevices: ["0000:3b:00.0#x"], numaNodes: [-2]}
  - name: k
    mode: kernel
    bindAt: startup
    allowUnbindFrom: [iavf]
    restoreOnRelease: true
    selectors: {vendors: ["8086"]}
  - name: k
    selectors: {}
  - name: v
    mode: vfio
    bindAt: never
`,
			want: []string{
				`config "c.yaml" is invalid:`,
				`resourcePrefix: "nodot" is not a DNS subdomain`,
				`pools[0] ("bad!name").name: "bad!name" must be`,
				`pools[0] ("bad!name").mode: "passthrough" is not a mode; use "vfio"`,
				`pools[0] ("bad!name").allocationPolicy: "random"`,
				`pools[0] ("bad!name").selectors[0].vendors: "80861" is not a 4-digit hex vendor ID`,
				`selectors[0].devices: "zz"`,
				`selectors[0].pciAddresses: invalid PCI address "3b:00.0"`,
				`selectors[0].pfNames: VF range "7-2": 2 is below 7`,
				`selectors[0].rootDevices: VF range "x"`,
				`selectors[0].numaNodes: -2`,
				`pools[1] ("k").bindAt: only vfio pools bind`,
				`pools[1] ("k").allowUnbindFrom: only vfio pools unbind`,
				`pools[1] ("k").restoreOnRelease: only vfio pools rebind`,
				`pools[2] ("k").name: resource "nodot/k" is already defined by pools[1]`,
				`pools[2] ("k").selectors[0]: no field set`,
				`pools[3] ("v").bindAt: "never" is not valid`,
				`pools[3] ("v").selectors: missing; a pool without selectors would take every PCI function`,
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(tc.in))
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestParseLegacy(t *testing.T) {
	in := `{
  "resourceList": [
    {"resourceName": "intel_sriov_netdevice", "selectors": {"vendors": ["8086"], "devices": ["154c"], "drivers": ["iavf"], "pfNames": ["ens1f0#0-3"]}},
    {"resourceName": "intel_sriov_dpdk", "resourcePrefix": "example.com", "deviceType": "netDevice",
     "selectors": [{"vendors": ["8086"], "drivers": ["vfio-pci"]}, {"pciAddresses": ["0000:3b:02.4"], "drivers": ["vfio-pci"]}]}
  ]
}`
	c, err := Parse("legacy.json", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Legacy {
		t.Error("Legacy not set")
	}
	got := []string{c.Resource(&c.Pools[0]) + " " + string(c.Pools[0].Mode), c.Resource(&c.Pools[1]) + " " + string(c.Pools[1].Mode)}
	want := []string{"intel.com/intel_sriov_netdevice kernel", "example.com/intel_sriov_dpdk vfio"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
	if diff := cmp.Diff(SelectorList{{Vendors: []string{"8086"}, Drivers: []string{"vfio-pci"}}, {PCIAddresses: []string{"0000:3b:02.4"}, Drivers: []string{"vfio-pci"}}}, c.Pools[1].Selectors); diff != "" {
		t.Errorf("selectors (-want +got)\n%s", diff)
	}
}

func TestParseLegacyRefusals(t *testing.T) {
	in := `{"resourceList": [
  {"resourceName": "a", "deviceType": "auxNetDevice", "selectors": {"auxTypes": ["sf"]}},
  {"resourceName": "b", "excludeTopology": true, "selectors": {"vendors": ["15b3"], "vdpaType": "vhost"}},
  {"resourceName": "c", "selectors": {"vendors": ["8086"], "bogus": 1}},
  {"resourceName": "d", "isRdma": true, "needVhostNet": true, "selectors": {"vendors": ["15b3"]}},
  {"resourceName": "e", "selectors": [{"vendors": ["15b3"], "isRdma": true}, {"vendors": ["8086"], "needVhostNet": true}]}
]}`
	_, err := Parse("legacy.json", []byte(in))
	if err == nil {
		t.Fatal("want error")
	}
	for _, w := range []string{
		`resourceList[0] ("a").deviceType: auxiliary network devices`,
		`resourceList[0] ("a").selectors[0].auxTypes: cannot be mapped`,
		`resourceList[1] ("b").excludeTopology: not supported`,
		`resourceList[1] ("b").selectors[0].vdpaType: cannot be mapped: vDPA`,
		`resourceList[2] ("c").selectors[0]: unknown field "bogus"`,
		`resourceList[3] ("d").isRdma: belongs in selectors`,
		`resourceList[3] ("d").needVhostNet: belongs in selectors`,
		`resourceList[4] ("e").selectors: isRdma is set in 1 of 2 selectors`,
		`resourceList[4] ("e").selectors: needVhostNet is set in 1 of 2 selectors`,
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
}

// TestParseLegacyRDMAVhostNet: isRdma and needVhostNet in every selector
// map to the pool's rdma and vhostNet; isRdma on vfio-pci-bound functions
// is refused (there is no RDMA device to inject).
func TestParseLegacyRDMAVhostNet(t *testing.T) {
	in := `{"resourceList": [
  {"resourceName": "mlnx_rdma", "selectors": [{"vendors": ["15b3"], "isRdma": true}, {"pfNames": ["ens2f0"], "isRdma": true}]},
  {"resourceName": "intel_vhost", "selectors": {"vendors": ["8086"], "drivers": ["iavf"], "needVhostNet": true}},
  {"resourceName": "intel_dpdk_vhost", "selectors": {"drivers": ["vfio-pci"], "needVhostNet": true}},
  {"resourceName": "both", "selectors": {"vendors": ["15b3"], "isRdma": true, "needVhostNet": true}}
]}`
	c, err := Parse("legacy.json", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		Name           string
		Mode           Mode
		RDMA, VhostNet bool
	}
	var got []row
	for _, p := range c.Pools {
		got = append(got, row{p.Name, p.Mode, p.RDMA, p.VhostNet})
	}
	want := []row{
		{"mlnx_rdma", ModeKernel, true, false},
		{"intel_vhost", ModeKernel, false, true},
		{"intel_dpdk_vhost", ModeVFIO, false, true},
		{"both", ModeKernel, true, true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("pools (-want +got)\n%s", diff)
	}

	_, err = Parse("legacy.json", []byte(`{"resourceList": [{"resourceName": "f", "selectors": {"drivers": ["vfio-pci"], "isRdma": true}}]}`))
	if err == nil || !strings.Contains(err.Error(), `resourceList[0] ("f").selectors[*].isRdma: the selectors pick only vfio-pci-bound functions, which have no RDMA device`) {
		t.Errorf("isRdma on vfio-pci functions: err = %v", err)
	}
}

// TestParseRDMAVhostNet: our rdma and vhostNet fields; rdma is refused in a
// vfio pool, vhostNet is not (DPDK's virtio-user exception path).
func TestParseRDMAVhostNet(t *testing.T) {
	c, err := Parse("c.yaml", []byte(`pools:
  - {name: roce, rdma: true, vhostNet: true, selectors: {vendors: ["15b3"]}}
  - {name: dpdk, mode: vfio, vhostNet: true, selectors: {vendors: ["8086"]}}
`))
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Pools[0]; !p.RDMA || !p.VhostNet || c.Pools[1].RDMA || !c.Pools[1].VhostNet {
		t.Errorf("pools = %+v", c.Pools)
	}
	_, err = Parse("c.yaml", []byte(`pools: [{name: v, mode: vfio, rdma: true, selectors: {vendors: ["15b3"]}}]`))
	if err == nil || !strings.Contains(err.Error(), `pools[0] ("v").rdma: a vfio pool takes its functions from their RDMA driver`) {
		t.Errorf("rdma in a vfio pool: err = %v", err)
	}
}

func TestLoadNamesFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "missing.yaml")
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("err = %v, want it to name %q", err, p)
	}
	if err := os.WriteFile(p, []byte("pools: [{name: a, mode: vfio, selectors: {vendors: ['8086']}}]"), 0o644); err != nil {
		t.Fatal(err)
	}
	if c, err := Load(p); err != nil || c.Source != p {
		t.Fatalf("Load = %+v, %v", c, err)
	}
}

func TestParseVFRanges(t *testing.T) {
	tests := []struct {
		in      string
		want    []VFRange
		wantErr string
	}{
		{in: "0", want: []VFRange{{0, 0}}},
		{in: "0,2-7", want: []VFRange{{0, 0}, {2, 7}}},
		{in: "5-5,127", want: []VFRange{{5, 5}, {127, 127}}},
		{in: "", wantErr: "empty"},
		{in: "7-2", wantErr: "2 is below 7"},
		{in: "1,,2", wantErr: `"" is not a VF index`},
		{in: "-1", wantErr: `"" is not a VF index`},
		{in: "1-", wantErr: `"" is not a VF index`},
		{in: "65536", wantErr: "not a VF index"},
		{in: "+3", wantErr: "not a VF index"},
		{in: "1-2-3", wantErr: "not a VF index"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseVFRanges(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

func TestSelectorMatch(t *testing.T) {
	pf := &sysfs.Device{Address: "0000:3b:00.0", Vendor: "8086", Device: "1572", Driver: "i40e", NUMANode: 0, VFIndex: -1,
		SRIOV: &sysfs.SRIOV{NumVFs: 8}, Netdevs: []sysfs.Netdev{{Name: "ens1f0", LinkType: "ether"}}}
	vf := func(i int) *sysfs.Device {
		return &sysfs.Device{Address: sysfs.Address("0000:3b:02." + string(rune('0'+i))), Vendor: "8086", Device: "154c", Driver: "iavf",
			NUMANode: 0, PhysFn: pf.Address, VFIndex: i, Netdevs: []sysfs.Netdev{{Name: "v", LinkType: "ether"}}}
	}
	plain := &sysfs.Device{Address: "0000:5e:00.0", Vendor: "10de", Device: "20b5", Driver: "", NUMANode: -1, VFIndex: -1}
	tests := []struct {
		name string
		sel  Selector
		dev  *sysfs.Device
		pf   *sysfs.Device
		want bool
	}{
		{"vendor and device", Selector{Vendors: []string{"8086"}, Devices: []string{"154C"}}, vf(0), pf, true},
		{"device differs", Selector{Vendors: []string{"8086"}, Devices: []string{"154d"}}, vf(0), pf, false},
		{"driver", Selector{Drivers: []string{"iavf"}}, vf(1), pf, true},
		{"pfName all VFs", Selector{PFNames: []string{"ens1f0"}}, vf(5), pf, true},
		{"pfName range hit", Selector{PFNames: []string{"ens1f0#0,2-4"}}, vf(3), pf, true},
		{"pfName range miss", Selector{PFNames: []string{"ens1f0#0,2-4"}}, vf(1), pf, false},
		{"pfName other PF", Selector{PFNames: []string{"ens2f0"}}, vf(1), pf, false},
		{"pfName selects a non-VF by its own netdev", Selector{PFNames: []string{"ens1f0"}}, pf, nil, true},
		{"pfName range never selects a non-VF", Selector{PFNames: []string{"ens1f0#0"}}, pf, nil, false},
		{"rootDevice", Selector{RootDevices: []string{"0000:3b:00.0"}}, vf(7), pf, true},
		{"rootDevice range", Selector{RootDevices: []string{"0000:3b:00.0#0-1"}}, vf(2), pf, false},
		{"rootDevice as whole device", Selector{RootDevices: []string{"0000:5e:00.0"}}, plain, nil, true},
		{"pciAddress", Selector{PCIAddresses: []string{"0000:5E:00.0"}}, plain, nil, true},
		{"numa none", Selector{Vendors: []string{"10de"}, NUMANodes: []int{-1}}, plain, nil, true},
		{"numa 1", Selector{Vendors: []string{"10de"}, NUMANodes: []int{1}}, plain, nil, false},
		{"linkType needs a netdev", Selector{LinkTypes: []string{"ether"}}, plain, nil, false},
		{"linkType", Selector{LinkTypes: []string{"ether"}}, vf(0), pf, true},
		{"exclude wins", Selector{Vendors: []string{"8086"}, ExcludeAddresses: []string{"0000:3b:02.0"}}, vf(0), pf, false},
		{"empty selector matches nothing", Selector{}, vf(0), pf, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.sel.Match(tc.dev, tc.pf); got != tc.want {
				t.Errorf("Match = %v, want %v", got, tc.want)
			}
		})
	}
}

func FuzzParseVFRanges(f *testing.F) {
	for _, s := range []string{"0", "0,2-7", "7-2", "", "1,,", "65535", "0-65535", "9999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rs, err := ParseVFRanges(s)
		if err != nil {
			return
		}
		for _, r := range rs {
			if r.First < 0 || r.Last > MaxVFIndex || r.First > r.Last {
				t.Fatalf("ParseVFRanges(%q) accepted bad range %+v", s, r)
			}
			if !ContainsVF(rs, r.First) || !ContainsVF(rs, r.Last) {
				t.Fatalf("range %+v does not contain its ends", r)
			}
		}
	})
}

func FuzzParse(f *testing.F) {
	seeds := []string{
		"pools: [{name: a, mode: vfio, selectors: {vendors: ['8086']}}]",
		`{"resourceList":[{"resourceName":"x","selectors":{"vendors":["8086"],"drivers":["vfio-pci"]}}]}`,
		"pools: [{name: a, selectors: [{pfNames: ['ens1#0-3']}, {rootDevices: ['0000:3b:00.0#1']}]}]",
		"resourcePrefix: 7\npools: 3",
		"{",
		"",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		// Whatever is accepted is valid and fully defaulted.
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted config fails Validate: %v", err)
		}
		for i := range c.Pools {
			p := &c.Pools[i]
			if p.Mode == "" || p.AllocationPolicy == "" || len(p.Selectors) == 0 {
				t.Fatalf("pool %d not defaulted: %+v", i, p)
			}
			// Matching must never panic on any accepted selector.
			p.Match(&sysfs.Device{Address: "0000:00:00.0", VFIndex: 3}, &sysfs.Device{Address: "0000:00:01.0"})
		}
	})
}

// TestParseRefusesManglingCollisions: two resources whose device plugin
// socket or PCIDEVICE_/PCI_RESOURCE_ variable names are equal after
// mangling would share one socket (kubelet reaches one server for both)
// or one variable (containers see one list).
func TestParseRefusesManglingCollisions(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{{
		name: "dot and underscore",
		in: `pools:
  - {name: vf.a, selectors: {vendors: ["8086"]}}
  - {name: vf_a, selectors: {vendors: ["15b3"]}}`,
		want: []string{
			`pools[1] ("vf_a").name: resource "sriov-cdi.io/vf_a" collides with pools[0] ("vf.a") (resource "sriov-cdi.io/vf.a") after mangling`,
			`socket "sriov-cdi-sriov-cdi_io_vf_a.sock"`,
			`variables "PCIDEVICE_SRIOV-CDI_IO_VF_A" and "PCI_RESOURCE_SRIOV-CDI_IO_VF_A"`,
		},
	}, {
		name: "prefix and name split differently",
		in: `pools:
  - {name: c.x, resourcePrefix: a.b, selectors: {vendors: ["8086"]}}
  - {name: x, resourcePrefix: a.b.c, selectors: {vendors: ["15b3"]}}`,
		want: []string{
			`pools[1] ("x").name: resource "a.b.c/x" collides with pools[0] ("c.x") (resource "a.b/c.x") after mangling`,
			`socket "sriov-cdi-a_b_c_x.sock"`,
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(tc.in))
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
	// Names that differ after mangling are fine.
	if _, err := Parse("c.yaml", []byte("pools: [{name: vf-a, selectors: {vendors: ['8086']}}, {name: vf_a, selectors: {vendors: ['15b3']}}]")); err != nil {
		t.Errorf("vf-a and vf_a: %v", err)
	}
}

// TestParseRefusesDuplicateKeysAndDocuments: a key given twice or a second
// YAML document would otherwise be dropped silently.
func TestParseRefusesDuplicateKeysAndDocuments(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{{
		name: "duplicate key in a pool",
		in:   "pools:\n  - name: a\n    mode: kernel\n    mode: vfio\n    selectors: {vendors: [\"8086\"]}\n",
		want: []string{`config "c.yaml" is invalid:`, `  - line 4: key "mode" is given twice`},
	}, {
		name: "duplicate top-level key",
		in:   "resourcePrefix: a.com\npools: []\nresourcePrefix: b.com\n",
		want: []string{`config "c.yaml" is invalid:`, `  - line 3: key "resourcePrefix" is given twice`},
	}, {
		name: "duplicate key in JSON",
		in:   "{\"pools\": [{\"name\": \"a\", \"mode\": \"kernel\",\n \"mode\": \"vfio\", \"selectors\": {\"vendors\": [\"8086\"]}}]}",
		want: []string{`config "c.yaml" is invalid:`, `  - line 2: key "mode" is given twice`},
	}, {
		name: "duplicate key in a legacy config",
		in:   "{\"resourceList\": [{\"resourceName\": \"a\", \"resourceName\": \"b\", \"selectors\": {\"vendors\": [\"8086\"]}}]}",
		want: []string{`config "c.yaml" is invalid:`, `  - line 1: key "resourceName" is given twice`},
	}, {
		name: "second document",
		in:   "pools: [{name: a, selectors: {vendors: ['8086']}}]\n---\npools: [{name: b, selectors: {vendors: ['8086']}}]\n",
		want: []string{`config "c.yaml" is invalid:`, `  - line 3: a second YAML document`},
	}, {
		name: "second document after a leading separator",
		in:   "---\npools: [{name: a, selectors: {vendors: ['8086']}}]\n---\n# only a comment\nresourcePrefix: b.com\n",
		want: []string{`config "c.yaml" is invalid:`, `  - line 5: a second YAML document`},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(tc.in))
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
	// One document, with or without separators, is fine.
	for _, ok := range []string{
		"---\npools: [{name: a, selectors: {vendors: ['8086']}}]\n",
		"pools: [{name: a, selectors: {vendors: ['8086']}}]\n---\n",
		"---\npools: [{name: a, selectors: {vendors: ['8086']}}]\n...\n",
	} {
		if _, err := Parse("c.yaml", []byte(ok)); err != nil {
			t.Errorf("Parse(%q): %v", ok, err)
		}
	}
}

// TestParseNamesAsKubeletAndCDIAccept: pool and legacy resource names are
// read as kubelet (a qualified name) and CDI (a class starts with a letter)
// accept them, so an SR-IOV network device plugin file is read as is;
// only a name that cannot be both a resource and a CDI kind is refused.
func TestParseNamesAsKubeletAndCDIAccept(t *testing.T) {
	legacy := func(names ...string) string {
		var rs []string
		for _, n := range names {
			rs = append(rs, `{"resourceName": "`+n+`", "selectors": {"vendors": ["8086"]}}`)
		}
		return `{"resourceList": [` + strings.Join(rs, ", ") + `]}`
	}
	tests := []struct {
		name    string
		in      string
		want    []string // resources, when valid
		wantErr []string
	}{
		{name: "legacy upper case", in: legacy("sriov_DPDK", "Intel_SRIOV"), want: []string{"intel.com/sriov_DPDK", "intel.com/Intel_SRIOV"}},
		{name: "own format upper case", in: "pools: [{name: vf-VFIO.A, selectors: {vendors: ['8086']}}]", want: []string{"sriov-cdi.io/vf-VFIO.A"}},
		{name: "legacy leading digit", in: legacy("10g_vfs"), wantErr: []string{
			`resourceList[0] ("10g_vfs").resourceName: "10g_vfs" starts with a digit`,
			`a CDI class must start with a letter`,
			`rename the resource (e.g. "vfs_10g")`,
		}},
		{name: "own format leading digit", in: "pools: [{name: 1vf, selectors: {vendors: ['8086']}}]", wantErr: []string{
			`pools[0] ("1vf").name: "1vf" starts with a digit`,
		}},
		{name: "legacy trailing underscore", in: legacy("vfs_"), wantErr: []string{
			`resourceList[0] ("vfs_").resourceName: "vfs_" must be 1-63 letters, digits`,
		}},
		{name: "legacy names differing in case only", in: legacy("sriov_dpdk", "sriov_DPDK"), wantErr: []string{
			`resourceList[1] ("sriov_DPDK").resourceName: resource "intel.com/sriov_DPDK" collides with resourceList[0] ("sriov_dpdk") (resource "intel.com/sriov_dpdk") after mangling`,
			`"PCIDEVICE_INTEL_COM_SRIOV_DPDK"`,
		}},
		{name: "own format names differing in case only", in: "pools: [{name: vf-a, selectors: {vendors: ['8086']}}, {name: VF-A, selectors: {vendors: ['8086']}}]", wantErr: []string{
			`pools[1] ("VF-A").name: resource "sriov-cdi.io/VF-A" collides with pools[0] ("vf-a")`,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("c.json", []byte(tc.in))
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatal("Parse succeeded, want an error")
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error lacks %q:\n%v", w, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for i := range c.Pools {
				got = append(got, c.Resource(&c.Pools[i]))
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("resources (-want +got)\n%s", diff)
			}
		})
	}
}

// TestParseLegacySelectorProblems: a legacy resource's selectors are
// explained like ours: every problem, with resource, path, line and hint.
func TestParseLegacySelectorProblems(t *testing.T) {
	in := `{"resourceList": [
  {"resourceName": "a", "selectors": {"vendors": [8086], "devices": ["154c"]}},
  {"resourceName": "b",
   "selectors": [{"drivers": ["iavf"]}, {"pfNames": ["ens1"], "bogus": 1}]}
]}`
	_, err := Parse("old.json", []byte(in))
	if err == nil {
		t.Fatal("Parse succeeded, want an error")
	}
	for _, w := range []string{
		`config "old.json" is invalid:`,
		`  - line 2: resourceList[0] ("a").selectors[0].vendors[0]: got a number, want a string; quote IDs: "8086"`,
		`  - line 4: resourceList[1] ("b").selectors[1]: unknown field "bogus"`,
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
}

// TestParseRefusesSocketPathTooLong: a unix socket path holds at most 107
// bytes; a resource whose socket in kubelet's directory would be longer
// could never be served ("bind: invalid argument" at start).
func TestParseRefusesSocketPathTooLong(t *testing.T) {
	long := strings.Repeat("a", 61-len("sriov-cdi.io/"))
	if _, err := Parse("c.yaml", []byte("pools: [{name: "+long[:len(long)-1]+", selectors: {vendors: ['8086']}}]")); err != nil {
		t.Errorf("a resource of 60 bytes: %v", err)
	}
	_, err := Parse("c.yaml", []byte("pools: [{name: "+long+", selectors: {vendors: ['8086']}}]"))
	want := `pools[0] ("` + long + `").name: resource "sriov-cdi.io/` + long + `" is 61 bytes; its device plugin socket /var/lib/kubelet/device-plugins/sriov-cdi-sriov-cdi_io_` + long + `.sock would be 108 bytes, over the 107 a unix socket path holds: shorten the pool name or the resource prefix to 60 bytes in all`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v\nwant %s", err, want)
	}
}
