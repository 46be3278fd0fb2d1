package sysfs_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
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

// softRoCEHost is an igb PF with four igbvf VFs (netdevs eth10..eth13) and
// a ConnectX VF with its own RDMA device, plus soft-RoCE devices laid out
// as the e2e-nic lab's 6.1 kernel shows them: virtual, bound by netdev
// name, char devices numbered in registration order (rxe7 owns uverbs0).
func softRoCEHost(t *testing.T) (*sysfstest.Builder, sysfs.Root) {
	t.Helper()
	b := sysfstest.New(t.TempDir())
	b.RDMACM = true
	var vfs []sysfstest.Function
	for i, a := range []string{"0000:03:10.0", "0000:03:10.2", "0000:03:10.4", "0000:03:10.6"} {
		vfs = append(vfs, sysfstest.Function{Addr: a, Vendor: "8086", Device: "10ca", Driver: "igbvf", NUMA: -1, Group: "3",
			Netdevs: []sysfstest.Netdev{{Name: fmt.Sprintf("eth%d", 10+i), OperState: "up", Carrier: true}}})
	}
	b.AddPF(sysfstest.Function{Addr: "0000:03:00.0", Vendor: "8086", Device: "10c9", Driver: "igb", NUMA: -1, Group: "3", TotalVFs: 7,
		Netdevs: []sysfstest.Netdev{{Name: "eth2", OperState: "up", Carrier: true}}}, vfs...)
	b.AddPF(sysfstest.Function{Addr: "0000:3b:00.0", Vendor: "15b3", Device: "101d", Driver: "mlx5_core", NUMA: 0, Group: "20"},
		sysfstest.Function{Addr: "0000:3b:00.2", Vendor: "15b3", Device: "101e", Driver: "mlx5_core", NUMA: 0, Group: "21",
			Netdevs: []sysfstest.Netdev{{Name: "enp59s0f0v0", OperState: "up", Carrier: true}},
			RDMA:    []sysfstest.RDMA{{Name: "mlx5_2", Verbs: []int{3}, MAD: []int{3}}}})
	b.SoftRoCE = []sysfstest.SoftRoCE{
		{Name: "rxe7", Netdev: "eth11", Verbs: 0, MAD: 0},
		{Name: "rxe2", Netdev: "eth10", Verbs: 1, MAD: 1},
		// Another driver's virtual device: no parent attribute, the netdev
		// of GID 0 names the VF's.
		{Name: "vrdma0", Netdev: "eth12", Verbs: 2, MAD: -1, NoParent: true},
		// Loaded without ib_uverbs' node in /dev (a container /dev).
		{Name: "rxe4", Netdev: "eth13", Verbs: 4, MAD: -1, NoNodes: true},
		// Bound to a netdev no PCI function has (a veth, the PF's own is
		// eth2): attached to nothing.
		{Name: "rxe5", Netdev: "veth0", Verbs: 5, MAD: 5},
		// Soft-RoCE over a ConnectX VF's netdev: both devices are its.
		{Name: "rxe0", Netdev: "enp59s0f0v0", Verbs: 6, MAD: -1},
	}
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	return b, sysfs.Root{Sys: b.Sys(), Dev: b.Dev()}
}

func rdmaByAddr(h *sysfs.Host) map[sysfs.Address][]sysfs.RDMADevice {
	got := map[sysfs.Address][]sysfs.RDMADevice{}
	for _, d := range h.Devices {
		if d.RDMA != nil {
			got[d.Address] = d.RDMA
		}
	}
	return got
}

// TestScanSoftRoCE: a virtual RDMA device is the function's whose netdev it
// is bound to, with the char devices whose ibdev names it.
func TestScanSoftRoCE(t *testing.T) {
	b, root := softRoCEHost(t)
	h, err := sysfs.Scan(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Warnings) != 0 {
		t.Errorf("warnings: %v", h.Warnings)
	}
	want := map[sysfs.Address][]sysfs.RDMADevice{
		"0000:03:10.0": {{Name: "rxe2", Netdev: "eth10", Nodes: []string{"uverbs1", "umad1", "issm1"}}},
		"0000:03:10.2": {{Name: "rxe7", Netdev: "eth11", Nodes: []string{"uverbs0", "umad0", "issm0"}}},
		"0000:03:10.4": {{Name: "vrdma0", Netdev: "eth12", Nodes: []string{"uverbs2"}}},
		"0000:03:10.6": {{Name: "rxe4", Netdev: "eth13", Nodes: []string{"uverbs4"}, Missing: []string{"uverbs4"}}},
		"0000:3b:00.2": {
			{Name: "mlx5_2", Nodes: []string{"uverbs3", "umad3", "issm3"}},
			{Name: "rxe0", Netdev: "enp59s0f0v0", Nodes: []string{"uverbs6"}},
		},
	}
	if diff := cmp.Diff(want, rdmaByAddr(h)); diff != "" {
		t.Errorf("RDMA devices (-want +got)\n%s", diff)
	}

	// The fixture mirrors the lab's kernel: virtual devices without a
	// device link, and an abi_version file among each char class's links.
	for _, p := range []string{"class/infiniband/rxe7", "class/infiniband_verbs/uverbs0", "class/infiniband_mad/issm0"} {
		target, err := filepath.EvalSymlinks(filepath.Join(b.Sys(), p))
		if rel, _ := filepath.Rel(b.Sys(), target); err != nil || !strings.HasPrefix(rel, "devices/virtual/") {
			t.Errorf("%s -> %q (%v), want a directory under devices/virtual", p, target, err)
		}
		if _, err := os.Lstat(filepath.Join(b.Sys(), p, "device")); !os.IsNotExist(err) {
			t.Errorf("%s/device: %v, want none (a virtual device has no parent device)", p, err)
		}
	}
	for _, p := range []string{"class/infiniband_verbs/abi_version", "class/infiniband_mad/abi_version"} {
		if st, err := os.Lstat(filepath.Join(b.Sys(), p)); err != nil || !st.Mode().IsRegular() {
			t.Errorf("%s: %v, want a regular file", p, err)
		}
	}
}

