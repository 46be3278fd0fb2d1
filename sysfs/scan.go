package sysfs

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Warning is an anomaly met during a scan: the device is skipped or the
// attribute left at its "unknown" value, and the scan goes on.
type Warning struct {
	Device  Address `json:"device"`
	Message string  `json:"message"`
	// vanished marks a function that disappeared; a Refresh that asked for
	// it (a remove uevent) expects that and drops the warning.
	vanished bool
}

func (w Warning) String() string { return string(w.Device) + ": " + w.Message }

// NetUsage tells whether the host itself depends on a netdev (an address
// configured on it, the default route through it). It returns the reason,
// or "" when the host does not use it.
type NetUsage interface {
	HostUse(ifname string) string
}

// ScanOption configures Scan.
type ScanOption func(*scanner)

// WithNetUsage makes the scan record which netdevs the host uses; f is
// called once per Scan, Refresh or ReadGroups (LiveNet.Current: one
// rtnetlink dump, or none while nothing changed). Without it
// Netdev.HostUse stays empty: a fixture tree has no live network state.
func WithNetUsage(f func() NetUsage) ScanOption { return func(s *scanner) { s.netFn = f } }

// Scan reads every PCI function under root. It fails only when the PCI bus
// directory itself cannot be read; a function that vanishes or shows
// garbage is skipped or degraded with a Warning naming it, so one bad entry
// never loses the others.
func Scan(root Root, opts ...ScanOption) (*Host, error) {
	s := newScanner(root, opts)
	busDir := filepath.Join(root.Sys, "bus", "pci", "devices")
	names, err := readDirNames(busDir)
	if err != nil {
		return nil, fmt.Errorf("list PCI devices in %q (is the sysfs root right?): %w", busDir, err)
	}
	devs, warns := s.readAll(names)
	h := NewHost(devs, nil)
	warns = append(warns, linkVFs(h, nil)...)
	sortWarnings(warns)
	h.Warnings = warns
	s.finish(h)
	return h, nil
}

// Refresh returns a new Host in which the functions at addrs — and the PFs
// of those that are VFs, whose virtfn links change with sriov_numvfs — are
// read again, functions that vanished are dropped and VFs a re-read PF
// newly lists are added. Everything else is shared with prev, which is not
// modified. It serves kernel uevents that name the functions they concern;
// a full Scan remains the safety net.
func Refresh(root Root, prev *Host, addrs []Address, opts ...ScanOption) *Host {
	s := newScanner(root, opts)
	want := map[Address]bool{}
	for _, a := range addrs {
		want[a] = true
		if d := prev.Device(a); d != nil && d.PhysFn != "" {
			want[d.PhysFn] = true
		}
	}
	read := func(set map[Address]bool) ([]*Device, []Warning) {
		names := make([]string, 0, len(set))
		for a := range set {
			names = append(names, string(a))
		}
		return s.readAll(names)
	}
	fresh, warns := read(want)
	warns = slices.DeleteFunc(warns, func(w Warning) bool { return w.vanished })
	// A VF read for the first time names its PF; a PF read again may list
	// VFs nobody announced yet.
	more := map[Address]bool{}
	for _, d := range fresh {
		if d.PhysFn != "" && !want[d.PhysFn] {
			more[d.PhysFn] = true
		}
		if d.SRIOV != nil {
			for _, vf := range d.SRIOV.VFs {
				if !want[vf] && prev.Device(vf) == nil {
					more[vf] = true
				}
			}
		}
	}
	if len(more) > 0 {
		extra, w := read(more)
		fresh, warns = append(fresh, extra...), append(warns, w...)
		maps.Copy(want, more)
	}
	isFresh := make(map[Address]bool, len(fresh))
	devs := make([]*Device, 0, len(prev.Devices)+len(fresh))
	for _, d := range fresh {
		isFresh[d.Address] = true
		devs = append(devs, d)
	}
	for _, d := range prev.Devices {
		if !want[d.Address] {
			devs = append(devs, d)
		}
	}
	for _, w := range prev.Warnings {
		if !want[w.Device] {
			warns = append(warns, w)
		}
	}
	h := NewHost(devs, nil)
	warns = append(warns, linkVFs(h, isFresh)...)
	sortWarnings(warns)
	h.Warnings = warns
	s.finish(h)
	return h
}

