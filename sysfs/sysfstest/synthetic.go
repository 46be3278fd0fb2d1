package sysfstest

import "fmt"

// SRIOVNICHost describes a host like the ones the plugin serves: pfs Intel
// X710-class PFs (8086:1572, i40e) each behind its own ACS root port, with
// vfsPerPF VFs (8086:154c, iavf) each in its own IOMMU group with a netdev.
// PFs alternate between NUMA nodes 0 and 1. PF i is 0000:(i+1):00.0 with
// netdev "ens<i>f0"; its VF n is function n+1 counting on from there.
func SRIOVNICHost(dir string, pfs, vfsPerPF int) *Builder {
	b := New(dir)
	group := 0
	next := func() string { group++; return fmt.Sprint(group) }
	b.Add(Function{Addr: "0000:00:00.0", Vendor: "8086", Device: "29c0", Class: "060000", NUMA: -1, Group: next()})
	for i := range pfs {
		// Root ports 00:01.0-00:01.7, 00:02.0-...: a device number is at most 1f.
		port := fmt.Sprintf("0000:00:%02x.%d", i/8+1, i%8)
		b.Add(Function{Addr: port, Vendor: "1b36", Device: "000c", Class: "060400", Driver: "pcieport", NUMA: i % 2, Group: next()})
		bus := i + 1
		pf := Function{
			Addr: fmt.Sprintf("0000:%02x:00.0", bus), Vendor: "8086", Device: "1572", Driver: "i40e",
			NUMA: i % 2, Group: next(), Parent: port, TotalVFs: max(vfsPerPF, 1), Autoprobe: true,
			Netdevs: []Netdev{{Name: fmt.Sprintf("ens%df0", i), OperState: "up", Carrier: true}},
		}
		vfs := make([]Function, vfsPerPF)
		for n := range vfsPerPF {
			fn := n + 1
			vfs[n] = Function{
				Addr: fmt.Sprintf("0000:%02x:%02x.%d", bus, fn/8, fn%8), Vendor: "8086", Device: "154c", Driver: "iavf",
				NUMA: i % 2, Group: next(),
				Netdevs: []Netdev{{Name: fmt.Sprintf("ens%df0v%d", i, n), OperState: "up", Carrier: true}},
			}
		}
		b.AddPF(pf, vfs...)
	}
	return b
}