// TestSoftRoCELifecycle follows the kernel's behaviour seen in the lab: the
// VF's driver unbinds (its netdev goes, the kernel unregisters the rxe
// device shortly after), the driver comes back (the netdev returns, the
// rxe device does not), a new link is added (new numbers).
func TestSoftRoCELifecycle(t *testing.T) {
	b, root := softRoCEHost(t)
	const vf = "0000:03:10.2"
	fp := func() uint64 {
		t.Helper()
		f, err := sysfs.Fingerprint(root)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	rdmaOf := func() []sysfs.RDMADevice {
		t.Helper()
		h, err := sysfs.Scan(root)
		if err != nil {
			t.Fatal(err)
		}
		return h.Device(vf).RDMA
	}
	if got := rdmaOf(); len(got) != 1 || got[0].Name != "rxe7" {
		t.Fatalf("before: %v, want rxe7", got)
	}
	// Unbound: netdev eth11 gone, rxe7 not yet unregistered. Its parent
	// names a netdev no function has: it is nobody's.
	if err := sysfstest.SetDriver(b.Dir, vf, "vfio-pci"); err != nil {
		t.Fatal(err)
	}
	if got := rdmaOf(); got != nil {
		t.Errorf("VF on vfio-pci (no netdev): RDMA %v, want none", got)
	}
	before := fp()
	if err := sysfstest.RemoveSoftRoCE(b.Dir, "rxe7"); err != nil {
		t.Fatal(err)
	}
	if fp() == before {
		t.Error("fingerprint unchanged when rxe7 was unregistered")
	}
	for _, p := range []string{"sys/class/infiniband/rxe7", "sys/class/infiniband_verbs/uverbs0", "sys/devices/virtual/infiniband_mad/umad0", "dev/infiniband/issm0"} {
		if _, err := os.Lstat(filepath.Join(b.Dir, p)); !os.IsNotExist(err) {
			t.Errorf("after RemoveSoftRoCE: %s: %v, want gone", p, err)
		}
	}
	if err := sysfstest.SetDriver(b.Dir, vf, "igbvf"); err != nil {
		t.Fatal(err)
	}
	h, err := sysfs.Scan(root)
	if err != nil {
		t.Fatal(err)
	}
	if d := h.Device(vf); len(d.Netdevs) != 1 || d.Netdevs[0].Name != "eth11" || d.RDMA != nil {
		t.Errorf("back on igbvf: netdevs %v RDMA %v; want eth11 and no RDMA device (the kernel does not re-add it)", d.Netdevs, d.RDMA)
	}
	// rdma link add rxe8 netdev eth11: the freed numbers are reused.
	before = fp()
	if err := sysfstest.WriteSoftRoCE(b.Dir, sysfstest.SoftRoCE{Name: "rxe8", Netdev: "eth11", Verbs: 0, MAD: -1}); err != nil {
		t.Fatal(err)
	}
	if fp() == before {
		t.Error("fingerprint unchanged when rxe8 was added")
	}
	want := []sysfs.RDMADevice{{Name: "rxe8", Netdev: "eth11", Nodes: []string{"uverbs0"}}}
	if diff := cmp.Diff(want, rdmaOf()); diff != "" {
		t.Errorf("after adding rxe8 (-want +got)\n%s", diff)
	}
}

// TestScanSoftRoCEUnreadable: a virtual device whose netdev cannot be read
// (no parent, no GID 0) or whose char device names another ibdev is
// attributed to nothing, and the scan goes on.
func TestScanSoftRoCEUnreadable(t *testing.T) {
	b, root := softRoCEHost(t)
	for _, p := range []string{"devices/virtual/infiniband/rxe2/parent", "devices/virtual/infiniband/rxe2/ports/1/gid_attrs/ndevs/0"} {
		if err := os.Remove(filepath.Join(b.Sys(), p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(b.Sys(), "devices/virtual/infiniband_mad/umad0/ibdev"), []byte("rxe99\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := sysfs.Scan(root)
	if err != nil {
		t.Fatal(err)
	}
	if got := h.Device("0000:03:10.0").RDMA; got != nil {
		t.Errorf("rxe2 without parent or GID 0: attributed %v, want nothing", got)
	}
	want := []sysfs.RDMADevice{{Name: "rxe7", Netdev: "eth11", Nodes: []string{"uverbs0", "issm0"}}}
	if diff := cmp.Diff(want, h.Device("0000:03:10.2").RDMA); diff != "" {
		t.Errorf("rxe7 (-want +got)\n%s", diff)
	}
}