func newScanner(root Root, opts []ScanOption) *scanner {
	s := &scanner{root: root, vfioGroups: map[string]bool{}, vfioDevices: map[string]bool{}, rdmaNodes: map[string]bool{}}
	for _, o := range opts {
		o(s)
	}
	if s.netFn != nil {
		s.net = s.netFn()
	}
	if groups, err := readDirNames(filepath.Join(root.Dev, "vfio")); err == nil {
		for _, g := range groups {
			s.vfioGroups[g] = true
		}
	}
	if names, err := readDirNames(filepath.Join(root.Dev, "vfio", "devices")); err == nil {
		for _, n := range names {
			s.vfioDevices[n] = true
		}
	}
	if names, err := readDirNames(filepath.Join(root.Dev, RDMADevDir)); err == nil {
		for _, n := range names {
			s.rdmaNodes[n] = true
		}
	}
	// Read alongside the functions; readDevice waits for it only when it
	// attaches virtual RDMA devices to a function's netdevs.
	s.virtualDone = make(chan struct{})
	go func() {
		defer close(s.virtualDone)
		s.virtualRDMA = s.readVirtualRDMA()
	}()
	return s
}

// readAll reads the named functions, in parallel for large sets, and
// returns the ones it could identify with the warnings met.
func (s *scanner) readAll(names []string) ([]*Device, []Warning) {
	devs := make([]*Device, len(names))
	warns := make([][]Warning, len(names))
	workers := min(runtime.GOMAXPROCS(0), 8, max(1, len(names)/64))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			for i := w; i < len(names); i += workers {
				devs[i], warns[i] = s.readDevice(names[i], buf)
			}
		}()
	}
	wg.Wait()
	var all []Warning
	kept := devs[:0]
	for i, d := range devs {
		all = append(all, warns[i]...)
		if d != nil {
			kept = append(kept, d)
		}
	}
	return kept, all
}

func sortWarnings(w []Warning) {
	sort.SliceStable(w, func(i, j int) bool { return w[i].Device < w[j].Device })
}

type scanner struct {
	root        Root
	netFn       func() NetUsage
	net         NetUsage // netFn's answer for this scan
	vfioGroups  map[string]bool
	vfioDevices map[string]bool // names under /dev/vfio/devices
	rdmaNodes   map[string]bool // names under /dev/infiniband
	// virtualRDMA are the virtual RDMA devices (soft-RoCE) by the netdev
	// they are bound to, read once per scan; set before virtualDone is
	// closed, read-only afterwards.
	virtualRDMA map[string][]RDMADevice
	virtualDone chan struct{}
}

// finish sets what the scan reads once for the whole host.
func (s *scanner) finish(h *Host) {
	h.RDMACM = s.rdmaNodes[RDMACMNode]
	h.VhostNetNode = exists(filepath.Join(s.root.Dev, "vhost-net"))
	h.TunNode = exists(filepath.Join(s.root.Dev, "net", "tun"))
}

func exists(path string) bool {
	var st unix.Stat_t
	return unix.Lstat(path, &st) == nil
}

