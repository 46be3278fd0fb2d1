// Package sysfstest writes fake sysfs trees that mirror the layout of a real
// kernel's (checked against a 6.1 snapshot, see sysfs/sample): device
// directories nested under their bridges in /sys/devices, relative symlinks
// in /sys/bus/pci/{devices,drivers}, /sys/kernel/iommu_groups, physfn and
// virtfnN links, driver links, net/ directories, and /dev/vfio nodes (as
// regular files). Synthetic parts: no binary attributes, no power/ or
// msi_irqs/, netdevs under net/ carry only operstate, carrier, type and
// address.
//
// It is test support, used by tests of several packages and by the lab
// tooling; production code never imports it.
package sysfstest

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Function describes one PCI function to write.
type Function struct {
	Addr           string // "0000:3b:02.1"
	Vendor, Device string // "8086", "154c"
	SubVendor      string // defaults to Vendor
	SubDevice      string // defaults to Device
	Class          string // "020000"; defaults to "020000" (Ethernet)
	Driver         string // "" for none
	DriverOverride string
	NUMA           int    // written as is; use -1 for none
	Group          string // IOMMU group; "" for no group
	Parent         string // address of the bridge above, "" for the root bus
	Netdevs        []Netdev
	// RDMA devices registered on the function (an RDMA driver such as
	// mlx5_ib bound), written as the kernel shows them.
	RDMA []RDMA
	// PF-only: SR-IOV capability. TotalVFs > 0 marks a PF.
	TotalVFs  int
	Autoprobe bool
	// VF-only: the PF address; set by AddPF.
	physfn  string
	virtfns []string
}

// Netdev is a netdev under a function's net/ directory.
type Netdev struct {
	Name      string
	OperState string // "up" or "down"
	Carrier   bool
	Type      int // ARPHRD: 1 ether, 32 infiniband; 0 means 1
}

// RDMA is an RDMA device of a function, as the kernel lays it out: the
// function's infiniband/<Name>/ (and /sys/class/infiniband/<Name>),
// infiniband_verbs/uverbsN/ and infiniband_mad/{umad,issm}N/ with ibdev and
// dev (major:minor) files and a device link back to the function, and the nodes in /dev/infiniband (regular files).
type RDMA struct {
	Name  string // ibdev, e.g. "mlx5_0"
	Verbs []int  // N of each uverbsN (one per device on real hardware)
	MAD   []int  // N of each umadN and issmN pair (one per port)
	// NoNodes leaves the /dev/infiniband nodes out (sysfs only).
	NoNodes bool
}

// SoftRoCE is a virtual RDMA device bound to a netdev (rdma_rxe, `rdma
// link add <Name> type rxe netdev <Netdev>`), written as a 6.1 kernel shows
// it (checked in the e2e-nic lab): /sys/devices/virtual/infiniband/<Name>
// with parent (the netdev name), node_type, ports/1/{state,link_layer,
// gid_attrs/ndevs/0} and no device link; the class link in
// class/infiniband; its char devices under /sys/devices/virtual/
// infiniband_verbs/uverbs<Verbs> and .../infiniband_mad/{umad,issm}<MAD>
// (ibdev, dev; port for MAD) with class links; the nodes in
// /dev/infiniband. The kernel numbers char devices in registration order,
// not after the ibdev: rxe7 may own uverbs0.
type SoftRoCE struct {
	Name   string // ibdev, e.g. "rxe0"
	Netdev string // the netdev it is bound to
	Verbs  int    // N of uverbsN; -1 for none (ib_uverbs not loaded)
	MAD    int    // N of umadN and issmN; -1 for none (ib_umad not loaded)
	// NoParent leaves out rxe's parent attribute (another driver's virtual
	// RDMA device): the netdev is then only in gid_attrs/ndevs/0.
	NoParent bool
	// NoNodes leaves the /dev/infiniband nodes out (sysfs only).
	NoNodes bool
}

