package sysfs

import (
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// RDMA device nodes live in /dev/infiniband: per RDMA device one verbs node
// (uverbsN) and per port a MAD node (umadN) and a subnet-manager node
// (issmN); the connection manager's node (rdma_cm) serves every device.
const (
	RDMADevDir = "infiniband" // under Root.Dev
	RDMACMNode = "rdma_cm"
)

// RDMADevice is an RDMA device the kernel registered on a PCI function (e.g.
// mlx5_ib's "mlx5_0" on a ConnectX VF) with its character devices, found
// the way the kernel lays them out in the function's directory:
// infiniband/<ibdev>/, infiniband_verbs/uverbsN/, infiniband_mad/umadN/ and
// infiniband_mad/issmN/ (each holding ibdev and dev). Soft-RoCE (rdma_rxe)
// devices are virtual (/sys/devices/virtual/infiniband) and never show up
// here.
type RDMADevice struct {
	Name string `json:"name"` // the ibdev, e.g. "mlx5_0"
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
	for _, class := range []struct{ dir, prefix string }{
		{"infiniband_verbs", "uverbs"}, {"infiniband_mad", "umad"}, {"infiniband_mad", "issm"},
	} {
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