// readDevice reads one function. It returns nil and a warning when the
// function cannot be identified (vanished, or no vendor/device).
func (s *scanner) readDevice(name string, buf []byte) (*Device, []Warning) {
	var warns []Warning
	addr, err := ParseAddress(name)
	if err != nil {
		return nil, []Warning{{Device: Address(name), Message: "skipped: " + err.Error()}}
	}
	warn := func(format string, args ...any) {
		warns = append(warns, Warning{Device: addr, Message: fmt.Sprintf(format, args...)})
	}
	busPath := s.root.PCIDevicePath(addr)
	dir := busPath
	if target, err := readLink(busPath, buf); err == nil {
		dir = filepath.Join(filepath.Dir(busPath), target)
	}
	d := &Device{Address: addr, NUMANode: -1, VFIndex: -1}
	if rel, err := filepath.Rel(s.root.Sys, dir); err == nil {
		d.Path = rel
	}

	// Every attribute is read relative to one descriptor of the device
	// directory: the kernel walks one path component per call instead of
	// the whole path, which halves the cost of a scan.
	dfd, err := openDir(dir, unix.O_PATH)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, append(warns, Warning{Device: addr, Message: "skipped: vanished during scan (" + err.Error() + ")", vanished: true})
		}
		return nil, append(warns, Warning{Device: addr, Message: "skipped: " + err.Error()})
	}
	defer unix.Close(dfd)

	// uevent carries ids, class and driver in one read.
	ue, err := readAttrAt(dfd, dir, "uevent", buf)
	if err != nil {
		warn("uevent unreadable, reading ids one by one: %v", err)
	}
	parseUevent(ue, d)
	ueventOK := d.Vendor != "" && d.Device != "" && d.Class != ""
	if !ueventOK {
		d.Driver = "" // a garbled uevent says nothing reliable
		if err := readIDs(dfd, dir, d, buf); err != nil {
			return nil, append(warns, Warning{Device: addr, Message: "skipped: cannot identify function: " + err.Error()})
		}
	}

	// uevent's DRIVER= is the bound driver at the time of the read (the
	// kernel prints dev->driver); the link is read only without uevent.
	if !ueventOK {
		if target, err := readLinkAt(dfd, dir, "driver", buf); err == nil {
			d.Driver = filepath.Base(target)
		} else if !errors.Is(err, fs.ErrNotExist) {
			warn("driver link unreadable: %v", err)
		}
	}
	if v, err := readAttrAt(dfd, dir, "driver_override", buf); err == nil && v != "(null)" {
		d.DriverOverride = v
	}
	if target, err := readLinkAt(dfd, dir, "physfn", buf); err == nil {
		pf, perr := ParseAddress(filepath.Base(target))
		if perr != nil {
			warn("physfn link %q does not name a PCI function; treating as not a VF", target)
		} else {
			d.PhysFn = pf
		}
	}
	// A VF sits on its PF's NUMA node and has no SR-IOV capability of its
	// own: both are skipped for VFs (linkVFs copies the node), which saves
	// a third of the system calls on a host full of VFs.
	if !d.IsVF() {
		if v, err := readAttrAt(dfd, dir, "numa_node", buf); err == nil {
			n, perr := strconv.Atoi(v)
			switch {
			case perr != nil:
				warn("numa_node %q is not a number; treating as no NUMA node", v)
			case n >= 0:
				d.NUMANode = n
			}
		}
	}
	if target, err := readLinkAt(dfd, dir, "iommu_group", buf); err == nil {
		d.IOMMUGroup = filepath.Base(target)
		d.VFIOGroupDev = s.vfioGroups[d.IOMMUGroup]
	}
	if d.Driver == "vfio-pci" {
		if names, err := readDirNamesAt(dfd, "vfio-dev"); err == nil && len(names) > 0 {
			d.VFIODevice = names[0]
			d.VFIODeviceNode = s.vfioDevices[d.VFIODevice]
		}
	}
	if !d.IsVF() {
		if v, err := readAttrAt(dfd, dir, "sriov_totalvfs", buf); err == nil {
			d.SRIOV = s.readSRIOV(dfd, dir, v, buf, warn)
		}
	}
	if names, err := readDirNamesAt(dfd, "net"); err == nil {
		sort.Strings(names)
		for _, n := range names {
			d.Netdevs = append(d.Netdevs, s.readNetdev(dfd, dir, n, buf))
		}
	}
	// One openat that fails on functions without an RDMA device; the
	// char device directories are read only behind it.
	if ibdevs, err := readDirNamesAt(dfd, "infiniband"); err == nil && len(ibdevs) > 0 {
		d.RDMA = s.readRDMA(dfd, dir, ibdevs, buf, warn)
	}
	// Then the virtual ones bound to its netdevs (a netdev that went with
	// its driver takes its soft-RoCE device along).
	if len(d.Netdevs) > 0 {
		<-s.virtualDone
		for _, n := range d.Netdevs {
			d.RDMA = append(d.RDMA, s.virtualRDMA[n.Name]...)
		}
	}
	return d, warns
}