// Builder accumulates functions and writes them under Dir.
type Builder struct {
	Dir   string // the fixture root; the tree is Dir/sys and Dir/dev
	funcs map[string]*Function
	// RDMACM writes /dev/infiniband/rdma_cm (rdma_ucm loaded).
	RDMACM bool
	// SoftRoCE devices to write.
	SoftRoCE []SoftRoCE
}

// New returns a builder for a tree rooted at dir.
func New(dir string) *Builder { return &Builder{Dir: dir, funcs: map[string]*Function{}} }

// Add adds a function (a bridge, an endpoint, a PF without VFs).
func (b *Builder) Add(f Function) *Builder {
	c := f
	b.funcs[f.Addr] = &c
	return b
}

// AddPF adds a PF and its VFs. The VFs inherit the PF's parent and get
// physfn links; the PF gets virtfnN links in the order given, sriov_numvfs
// = len(vfs) and sriov_totalvfs = pf.TotalVFs (at least len(vfs)).
func (b *Builder) AddPF(pf Function, vfs ...Function) *Builder {
	if pf.TotalVFs < len(vfs) {
		pf.TotalVFs = len(vfs)
	}
	if pf.TotalVFs == 0 {
		pf.TotalVFs = 1
	}
	for _, vf := range vfs {
		vf.physfn = pf.Addr
		vf.Parent = pf.Parent
		pf.virtfns = append(pf.virtfns, vf.Addr)
		b.Add(vf)
	}
	return b.Add(pf)
}

// Root paths of the written tree.
func (b *Builder) Sys() string { return filepath.Join(b.Dir, "sys") }
func (b *Builder) Dev() string { return filepath.Join(b.Dir, "dev") }

// devPath is the canonical directory of a function relative to Sys.
func (b *Builder) devPath(addr string) string {
	f := b.funcs[addr]
	if f == nil || f.Parent == "" {
		domain, _, _ := strings.Cut(addr, ":")
		return filepath.Join("devices", "pci"+domain+":00", addr)
	}
	return filepath.Join(b.devPath(f.Parent), addr)
}

// Write creates the tree. It may be called once per Builder.
func (b *Builder) Write() error {
	w := &writer{sys: b.Sys()}
	for _, d := range []string{"bus/pci/devices", "bus/pci/drivers", "kernel/iommu_groups", "class/net", "devices/system/node/node0"} {
		w.mkdir(d)
	}
	w.file("bus/pci/drivers_probe", "", 0o200)
	w.file("bus/pci/drivers_autoprobe", "1", 0o644)
	w.mkdir(filepath.Join("..", "dev", "vfio"))
	w.file(filepath.Join("..", "dev", "vfio", "vfio"), "", 0o666)
	if b.RDMACM {
		w.file(filepath.Join("..", "dev", "infiniband", "rdma_cm"), "", 0o666)
	}

	addrs := make([]string, 0, len(b.funcs))
	for a := range b.funcs {
		addrs = append(addrs, a)
	}
	sort.Strings(addrs)
	rdma := len(b.SoftRoCE) > 0
	for _, a := range addrs {
		b.writeFunction(w, b.funcs[a])
		if w.err != nil {
			return w.err
		}
		rdma = rdma || len(b.funcs[a].RDMA) > 0
	}
	if rdma {
		writeRDMAClasses(w)
	}
	for _, r := range b.SoftRoCE {
		writeSoftRoCE(w, r)
	}
	return w.err
}

// writeRDMAClasses writes what the RDMA core and its char device modules
// put in their class directories besides the device links: each class
// holds an abi_version file.
func writeRDMAClasses(w *writer) {
	w.mkdir("class/infiniband")
	w.file("class/infiniband_verbs/abi_version", "6", 0o444)
	w.file("class/infiniband_mad/abi_version", "5", 0o444)
}

// WriteSoftRoCE adds a soft-RoCE device to a written tree, as `rdma link
// add` does on a live kernel.
func WriteSoftRoCE(dir string, r SoftRoCE) error {
	w := &writer{sys: filepath.Join(dir, "sys")}
	writeRDMAClasses(w)
	writeSoftRoCE(w, r)
	return w.err
}

