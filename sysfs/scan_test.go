package sysfs_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sriov-cdi/sriov-cdi/sysfs"
	"github.com/sriov-cdi/sriov-cdi/sysfs/sample"
	"github.com/sriov-cdi/sriov-cdi/sysfs/sysfstest"
)

// TestScanRealKernelSnapshot checks the scan against sysfs captured from a
// real 6.1 kernel: the facts below are the kernel's, listed in the
// snapshot's SCENARIO.txt.
func TestScanRealKernelSnapshot(t *testing.T) {
	h, _, err := sample.Scan(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Warnings) != 0 {
		t.Errorf("unexpected warnings: %v", h.Warnings)
	}
	type row struct {
		Addr, VendorDevice, Class, Driver, Override, Group, PhysFn string
		VFIndex, NUMA                                              int
		GroupDev                                                   bool
	}
	var got []row
	for _, d := range h.Devices {
		got = append(got, row{string(d.Address), d.Vendor + ":" + d.Device, d.Class, d.Driver, d.DriverOverride, d.IOMMUGroup, string(d.PhysFn), d.VFIndex, d.NUMANode, d.VFIOGroupDev})
	}
	want := []row{
		{"0000:00:00.0", "8086:29c0", "060000", "", "", "0", "", -1, -1, false},
		{"0000:00:01.0", "1b36:000c", "060400", "pcieport", "", "1", "", -1, -1, false},
		{"0000:00:02.0", "1b36:000c", "060400", "pcieport", "", "2", "", -1, -1, false},
		{"0000:00:03.0", "1af4:1009", "000200", "virtio-pci", "", "3", "", -1, -1, false},
		{"0000:00:1f.0", "8086:2918", "060100", "", "", "4", "", -1, -1, false},
		{"0000:00:1f.2", "8086:2922", "010601", "", "", "4", "", -1, -1, false},
		{"0000:00:1f.3", "8086:2930", "0c0500", "", "", "4", "", -1, -1, false},
		{"0000:01:00.0", "1b36:0010", "010802", "nvme", "", "5", "", -1, -1, false},
		{"0000:01:00.1", "1b36:0010", "010802", "", "", "7", "0000:01:00.0", 0, -1, false},
		{"0000:01:00.2", "1b36:0010", "010802", "vfio-pci", "vfio-pci", "8", "0000:01:00.0", 1, -1, true},
		{"0000:01:00.3", "1b36:0010", "010802", "", "", "9", "0000:01:00.0", 2, -1, false},
		{"0000:01:00.4", "1b36:0010", "010802", "", "", "10", "0000:01:00.0", 3, -1, false},
		{"0000:02:00.0", "1b36:0010", "010802", "nvme", "", "6", "", -1, -1, false},
		{"0000:02:00.1", "1b36:0010", "010802", "nvme", "", "11", "0000:02:00.0", 0, -1, false},
		{"0000:02:00.2", "1b36:0010", "010802", "nvme", "", "12", "0000:02:00.0", 1, -1, false},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("devices (-want +got)\n%s", diff)
	}
	pf0 := h.Device("0000:01:00.0")
	wantSRIOV := &sysfs.SRIOV{TotalVFs: 4, NumVFs: 4, VFs: []sysfs.Address{"0000:01:00.1", "0000:01:00.2", "0000:01:00.3", "0000:01:00.4"}}
	if diff := cmp.Diff(wantSRIOV, pf0.SRIOV); diff != "" {
		t.Errorf("PF0 SR-IOV (-want +got)\n%s", diff)
	}
	if pf1 := h.Device("0000:02:00.0"); pf1.SRIOV == nil || !pf1.SRIOV.DriversAutoprobe || pf1.SRIOV.NumVFs != 2 {
		t.Errorf("PF1 SR-IOV = %+v, want autoprobe on and 2 VFs", pf1.SRIOV)
	}
	if !pf0.IsPFWithVFs() || h.Device("0000:01:00.1").IsPFWithVFs() {
		t.Error("IsPFWithVFs wrong")
	}
	if d := h.Device("0000:01:00.2"); d.VFIODevice != "vfio0" {
		t.Errorf("VFIODevice = %q, want vfio0", d.VFIODevice)
	}
	if diff := cmp.Diff([]sysfs.Address{"0000:00:1f.0", "0000:00:1f.2", "0000:00:1f.3"}, h.Groups["4"]); diff != "" {
		t.Errorf("group 4 (-want +got)\n%s", diff)
	}
	if got, want := h.Device("0000:01:00.3").Path, "devices/pci0000:00/0000:00:01.0/0000:01:00.3"; got != want {
		t.Errorf("Path = %q, want %q", got, want)
	}
}