// MaxVFs bounds the virtfn links read per PF whatever sriov_totalvfs
// says: TotalVFs is a 16-bit field of the PCIe SR-IOV capability, so no
// device can have more.
const MaxVFs = 65535

func (s *scanner) readSRIOV(dfd int, dir, total string, buf []byte, warn func(string, ...any)) *SRIOV {
	sr := &SRIOV{}
	var err error
	limit := MaxVFs
	switch sr.TotalVFs, err = strconv.Atoi(total); {
	case err != nil || sr.TotalVFs < 0:
		warn("sriov_totalvfs %q is not a number of VFs; reading at most %d virtfn links", total, MaxVFs)
		sr.TotalVFs = 0
	case sr.TotalVFs > MaxVFs:
		warn("sriov_totalvfs %d exceeds the SR-IOV maximum %d; reading at most %d virtfn links", sr.TotalVFs, MaxVFs, MaxVFs)
	default:
		limit = sr.TotalVFs
	}
	if v, err := readAttrAt(dfd, dir, "sriov_numvfs", buf); err == nil {
		switch sr.NumVFs, err = strconv.Atoi(v); {
		case err != nil || sr.NumVFs < 0:
			warn("sriov_numvfs %q is not a number of VFs; treating as 0", v)
			sr.NumVFs = 0
		case sr.NumVFs > limit:
			warn("sriov_numvfs %d exceeds sriov_totalvfs %s; reading the first %d virtfn links", sr.NumVFs, total, limit)
			sr.NumVFs = limit
		}
	}
	if v, err := readAttrAt(dfd, dir, "sriov_drivers_autoprobe", buf); err == nil {
		sr.DriversAutoprobe = v == "1"
	}
	missing, first := 0, error(nil)
	for i := 0; i < sr.NumVFs; i++ {
		target, err := readLinkAt(dfd, dir, "virtfn"+strconv.Itoa(i), buf)
		if err != nil {
			if missing++; first == nil {
				first = fmt.Errorf("virtfn%d unreadable although sriov_numvfs is %d: %w", i, sr.NumVFs, err)
			}
			continue
		}
		vf, err := ParseAddress(filepath.Base(target))
		if err != nil {
			warn("virtfn%d link %q does not name a PCI function", i, target)
			continue
		}
		sr.VFs = append(sr.VFs, vf)
	}
	switch {
	case missing == 1:
		warn("%v", first)
	case missing > 1:
		warn("%v (and %d more virtfn links missing)", first, missing-1)
	}
	return sr
}

// readNetdev reads net/<name>/ of the device open as dfd.
func (s *scanner) readNetdev(dfd int, dir, name string, buf []byte) Netdev {
	n := Netdev{Name: name}
	rel := "net/" + name + "/"
	n.OperState, _ = readAttrAt(dfd, dir, rel+"operstate", buf)
	// carrier reads EINVAL while the interface is down: no carrier.
	if n.OperState == "up" {
		if v, err := readAttrAt(dfd, dir, rel+"carrier", buf); err == nil {
			n.Carrier = v == "1"
		}
	}
	if v, err := readAttrAt(dfd, dir, rel+"type", buf); err == nil {
		n.LinkType = linkType(v)
	}
	if s.net != nil {
		n.HostUse = s.net.HostUse(name)
	}
	return n
}

