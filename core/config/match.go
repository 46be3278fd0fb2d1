package config

import (
	"slices"
	"strings"

	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// Match reports whether d matches any of the pool's selectors. pf is d's PF
// when d is a VF, else nil. The config must have passed Validate.
func (p *Pool) Match(d, pf *sysfs.Device) bool {
	for i := range p.Selectors {
		if p.Selectors[i].Match(d, pf) {
			return true
		}
	}
	return false
}

// Match reports whether d matches every field set in s.
func (s *Selector) Match(d, pf *sysfs.Device) bool {
	if s.empty() {
		return false
	}
	if slices.ContainsFunc(s.ExcludeAddresses, func(a string) bool { return strings.EqualFold(a, string(d.Address)) }) {
		return false
	}
	if len(s.Vendors) > 0 && !containsFold(s.Vendors, d.Vendor) {
		return false
	}
	if len(s.Devices) > 0 && !containsFold(s.Devices, d.Device) {
		return false
	}
	if len(s.Drivers) > 0 && !slices.Contains(s.Drivers, d.Driver) {
		return false
	}
	if len(s.PCIAddresses) > 0 && !containsFold(s.PCIAddresses, string(d.Address)) {
		return false
	}
	if len(s.NUMANodes) > 0 && !slices.Contains(s.NUMANodes, d.NUMANode) {
		return false
	}
	if len(s.LinkTypes) > 0 && !slices.ContainsFunc(d.Netdevs, func(n sysfs.Netdev) bool { return containsFold(s.LinkTypes, n.LinkType) }) {
		return false
	}
	if len(s.RootDevices) > 0 && !slices.ContainsFunc(s.RootDevices, func(v string) bool { return matchRoot(v, d, pf) }) {
		return false
	}
	if len(s.PFNames) > 0 && !slices.ContainsFunc(s.PFNames, func(v string) bool { return matchPFName(v, d, pf) }) {
		return false
	}
	return true
}

// matchRoot: "PF" selects the PF's VFs; "PF#ranges" the VFs with those
// indexes. A function that is not a VF matches its own address without
// ranges (a PF used as a whole device).
func matchRoot(v string, d, pf *sysfs.Device) bool {
	addr, ranges, err := splitNameRanges(v)
	if err != nil {
		return false
	}
	if pf == nil {
		return len(ranges) == 0 && strings.EqualFold(addr, string(d.Address))
	}
	return strings.EqualFold(addr, string(pf.Address)) && ContainsVF(ranges, d.VFIndex)
}

// matchPFName: "ens1f0" selects the VFs of the PF whose netdev is ens1f0;
// "ens1f0#0-3" only those VF indexes. A function that is not a VF matches
// its own netdev name without ranges.
func matchPFName(v string, d, pf *sysfs.Device) bool {
	name, ranges, err := splitNameRanges(v)
	if err != nil {
		return false
	}
	if pf == nil {
		return len(ranges) == 0 && hasNetdev(d, name)
	}
	return hasNetdev(pf, name) && ContainsVF(ranges, d.VFIndex)
}

func hasNetdev(d *sysfs.Device, name string) bool {
	return slices.ContainsFunc(d.Netdevs, func(n sysfs.Netdev) bool { return n.Name == name })
}

func containsFold(list []string, v string) bool {
	return slices.ContainsFunc(list, func(s string) bool { return strings.EqualFold(s, v) })
}