func TestScanBuiltTree(t *testing.T) {
	dir := t.TempDir()
	b := sysfstest.New(dir)
	b.Add(sysfstest.Function{Addr: "0000:00:01.0", Vendor: "8086", Device: "2030", Class: "060400", Driver: "pcieport", NUMA: 0, Group: "1"})
	b.AddPF(sysfstest.Function{Addr: "0000:3b:00.0", Vendor: "8086", Device: "1572", Driver: "i40e", NUMA: 0, Group: "2", Parent: "0000:00:01.0", TotalVFs: 8,
		Netdevs: []sysfstest.Netdev{{Name: "ens1f0", OperState: "up", Carrier: true}}},
		sysfstest.Function{Addr: "0000:3b:02.0", Vendor: "8086", Device: "154c", Driver: "iavf", NUMA: 0, Group: "3",
			Netdevs: []sysfstest.Netdev{{Name: "ens1f0v0", OperState: "down"}}},
		sysfstest.Function{Addr: "0000:3b:02.1", Vendor: "8086", Device: "154c", Driver: "vfio-pci", NUMA: 0, Group: "4"},
	)
	// A PF with the SR-IOV capability but no VFs enabled is an ordinary
	// candidate; its two functions share a group (no ACS).
	b.AddPF(sysfstest.Function{Addr: "0000:5e:00.0", Vendor: "15b3", Device: "1017", Driver: "mlx5_core", NUMA: 1, Group: "7", TotalVFs: 4,
		Netdevs: []sysfstest.Netdev{{Name: "ib0", OperState: "up", Carrier: true, Type: 32}}})
	b.Add(sysfstest.Function{Addr: "0000:5e:00.1", Vendor: "15b3", Device: "1017", Driver: "mlx5_core", NUMA: 1, Group: "7"})
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	h, err := sysfs.Scan(sysfs.Root{Sys: b.Sys(), Dev: b.Dev()}, sysfs.WithNetUsage(func() sysfs.NetUsage { return fakeNet{"ens1f0": "holds address 192.0.2.10"} }))
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Warnings) != 0 {
		t.Errorf("unexpected warnings: %v", h.Warnings)
	}
	if diff := cmp.Diff([]sysfs.Address{"0000:5e:00.0", "0000:5e:00.1"}, h.Groups["7"]); diff != "" {
		t.Errorf("multi-function group (-want +got)\n%s", diff)
	}
	pf := h.Device("0000:3b:00.0")
	wantNet := []sysfs.Netdev{{Name: "ens1f0", OperState: "up", Carrier: true, LinkType: "ether", HostUse: "holds address 192.0.2.10"}}
	if diff := cmp.Diff(wantNet, pf.Netdevs); diff != "" {
		t.Errorf("PF netdevs (-want +got)\n%s", diff)
	}
	if pf.NUMANode != 0 || !pf.IsPFWithVFs() {
		t.Errorf("PF = %+v", pf)
	}
	vf1 := h.Device("0000:3b:02.1")
	if vf1.VFIndex != 1 || vf1.PhysFn != "0000:3b:00.0" || !vf1.VFIOGroupDev || vf1.Driver != "vfio-pci" {
		t.Errorf("VF1 = %+v", vf1)
	}
	if got := h.Device("0000:3b:02.0").Netdevs; len(got) != 1 || got[0].Carrier || got[0].OperState != "down" {
		t.Errorf("VF0 netdevs = %+v, want one down without carrier", got)
	}
	if got := h.Device("0000:5e:00.0"); got.IsPFWithVFs() || got.SRIOV.TotalVFs != 4 || got.Netdevs[0].LinkType != "infiniband" {
		t.Errorf("mlx PF = %+v %+v", got, got.SRIOV)
	}
	if !h.Device("0000:00:01.0").IsBridge() || pf.IsBridge() {
		t.Error("IsBridge wrong")
	}
}