// linkVFs sets each VF's index and NUMA node from its PF's virtfnN links
// and reports links that disagree. It is linear in the number of functions.
// With only != nil, it sets and checks only those VFs (the others are shared
// with an earlier Host and must not be written).
func linkVFs(h *Host, only map[Address]bool) []Warning {
	var warns []Warning
	for _, pf := range h.Devices {
		if pf.SRIOV == nil {
			continue
		}
		for i, vfAddr := range pf.SRIOV.VFs {
			vf := h.Device(vfAddr)
			if vf == nil || only != nil && !only[vfAddr] {
				continue // vanished (already warned) or not ours to write
			}
			if vf.PhysFn != pf.Address {
				warns = append(warns, Warning{Device: vfAddr, Message: fmt.Sprintf("%s lists it as a VF but its physfn is %q", pf.Address, vf.PhysFn)})
				continue
			}
			vf.VFIndex = i
			vf.NUMANode = pf.NUMANode
		}
	}
	for _, d := range h.Devices {
		if d.IsVF() && d.VFIndex < 0 && (only == nil || only[d.Address]) {
			warns = append(warns, Warning{Device: d.Address, Message: fmt.Sprintf("physfn %s has no virtfn link to it; VF index unknown", d.PhysFn)})
		}
	}
	return warns
}

func parseUevent(s string, d *Device) {
	for line := range strings.Lines(s) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok {
			continue
		}
		switch k {
		case "DRIVER":
			d.Driver = v
		case "PCI_ID":
			vendor, device, _ := strings.Cut(v, ":")
			if len(vendor) == 4 && isHex(vendor) && len(device) == 4 && isHex(device) {
				d.Vendor, d.Device = strings.ToLower(vendor), strings.ToLower(device)
			}
		case "PCI_SUBSYS_ID":
			vendor, device, _ := strings.Cut(v, ":")
			if len(vendor) == 4 && isHex(vendor) && len(device) == 4 && isHex(device) {
				d.SubsystemVendor, d.SubsystemDevice = strings.ToLower(vendor), strings.ToLower(device)
			}
		case "PCI_CLASS":
			if c, err := strconv.ParseUint(v, 16, 32); err == nil && c <= 0xffffff {
				d.Class = fmt.Sprintf("%06x", c)
			}
		}
	}
}

// readIDs is the fallback when uevent is missing or incomplete.
func readIDs(dfd int, dir string, d *Device, buf []byte) error {
	read := func(attr string, digits int) (string, error) {
		v, err := readAttrAt(dfd, dir, attr, buf)
		if err != nil {
			return "", err
		}
		h := strings.TrimPrefix(strings.ToLower(v), "0x")
		if len(h) != digits || !isHex(h) {
			return "", fmt.Errorf("%s %q is not %d hex digits", attr, v, digits)
		}
		return h, nil
	}
	var err error
	if d.Vendor, err = read("vendor", 4); err != nil {
		return err
	}
	if d.Device, err = read("device", 4); err != nil {
		return err
	}
	if d.Class, err = read("class", 6); err != nil {
		return err
	}
	d.SubsystemVendor, _ = read("subsystem_vendor", 4)
	d.SubsystemDevice, _ = read("subsystem_device", 4)
	return nil
}

func linkType(arphrd string) string {
	switch arphrd {
	case "1":
		return "ether"
	case "32":
		return "infiniband"
	default:
		return arphrd
	}
}

