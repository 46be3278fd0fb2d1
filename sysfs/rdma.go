package sysfs

import (
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// RDMA device nodes live in /dev/infiniband: per RDMA device one verbs node
// (uverbsN) and per port a MAD node (umadN) and a subnet-manager node
// (issmN); the connection manager's node (rdma_cm) serves every device.
const (
	RDMADevDir = "infiniband" // under Root.Dev
	RDMACMNode = "rdma_cm"
)

// RDMADevice is an RDMA device of a PCI function with its character
// devices. Two kinds are found:
//
//   - one the kernel registered on the function itself (e.g. mlx5_ib's
//     "mlx5_0" on a ConnectX VF), laid out in the function's directory:
//     infiniband/<ibdev>/, infiniband_verbs/uverbsN/, infiniband_mad/umadN/
//     and infiniband_mad/issmN/ (each holding ibdev and dev);
//   - a virtual one bound to one of the function's netdevs: soft-RoCE
//     (rdma_rxe, `rdma link add rxe0 type rxe netdev <vf>`). It lives in
//     /sys/devices/virtual/infiniband/<ibdev> with no device link; its
//     netdev is the name in its parent attribute (rxe's own), else in
//     ports/1/gid_attrs/ndevs/0 (the netdev of GID 0 on a RoCE port). Its
//     char devices are virtual too (/sys/devices/virtual/infiniband_verbs/
//     uverbsN, .../infiniband_mad/{umad,issm}N), numbered in registration
//     order, not after the ibdev: rxe7 may own uverbs0. The kernel
//     unregisters it when the netdev goes (unbinding the VF's driver) and
//     does not bring it back with the netdev.
type RDMADevice struct {
	Name string `json:"name"` // the ibdev, e.g. "mlx5_0", "rxe0"
	// Netdev is the netdev a virtual RDMA device (soft-RoCE) is bound to,
	// "" for one registered on the function itself.
	Netdev string `json:"netdev,omitempty"`
	// Nodes are its character devices as names under /dev/infiniband:
	// uverbs first, then umad, then issm, each in index order.
	Nodes []string `json:"nodes,omitempty"`
	// Missing lists the Nodes that do not exist under Root.Dev/infiniband
	// (a container runtime could not inject them).
	Missing []string `json:"missing,omitempty"`
}

// RDMANodePath is the host path of an RDMA character device name.
func (r Root) RDMANodePath(name string) string { return filepath.Join(r.Dev, RDMADevDir, name) }

// readRDMA reads the RDMA devices of the function open as dfd, whose
// infiniband/ directory lists ibdevs. A function with one RDMA device (every
// VF) owns all its char devices without reading their ibdev files.
func (s *scanner) readRDMA(dfd int, dir string, ibdevs []string, buf []byte, warn func(string, ...any)) []RDMADevice {
	slices.Sort(ibdevs)
	out := make([]RDMADevice, len(ibdevs))
	for i, n := range ibdevs {
		out[i].Name = n
	}
	for _, class := range rdmaCharClasses {
		names, err := readDirNamesAt(dfd, class.dir)
		if err != nil {
			continue // no verbs (ib_uverbs not loaded) or no MAD (ib_umad not loaded)
		}
		names = slices.DeleteFunc(names, func(n string) bool { return !isIndexed(n, class.prefix) })
		slices.SortFunc(names, byIndex)
		for _, n := range names {
			owner := 0
			if len(out) > 1 {
				ib, err := readAttrAt(dfd, dir, class.dir+"/"+n+"/ibdev", buf)
				if owner = slices.IndexFunc(out, func(r RDMADevice) bool { return r.Name == ib }); err != nil || owner < 0 {
					warn("%s/%s belongs to no RDMA device of this function (ibdev %q, %v); left out", class.dir, n, ib, err)
					continue
				}
			}
			out[owner].Nodes = append(out[owner].Nodes, n)
			if !s.rdmaNodes[n] {
				out[owner].Missing = append(out[owner].Missing, n)
			}
		}
	}
	return out
}

// isIndexed reports whether name is prefix followed by a decimal number.
func isIndexed(name, prefix string) bool {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok || rest == "" {
		return false
	}
	_, err := strconv.Atoi(rest)
	return err == nil
}

// byIndex orders "uverbs2" before "uverbs10".
func byIndex(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return strings.Compare(a, b)
}

// rdmaCharClasses are the classes of RDMA character devices, in the order
// RDMADevice.Nodes lists them.
var rdmaCharClasses = [...]struct{ dir, prefix string }{
	{"infiniband_verbs", "uverbs"}, {"infiniband_mad", "umad"}, {"infiniband_mad", "issm"},
}

// readVirtualRDMA reads, once per scan, the virtual RDMA devices of the
// host (soft-RoCE) and returns them by the netdev they are bound to. The
// kernel keeps them apart from bus devices, in /sys/devices/virtual/
// infiniband (the class directory mixes both, behind symlinks): a host
// without any costs one failed open. With some, it reads each one's parent
// attribute and lists devices/virtual/infiniband_verbs and
// .../infiniband_mad, reading each entry's ibdev, all relative to one
// directory descriptor per listing. Devices registered on PCI functions are
// not there (readRDMA finds them under their function).
func (s *scanner) readVirtualRDMA() map[string][]RDMADevice {
	virtual := filepath.Join(s.root.Sys, "devices", "virtual")
	dir := filepath.Join(virtual, "infiniband")
	dfd, err := openDir(dir, unix.O_RDONLY)
	if err != nil {
		return nil // no RDMA core loaded, or no virtual RDMA device yet
	}
	defer unix.Close(dfd)
	names, err := readDirNamesAt(dfd, ".")
	if err != nil || len(names) == 0 {
		return nil
	}
	buf := make([]byte, 4096)
	byName := make(map[string]*RDMADevice, len(names))
	for _, n := range names {
		nd, err := readAttrAt(dfd, dir, n+"/parent", buf)
		if err != nil || nd == "" {
			// Not rxe: the netdev of GID 0 of port 1, if it has one.
			nd, err = readAttrAt(dfd, dir, n+"/ports/1/gid_attrs/ndevs/0", buf)
		}
		if err != nil || nd == "" {
			continue // bound to no netdev (or gone): no function to attach it to
		}
		byName[n] = &RDMADevice{Name: n, Netdev: nd}
	}
	if len(byName) == 0 {
		return nil
	}
	for _, class := range rdmaCharClasses {
		dir := filepath.Join(virtual, class.dir)
		cfd, err := openDir(dir, unix.O_RDONLY)
		if err != nil {
			continue // ib_uverbs or ib_umad not loaded
		}
		names, err := readDirNamesAt(cfd, ".")
		if err != nil {
			unix.Close(cfd)
			continue
		}
		names = slices.DeleteFunc(names, func(n string) bool { return !isIndexed(n, class.prefix) })
		slices.SortFunc(names, byIndex)
		for _, n := range names {
			ib, err := readAttrAt(cfd, dir, n+"/ibdev", buf)
			r := byName[ib]
			if err != nil || r == nil {
				continue // another virtual device's, or gone since the listing
			}
			r.Nodes = append(r.Nodes, n)
			if !s.rdmaNodes[n] {
				r.Missing = append(r.Missing, n)
			}
		}
		unix.Close(cfd)
	}
	out := map[string][]RDMADevice{}
	for _, r := range byName {
		out[r.Netdev] = append(out[r.Netdev], *r)
	}
	for _, rs := range out {
		slices.SortFunc(rs, func(a, b RDMADevice) int { return strings.Compare(a.Name, b.Name) })
	}
	return out
}