// TestScanGarbageNumVFs: a PF whose sriov_numvfs is garbage (far above
// sriov_totalvfs, or with an unreadable totalvfs) is read in bounded time
// with a warning naming it, not walked for millions of virtfn links.
func TestScanGarbageNumVFs(t *testing.T) {
	tests := []struct {
		name       string
		total      string
		wantNumVFs int
		wantWarn   []string
	}{
		{
			name: "numvfs above totalvfs", total: "64", wantNumVFs: 64,
			wantWarn: []string{
				"0000:3b:00.0: sriov_numvfs 3000000 exceeds sriov_totalvfs 64; reading the first 64 virtfn links",
				"0000:3b:00.0: virtfn2 unreadable although sriov_numvfs is 64",
				"(and 61 more virtfn links missing)",
			},
		},
		{
			name: "garbage totalvfs", total: "banana", wantNumVFs: sysfs.MaxVFs,
			wantWarn: []string{
				`0000:3b:00.0: sriov_totalvfs "banana" is not a number of VFs; reading at most 65535 virtfn links`,
				"0000:3b:00.0: sriov_numvfs 3000000 exceeds sriov_totalvfs banana; reading the first 65535 virtfn links",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			b := sysfstest.New(dir)
			b.AddPF(sysfstest.Function{Addr: "0000:3b:00.0", Vendor: "8086", Device: "1572", Driver: "i40e", NUMA: 0, Group: "2", TotalVFs: 64},
				sysfstest.Function{Addr: "0000:3b:02.0", Vendor: "8086", Device: "154c", Driver: "iavf", NUMA: 0, Group: "3"},
				sysfstest.Function{Addr: "0000:3b:02.1", Vendor: "8086", Device: "154c", Driver: "iavf", NUMA: 0, Group: "4"})
			if err := b.Write(); err != nil {
				t.Fatal(err)
			}
			pf := filepath.Join(b.Sys(), "devices", "pci0000:00", "0000:3b:00.0")
			if err := os.WriteFile(filepath.Join(pf, "sriov_numvfs"), []byte("3000000\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(pf, "sriov_totalvfs"), []byte(tc.total+"\n"), 0o444); err != nil {
				t.Fatal(err)
			}
			h, err := sysfs.Scan(sysfs.Root{Sys: b.Sys(), Dev: b.Dev()})
			if err != nil {
				t.Fatal(err)
			}
			d := h.Device("0000:3b:00.0")
			if d == nil || d.SRIOV == nil {
				t.Fatalf("PF not read: %+v", d)
			}
			if d.SRIOV.NumVFs != tc.wantNumVFs || len(d.SRIOV.VFs) != 2 {
				t.Errorf("NumVFs = %d with %d VFs, want %d with 2", d.SRIOV.NumVFs, len(d.SRIOV.VFs), tc.wantNumVFs)
			}
			if len(h.Warnings) > 3 {
				t.Errorf("%d warnings, want at most 3 (one per anomaly, not per missing link)", len(h.Warnings))
			}
			joined := ""
			for _, w := range h.Warnings {
				joined += w.String() + "\n"
			}
			for _, want := range tc.wantWarn {
				if !strings.Contains(joined, want) {
					t.Errorf("warnings lack %q; got:\n%s", want, joined)
				}
			}
		})
	}
}

type fakeNet map[string]string

func (f fakeNet) HostUse(n string) string { return f[n] }

// TestScanAnomalies damages a tree the ways real hosts do and checks that
// each bad entry is skipped or degraded with a warning naming it, and the
// rest is read.
func TestScanAnomalies(t *testing.T) {
	dir := t.TempDir()
	b := sysfstest.New(dir)
	for _, a := range []string{"0000:01:00.0", "0000:01:00.1", "0000:01:00.2", "0000:01:00.3", "0000:01:00.4", "0000:01:00.5", "0000:01:00.6"} {
		b.Add(sysfstest.Function{Addr: a, Vendor: "8086", Device: "1521", Driver: "igb", NUMA: -1, Group: a[len(a)-1:]})
	}
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	dev := func(a string) string {
		return filepath.Join(b.Sys(), "devices", "pci0000:00", a)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// .1: garbage numa_node and an unparsable uevent, but good id files.
	must(os.WriteFile(filepath.Join(dev("0000:01:00.1"), "numa_node"), []byte("banana\n"), 0o644))
	must(os.WriteFile(filepath.Join(dev("0000:01:00.1"), "uevent"), []byte("\x00\x01garbage"), 0o644))
	// .2: vanished between the bus listing and the read (dangling link).
	must(os.RemoveAll(dev("0000:01:00.2")))
	// .3: no uevent and a garbage vendor: cannot be identified.
	must(os.Remove(filepath.Join(dev("0000:01:00.3"), "uevent")))
	must(os.WriteFile(filepath.Join(dev("0000:01:00.3"), "vendor"), []byte("0xzz\n"), 0o644))
	// .4: missing optional attributes (no numa_node, no driver_override).
	must(os.Remove(filepath.Join(dev("0000:01:00.4"), "numa_node")))
	must(os.Remove(filepath.Join(dev("0000:01:00.4"), "driver_override")))
	// .5: physfn pointing at garbage.
	must(os.Symlink("../not-a-pci-address", filepath.Join(dev("0000:01:00.5"), "physfn")))
	// .6: claims SR-IOV with 2 VFs but has no virtfn links.
	must(os.WriteFile(filepath.Join(dev("0000:01:00.6"), "sriov_totalvfs"), []byte("4\n"), 0o444))
	must(os.WriteFile(filepath.Join(dev("0000:01:00.6"), "sriov_numvfs"), []byte("2\n"), 0o644))
	// A junk name in the bus directory.
	must(os.Symlink("../../../devices/pci0000:00/0000:01:00.0", filepath.Join(b.Sys(), "bus/pci/devices/garbage")))

	h, err := sysfs.Scan(sysfs.Root{Sys: b.Sys(), Dev: b.Dev()})
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, d := range h.Devices {
		addrs = append(addrs, string(d.Address))
	}
	if diff := cmp.Diff([]string{"0000:01:00.0", "0000:01:00.1", "0000:01:00.4", "0000:01:00.5", "0000:01:00.6"}, addrs); diff != "" {
		t.Errorf("kept devices (-want +got)\n%s", diff)
	}
	if d := h.Device("0000:01:00.1"); d.Vendor != "8086" || d.Device != "1521" || d.NUMANode != -1 || d.Driver != "igb" {
		t.Errorf("fallback ids: %+v", d)
	}
	if d := h.Device("0000:01:00.4"); d.NUMANode != -1 || d.DriverOverride != "" {
		t.Errorf("missing optional attributes: %+v", d)
	}
	if d := h.Device("0000:01:00.5"); d.IsVF() {
		t.Errorf("garbage physfn made it a VF: %+v", d)
	}
	joined := ""
	for _, w := range h.Warnings {
		joined += w.String() + "\n"
	}
	for _, want := range []string{
		"garbage: skipped: invalid PCI address",
		"0000:01:00.1: numa_node \"banana\" is not a number",
		"0000:01:00.2: skipped: vanished during scan",
		"0000:01:00.3: skipped: cannot identify function: vendor \"0xzz\"",
		"0000:01:00.5: physfn link",
		"0000:01:00.6: virtfn0 unreadable although sriov_numvfs is 2",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("warnings lack %q; got:\n%s", want, joined)
		}
	}
}

func TestScanMissingRoot(t *testing.T) {
	_, err := sysfs.Scan(sysfs.Root{Sys: filepath.Join(t.TempDir(), "nope"), Dev: "/nonexistent"})
	if err == nil || !strings.Contains(err.Error(), "is the sysfs root right?") {
		t.Fatalf("err = %v", err)
	}
}

// BenchmarkScan measures a full discovery of 8 PFs x 128 VFs (1,024 VFs,
// 1,041 functions) from a cold process state: every iteration re-reads the
// whole tree; nothing is cached between iterations.
func BenchmarkScan(b *testing.B) {
	for _, tc := range []struct{ pfs, vfs int }{{8, 16}, {8, 64}, {8, 128}} {
		b.Run(fmt.Sprintf("%dx%d", tc.pfs, tc.vfs), func(b *testing.B) {
			dir := b.TempDir()
			bld := sysfstest.SRIOVNICHost(dir, tc.pfs, tc.vfs)
			if err := bld.Write(); err != nil {
				b.Fatal(err)
			}
			root := sysfs.Root{Sys: bld.Sys(), Dev: bld.Dev()}
			b.ReportAllocs()
			var ms runtime.MemStats
			var peak uint64
			for b.Loop() {
				h, err := sysfs.Scan(root)
				if err != nil || len(h.Devices) != 1+tc.pfs*(tc.vfs+2) {
					b.Fatalf("scan: %v, %d devices", err, len(h.Devices))
				}
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapAlloc)
			}
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		})
	}
}