// readAttrAt reads a small sysfs attribute of the directory open as dfd
// (dir is its path, for errors) with three system calls — openat, read,
// close — and returns it without surrounding white space.
func readAttrAt(dfd int, dir, name string, buf []byte) (string, error) {
	fd, err := retry(func() (int, error) { return unix.Openat(dfd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0) })
	if err != nil {
		return "", &fs.PathError{Op: "open", Path: filepath.Join(dir, name), Err: err}
	}
	defer unix.Close(fd)
	n, err := retry(func() (int, error) { return unix.Read(fd, buf) })
	if err != nil {
		return "", &fs.PathError{Op: "read", Path: filepath.Join(dir, name), Err: err}
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

func readLinkAt(dfd int, dir, name string, buf []byte) (string, error) {
	n, err := unix.Readlinkat(dfd, name, buf)
	if err != nil {
		return "", &fs.PathError{Op: "readlink", Path: filepath.Join(dir, name), Err: err}
	}
	return string(buf[:n]), nil
}

func readLink(path string, buf []byte) (string, error) {
	n, err := unix.Readlink(path, buf)
	if err != nil {
		return "", &fs.PathError{Op: "readlink", Path: path, Err: err}
	}
	return string(buf[:n]), nil
}

func openDir(dir string, flags int) (int, error) {
	fd, err := retry(func() (int, error) { return unix.Open(dir, flags|unix.O_DIRECTORY|unix.O_CLOEXEC, 0) })
	if err != nil {
		return -1, &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	return fd, nil
}

// readDirNamesAt lists dfd's subdirectory name with getdents directly
// (os.NewFile would add an fcntl per directory).
func readDirNamesAt(dfd int, name string) ([]string, error) {
	fd, err := retry(func() (int, error) {
		return unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var names []string
	buf := make([]byte, 4096)
	for {
		n, err := retry(func() (int, error) { return unix.Getdents(fd, buf) })
		if err != nil {
			return nil, &fs.PathError{Op: "getdents", Path: name, Err: err}
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}

func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

func retry(op func() (int, error)) (int, error) {
	for {
		n, err := op()
		if err != unix.EINTR {
			return n, err
		}
	}
}

// ReadGroups reads, fresh from root, only what binding the functions at
// addrs depends on: those functions, every function now in their IOMMU
// groups (kernel/iommu_groups/<group>/devices) and the PFs of all of them.
// Nothing else is read. The Host it returns holds just those functions, so
// its Groups list every current member of each group read. It fails when a
// group's member list cannot be read: a check must not pass on a partial
// group.
func ReadGroups(root Root, addrs []Address, opts ...ScanOption) (*Host, error) {
	s := newScanner(root, opts)
	read := map[Address]bool{}
	var devs []*Device
	var warns []Warning
	readSet := func(set []Address) []*Device {
		var names []string
		for _, a := range set {
			if !read[a] {
				read[a] = true
				names = append(names, string(a))
			}
		}
		fresh, w := s.readAll(names)
		devs, warns = append(devs, fresh...), append(warns, w...)
		return fresh
	}
	first := readSet(addrs)
	var members []Address
	groups := map[string]bool{}
	for _, d := range first {
		if d.IOMMUGroup == "" || groups[d.IOMMUGroup] {
			continue
		}
		groups[d.IOMMUGroup] = true
		dir := filepath.Join(root.Sys, "kernel", "iommu_groups", d.IOMMUGroup, "devices")
		names, err := readDirNames(dir)
		if err != nil {
			return nil, fmt.Errorf("list IOMMU group %s of %s: %w", d.IOMMUGroup, d.Address, err)
		}
		for _, n := range names {
			a, err := ParseAddress(n)
			if err != nil {
				return nil, fmt.Errorf("IOMMU group %s lists %q: %w", d.IOMMUGroup, n, err)
			}
			members = append(members, a)
		}
	}
	var pfs []Address
	for _, d := range append(first, readSet(members)...) {
		if d.PhysFn != "" {
			pfs = append(pfs, d.PhysFn)
		}
	}
	readSet(pfs)
	h := NewHost(devs, nil)
	warns = append(warns, linkVFs(h, nil)...)
	sortWarnings(warns)
	h.Warnings = warns
	s.finish(h)
	return h, nil
}