// RemoveSoftRoCE removes a soft-RoCE device from a written tree, as the
// kernel does on `rdma link delete` or when its netdev goes away: the
// device, its char devices with their class links, and their nodes.
func RemoveSoftRoCE(dir, name string) error {
	sys := filepath.Join(dir, "sys")
	for _, class := range []string{"infiniband_verbs", "infiniband_mad"} {
		ents, err := os.ReadDir(filepath.Join(sys, "devices/virtual", class))
		if err != nil {
			continue
		}
		for _, e := range ents {
			ib, err := os.ReadFile(filepath.Join(sys, "devices/virtual", class, e.Name(), "ibdev"))
			if err != nil || strings.TrimSpace(string(ib)) != name {
				continue
			}
			for _, p := range []string{filepath.Join(sys, "class", class, e.Name()), filepath.Join(dir, "dev", "infiniband", e.Name())} {
				if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
					return err
				}
			}
			if err := os.RemoveAll(filepath.Join(sys, "devices/virtual", class, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := os.Remove(filepath.Join(sys, "class/infiniband", name)); err != nil {
		return fmt.Errorf("remove soft-RoCE device %q: %w", name, err)
	}
	return os.RemoveAll(filepath.Join(sys, "devices/virtual/infiniband", name))
}

func writeSoftRoCE(w *writer, r SoftRoCE) {
	ib := filepath.Join("devices/virtual/infiniband", r.Name)
	if !r.NoParent {
		w.file(filepath.Join(ib, "parent"), r.Netdev, 0o444)
	}
	w.file(filepath.Join(ib, "node_type"), "1: CA", 0o444)
	w.file(filepath.Join(ib, "uevent"), "NAME="+r.Name, 0o644)
	port := filepath.Join(ib, "ports", "1")
	w.file(filepath.Join(port, "state"), "1: DOWN", 0o444)
	w.file(filepath.Join(port, "link_layer"), "Ethernet", 0o444)
	// GID 0 is the netdev's link-local GID; the kernel lists every index
	// up to the table size, the unused ones unreadable (EINVAL).
	w.file(filepath.Join(port, "gid_attrs", "ndevs", "0"), r.Netdev, 0o444)
	w.file(filepath.Join(port, "gid_attrs", "ndevs", "1"), "", 0o000)
	w.link(filepath.Join(ib, "subsystem"), "class/infiniband")
	w.link(filepath.Join("class/infiniband", r.Name), ib)
	char := func(class, name string, minor int, extra map[string]string) {
		d := filepath.Join("devices/virtual", class, name)
		w.file(filepath.Join(d, "dev"), fmt.Sprintf("%d:%d", ibMajor, minor), 0o444)
		w.file(filepath.Join(d, "ibdev"), r.Name, 0o444)
		w.file(filepath.Join(d, "uevent"), fmt.Sprintf("MAJOR=%d\nMINOR=%d\nDEVNAME=infiniband/%s", ibMajor, minor, name), 0o644)
		for k, v := range extra {
			w.file(filepath.Join(d, k), v, 0o444)
		}
		w.link(filepath.Join(d, "subsystem"), filepath.Join("class", class))
		w.link(filepath.Join("class", class, name), d)
		if !r.NoNodes {
			w.file(filepath.Join(rdmaNodeDevMount, name), "", 0o666)
		}
	}
	if r.Verbs >= 0 {
		char("infiniband_verbs", "uverbs"+strconv.Itoa(r.Verbs), uverbsMinor+r.Verbs, map[string]string{"abi_version": "1"})
	}
	if r.MAD >= 0 {
		port := map[string]string{"port": "1"}
		char("infiniband_mad", "umad"+strconv.Itoa(r.MAD), umadMinor+r.MAD, port)
		char("infiniband_mad", "issm"+strconv.Itoa(r.MAD), issmMinor+r.MAD, port)
	}
}

func (b *Builder) writeFunction(w *writer, f *Function) {
	p := b.devPath(f.Addr)
	cls := f.Class
	if cls == "" {
		cls = "020000"
	}
	subV, subD := f.SubVendor, f.SubDevice
	if subV == "" {
		subV = f.Vendor
	}
	if subD == "" {
		subD = f.Device
	}
	w.mkdir(p)
	ue := fmt.Sprintf("PCI_CLASS=%s\nPCI_ID=%s:%s\nPCI_SUBSYS_ID=%s:%s\nPCI_SLOT_NAME=%s\nMODALIAS=pci:v0000%sd0000%ssv0000%ssd0000%sbc%ssc%si%s\n",
		strings.TrimLeft(strings.ToUpper(cls), "0"), strings.ToUpper(f.Vendor), strings.ToUpper(f.Device),
		strings.ToUpper(subV), strings.ToUpper(subD), f.Addr,
		strings.ToUpper(f.Vendor), strings.ToUpper(f.Device), strings.ToUpper(subV), strings.ToUpper(subD), cls[0:2], cls[2:4], cls[4:6])
	if f.Driver != "" {
		ue = "DRIVER=" + f.Driver + "\n" + ue
	}
	w.file(filepath.Join(p, "uevent"), ue, 0o644)
	w.file(filepath.Join(p, "vendor"), "0x"+f.Vendor, 0o444)
	w.file(filepath.Join(p, "device"), "0x"+f.Device, 0o444)
	w.file(filepath.Join(p, "subsystem_vendor"), "0x"+subV, 0o444)
	w.file(filepath.Join(p, "subsystem_device"), "0x"+subD, 0o444)
	w.file(filepath.Join(p, "class"), "0x"+cls, 0o444)
	w.file(filepath.Join(p, "numa_node"), strconv.Itoa(f.NUMA), 0o644)
	ovr := f.DriverOverride
	if ovr == "" {
		ovr = "(null)"
	}
	w.file(filepath.Join(p, "driver_override"), ovr, 0o644)
	w.file(filepath.Join(p, "reset"), "", 0o200)
	w.file(filepath.Join(p, "remove"), "", 0o220)
	w.link(filepath.Join(p, "subsystem"), "bus/pci")
	w.link(filepath.Join("bus/pci/devices", f.Addr), p)

	if f.Group != "" {
		g := filepath.Join("kernel/iommu_groups", f.Group)
		w.mkdir(filepath.Join(g, "devices"))
		w.file(filepath.Join(g, "type"), "identity", 0o644)
		w.file(filepath.Join(g, "reserved_regions"), "0x00000000fee00000 0x00000000feefffff msi", 0o444)
		w.link(filepath.Join(g, "devices", f.Addr), p)
		w.link(filepath.Join(p, "iommu_group"), g)
	}
	if f.Driver != "" {
		writeDriverLink(w, p, f.Addr, f.Driver)
		if f.Driver == "vfio-pci" && f.Group != "" {
			w.file(filepath.Join("..", "dev", "vfio", f.Group), "", 0o600)
			w.mkdir(filepath.Join(p, "vfio-dev", "vfio0"))
		}
	}
	if f.physfn != "" {
		w.link(filepath.Join(p, "physfn"), b.devPath(f.physfn))
	}
	if f.TotalVFs > 0 {
		w.file(filepath.Join(p, "sriov_totalvfs"), strconv.Itoa(f.TotalVFs), 0o444)
		w.file(filepath.Join(p, "sriov_numvfs"), strconv.Itoa(len(f.virtfns)), 0o644)
		w.file(filepath.Join(p, "sriov_offset"), "1", 0o444)
		w.file(filepath.Join(p, "sriov_stride"), "1", 0o444)
		auto := "0"
		if f.Autoprobe {
			auto = "1"
		}
		w.file(filepath.Join(p, "sriov_drivers_autoprobe"), auto, 0o644)
		for i, vf := range f.virtfns {
			w.link(filepath.Join(p, "virtfn"+strconv.Itoa(i)), b.devPath(vf))
		}
	}
	for _, n := range f.Netdevs {
		nd := filepath.Join(p, "net", n.Name)
		w.mkdir(nd)
		state := n.OperState
		if state == "" {
			state = "down"
		}
		w.file(filepath.Join(nd, "operstate"), state, 0o444)
		carrier := "0"
		if n.Carrier {
			carrier = "1"
		}
		w.file(filepath.Join(nd, "carrier"), carrier, 0o644)
		typ := n.Type
		if typ == 0 {
			typ = 1
		}
		w.file(filepath.Join(nd, "type"), strconv.Itoa(typ), 0o444)
		w.link(filepath.Join("class/net", n.Name), nd)
	}
	for _, r := range f.RDMA {
		writeRDMA(w, p, r)
	}
}

// The kernel's RDMA char device numbers: major 231; umad minors from 0,
// issm from 64, uverbs from 192 (the first range of each).
const (
	ibMajor          = 231
	umadMinor        = 0
	issmMinor        = 64
	uverbsMinor      = 192
	rdmaNodeDevMount = "../dev/infiniband"
)

func writeRDMA(w *writer, p string, r RDMA) {
	ib := filepath.Join(p, "infiniband", r.Name)
	w.mkdir(filepath.Join(ib, "ports", "1"))
	w.file(filepath.Join(ib, "node_type"), "1: CA", 0o444)
	w.link(filepath.Join(ib, "device"), p)
	w.link(filepath.Join("class/infiniband", r.Name), ib)
	char := func(class, name string, minor int, extra map[string]string) {
		d := filepath.Join(p, class, name)
		w.file(filepath.Join(d, "dev"), fmt.Sprintf("%d:%d", ibMajor, minor), 0o444)
		w.file(filepath.Join(d, "ibdev"), r.Name, 0o444)
		w.link(filepath.Join(d, "device"), p)
		for k, v := range extra {
			w.file(filepath.Join(d, k), v, 0o444)
		}
		w.link(filepath.Join("class", class, name), d)
		if !r.NoNodes {
			w.file(filepath.Join(rdmaNodeDevMount, name), "", 0o666)
		}
	}
	for _, n := range r.Verbs {
		char("infiniband_verbs", "uverbs"+strconv.Itoa(n), uverbsMinor+n, map[string]string{"abi_version": "1"})
	}
	for i, n := range r.MAD {
		port := map[string]string{"port": strconv.Itoa(i + 1)}
		char("infiniband_mad", "umad"+strconv.Itoa(n), umadMinor+n, port)
		char("infiniband_mad", "issm"+strconv.Itoa(n), issmMinor+n, port)
	}
}

// writeDriverLink binds addr to driver in the tree the way the kernel shows
// it: the device's driver link and the driver's link back.
func writeDriverLink(w *writer, devPath, addr, driver string) {
	d := filepath.Join("bus/pci/drivers", driver)
	w.mkdir(d)
	for _, f := range []string{"bind", "unbind", "new_id", "remove_id"} {
		w.file(filepath.Join(d, f), "", 0o200)
	}
	w.link(filepath.Join(d, addr), devPath)
	w.link(filepath.Join(devPath, "driver"), d)
}

// writer writes relative to sys and remembers the first error.
type writer struct {
	sys string
	err error
}

func (w *writer) mkdir(rel string) {
	if w.err == nil {
		w.err = os.MkdirAll(filepath.Join(w.sys, rel), 0o755)
	}
}

func (w *writer) file(rel, content string, mode os.FileMode) {
	if w.err != nil {
		return
	}
	p := filepath.Join(w.sys, rel)
	if w.err = os.MkdirAll(filepath.Dir(p), 0o755); w.err != nil {
		return
	}
	if content != "" {
		content += "\n"
	}
	// Owner-writable so tests can mutate the tree; the kernel's modes are
	// kept otherwise.
	w.err = os.WriteFile(p, []byte(content), mode|0o200)
}

// link makes rel a relative symlink to target (both relative to sys), as
// the kernel does.
func (w *writer) link(rel, target string) {
	if w.err != nil {
		return
	}
	p := filepath.Join(w.sys, rel)
	t, err := filepath.Rel(filepath.Dir(p), filepath.Join(w.sys, target))
	if err != nil {
		w.err = err
		return
	}
	if w.err = os.MkdirAll(filepath.Dir(p), 0o755); w.err != nil {
		return
	}
	_ = os.Remove(p)
	w.err = os.Symlink(t, p)
}
