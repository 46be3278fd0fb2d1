package sysfs_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sriov-cdi/sriov-cdi/sysfs"
	"github.com/sriov-cdi/sriov-cdi/sysfs/sysfstest"
)

// TestScanRDMA reads RDMA devices from the kernel's layout under the PCI
// function: infiniband/<ibdev>, infiniband_verbs/uverbsN,
// infiniband_mad/{umad,issm}N.
func TestScanRDMA(t *testing.T) {
	dir := t.TempDir()
	b := sysfstest.New(dir)
	b.RDMACM = true
	pf := sysfstest.Function{Addr: "0000:3b:00.0", Vendor: "15b3", Device: "101d", Driver: "mlx5_core", NUMA: 0, Group: "20",
		RDMA: []sysfstest.RDMA{{Name: "mlx5_0", Verbs: []int{0}, MAD: []int{0}}}}
	vfs := []sysfstest.Function{
		{Addr: "0000:3b:00.2", Vendor: "15b3", Device: "101e", Driver: "mlx5_core", NUMA: 0, Group: "21",
			RDMA: []sysfstest.RDMA{{Name: "mlx5_2", Verbs: []int{10}, MAD: []int{2}}}},
		{Addr: "0000:3b:00.3", Vendor: "15b3", Device: "101e", Driver: "mlx5_core", NUMA: 0, Group: "22",
			RDMA: []sysfstest.RDMA{{Name: "mlx5_3", Verbs: []int{3}, NoNodes: true}}},
		{Addr: "0000:3b:00.4", Vendor: "15b3", Device: "101e", Driver: "vfio-pci", NUMA: 0, Group: "23"},
	}
	b.AddPF(pf, vfs...)
	// A function with two RDMA devices: the char devices are told apart by
	// their ibdev files.
	b.Add(sysfstest.Function{Addr: "0000:5e:00.0", Vendor: "8086", Device: "1592", Driver: "ice", NUMA: 1, Group: "30",
		RDMA: []sysfstest.RDMA{{Name: "irdma1", Verbs: []int{5}, MAD: []int{7}}, {Name: "irdma0", Verbs: []int{4}, MAD: []int{6}}}})
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	root := sysfs.Root{Sys: b.Sys(), Dev: b.Dev()}
	h, err := sysfs.Scan(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Warnings) != 0 {
		t.Errorf("warnings: %v", h.Warnings)
	}
	got := map[sysfs.Address][]sysfs.RDMADevice{}
	for _, d := range h.Devices {
		if d.RDMA != nil {
			got[d.Address] = d.RDMA
		}
	}
	want := map[sysfs.Address][]sysfs.RDMADevice{
		"0000:3b:00.0": {{Name: "mlx5_0", Nodes: []string{"uverbs0", "umad0", "issm0"}}},
		"0000:3b:00.2": {{Name: "mlx5_2", Nodes: []string{"uverbs10", "umad2", "issm2"}}},
		"0000:3b:00.3": {{Name: "mlx5_3", Nodes: []string{"uverbs3"}, Missing: []string{"uverbs3"}}},
		"0000:5e:00.0": {
			{Name: "irdma0", Nodes: []string{"uverbs4", "umad6", "issm6"}},
			{Name: "irdma1", Nodes: []string{"uverbs5", "umad7", "issm7"}},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("RDMA devices (-want +got)\n%s", diff)
	}
	if !h.RDMACM {
		t.Error("RDMACM = false, want true: /dev/infiniband/rdma_cm exists")
	}
	if h.VhostNetNode || h.TunNode {
		t.Errorf("VhostNetNode, TunNode = %v, %v; the fixture has neither", h.VhostNetNode, h.TunNode)
	}
	for _, n := range []string{"vhost-net", "net/tun"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(b.Dev(), n)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(b.Dev(), n), nil, 0o666); err != nil {
			t.Fatal(err)
		}
	}

	// The fixture mirrors the kernel: the class links lead back to the
	// function, and dev holds the numbers.
	link, err := filepath.EvalSymlinks(filepath.Join(b.Sys(), "class/infiniband_verbs/uverbs10/device"))
	fn, _ := filepath.EvalSymlinks(filepath.Join(b.Sys(), "bus/pci/devices/0000:3b:00.2"))
	if err != nil || link != fn {
		t.Errorf("class/infiniband_verbs/uverbs10/device -> %q, %v; want the function %q", link, err, fn)
	}
	dev, err := os.ReadFile(filepath.Join(b.Sys(), "class/infiniband_verbs/uverbs10/dev"))
	if err != nil || string(dev) != "231:202\n" {
		t.Errorf("uverbs10/dev = %q, %v; want 231:202", dev, err)
	}

	// rdma_cm gone (rdma_ucm unloaded): the next scan says so.
	if err := os.Remove(filepath.Join(b.Dev(), "infiniband", "rdma_cm")); err != nil {
		t.Fatal(err)
	}
	if h := sysfs.Refresh(root, h, []sysfs.Address{"0000:3b:00.2"}); h.RDMACM || !h.VhostNetNode || !h.TunNode {
		t.Errorf("after removing rdma_cm and adding vhost-net and tun: RDMACM, VhostNetNode, TunNode = %v, %v, %v", h.RDMACM, h.VhostNetNode, h.TunNode)
	}
}

// TestScanRDMAOwnerUnknown: with several RDMA devices, a char device whose
// ibdev names none of them is left out with a warning.
func TestScanRDMAOwnerUnknown(t *testing.T) {
	dir := t.TempDir()
	b := sysfstest.New(dir)
	b.Add(sysfstest.Function{Addr: "0000:5e:00.0", Vendor: "8086", Device: "1592", Driver: "ice", NUMA: 1, Group: "30",
		RDMA: []sysfstest.RDMA{{Name: "irdma0", Verbs: []int{4}}, {Name: "irdma1", Verbs: []int{5}}}})
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(b.Sys(), "bus/pci/devices/0000:5e:00.0/infiniband_verbs/uverbs5/ibdev")
	if err := os.WriteFile(p, []byte("gone0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := sysfs.Scan(sysfs.Root{Sys: b.Sys(), Dev: b.Dev()})
	if err != nil {
		t.Fatal(err)
	}
	want := []sysfs.RDMADevice{{Name: "irdma0", Nodes: []string{"uverbs4"}}, {Name: "irdma1"}}
	if diff := cmp.Diff(want, h.Device("0000:5e:00.0").RDMA); diff != "" {
		t.Errorf("RDMA (-want +got)\n%s", diff)
	}
	if len(h.Warnings) != 1 {
		t.Errorf("warnings = %v, want one about uverbs5", h.Warnings)
	}
}

// TestFingerprintRDMA: an RDMA driver registering a device on a function
// (no PCI driver change) moves the fingerprint.
func TestFingerprintRDMA(t *testing.T) {
	dir := t.TempDir()
	b := sysfstest.New(dir)
	b.Add(sysfstest.Function{Addr: "0000:3b:00.2", Vendor: "15b3", Device: "101e", Driver: "mlx5_core", NUMA: 0, Group: "21"})
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	root := sysfs.Root{Sys: b.Sys(), Dev: b.Dev()}
	before, err := sysfs.Fingerprint(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(b.Sys(), "class/infiniband/mlx5_2"), 0o755); err != nil {
		t.Fatal(err)
	}
	after, err := sysfs.Fingerprint(root)
	if err != nil || after == before {
		t.Errorf("fingerprint %x -> %x (%v); want a change when an RDMA device appears", before, after, err)
	}
}
