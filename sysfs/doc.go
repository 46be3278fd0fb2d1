// Package sysfs reads the kernel's PCI world — functions, SR-IOV physical and
// virtual functions, IOMMU groups, drivers, NUMA nodes and netdevs — from a
// sysfs tree rooted at a configurable directory, and performs driver binding
// (driver_override, unbind, drivers_probe) with timeouts and rollback.
//
// It owns the on-disk layout of /sys and /dev/vfio and nothing else: it knows
// no Kubernetes concepts (pools, resources, allocation). Every function takes
// a Root; there are no package-level paths. Reads never modify the host;
// writes live only in the Binder.
package sysfs
