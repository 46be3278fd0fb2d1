package sysfs

import (
	"fmt"
	"hash/fnv"
	"path/filepath"
	"slices"
)

// Fingerprint summarises, without reading any device, what kernel events
// change under root: the PCI functions present, the functions bound to
// each driver, and the /dev/vfio nodes. It costs one directory listing
// per driver plus five. Equal fingerprints mean a full scan would find
// the same functions on the same drivers; it says nothing about netdev
// state (rtnetlink events carry that) or attributes that change without
// any event (driver_override, sriov_drivers_autoprobe) — a periodic full
// scan still covers those.
func Fingerprint(root Root) (uint64, error) {
	h := fnv.New64a()
	add := func(section string, names []string) {
		slices.Sort(names)
		h.Write([]byte(section))
		for _, n := range names {
			h.Write([]byte{0})
			h.Write([]byte(n))
		}
		h.Write([]byte{0xff})
	}
	bus := filepath.Join(root.Sys, "bus", "pci")
	devs, err := readDirNames(filepath.Join(bus, "devices"))
	if err != nil {
		return 0, fmt.Errorf("list PCI devices: %w", err)
	}
	add("devices", devs)
	drivers, err := readDirNames(filepath.Join(bus, "drivers"))
	if err != nil {
		return 0, fmt.Errorf("list PCI drivers: %w", err)
	}
	slices.Sort(drivers)
	for _, d := range drivers {
		names, err := readDirNames(filepath.Join(bus, "drivers", d))
		if err != nil {
			continue // unloaded while listing: its functions show as unbound
		}
		bound := names[:0]
		for _, n := range names {
			if _, err := ParseAddress(n); err == nil {
				bound = append(bound, n)
			}
		}
		add("driver "+d, bound)
	}
	for _, dir := range []string{"vfio", filepath.Join("vfio", "devices"), RDMADevDir} {
		names, _ := readDirNames(filepath.Join(root.Dev, dir)) // absent: no nodes
		add(dir, names)
	}
	// RDMA devices come and go with their drivers (mlx5_ib binds an
	// auxiliary device, not the PCI function): no PCI driver list shows it.
	ib, _ := readDirNames(filepath.Join(root.Sys, "class", "infiniband"))
	add("class infiniband", ib)
	return h.Sum64(), nil
}