// BenchmarkScanSoftRoCE is BenchmarkScan's 8 x 128 host with a soft-RoCE
// device on every VF netdev (1,024 virtual RDMA devices with uverbs, umad
// and issm each, numbered against the ibdev order): the cost of reading
// /sys/class/infiniband and the char device classes once per scan.
func BenchmarkScanSoftRoCE(b *testing.B) {
	const pfs, vfs = 8, 128
	dir := b.TempDir()
	bld := sysfstest.SRIOVNICHost(dir, pfs, vfs)
	for i := range pfs * vfs {
		bld.SoftRoCE = append(bld.SoftRoCE, sysfstest.SoftRoCE{
			Name: fmt.Sprintf("rxe%d", i), Netdev: fmt.Sprintf("ens%df0v%d", i/vfs, i%vfs), Verbs: pfs*vfs - 1 - i, MAD: pfs*vfs - 1 - i})
	}
	if err := bld.Write(); err != nil {
		b.Fatal(err)
	}
	root := sysfs.Root{Sys: bld.Sys(), Dev: bld.Dev()}
	b.ReportAllocs()
	for b.Loop() {
		h, err := sysfs.Scan(root)
		if err != nil || len(h.Devices) != 1+pfs*(vfs+2) {
			b.Fatalf("scan: %v, %d devices", err, len(h.Devices))
		}
		if r := h.Device("0000:08:10.0").RDMA; len(r) != 1 || len(r[0].Nodes) != 3 {
			b.Fatalf("last VF: RDMA %v, want one device with 3 nodes", r)
		}
	}
}
