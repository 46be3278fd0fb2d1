// Package cdi turns the pools the plugin hands out into Container Device
// Interface specs, keeps those spec files current on disk, and makes sure a
// CDI device reaches a container exactly once.
//
// It owns three things:
//
//   - Spec building (SpecFor, SpecsFor): pure functions from a pool.Pool and
//     a sysfs.Host snapshot to one CDI spec per pool. The spec's kind is the
//     pool's resource name and each device is named by the unit's device ID,
//     the contract that lets Kata resolve "<resource>=<id>" from kubelet's
//     PodResources API as a CDI device.
//   - The Writer: the only code that touches the CDI spec directory. It
//     writes through the CDI library (validation, atomic rename), makes the
//     files world-readable, writes nothing when nothing changed, and removes
//     spec files of ours (recognised by the SpecFilePrefix name prefix) whose
//     pool no longer exists. It never follows a symbolic link inside the
//     directory: a link with our name is replaced or removed, its target
//     left alone.
//   - "Never inject twice" (InjectOnce, ParseAnnotations, Present): the rules
//     runtimes and our NRI plugin (package cdi/nri) use so a device that was
//     cold-plugged into a sandbox or already injected from the CRI device
//     list is not injected again from a cdi.k8s.io/* annotation.
//
// It must not: bind drivers or write sysfs (package sysfs does), decide what
// a pool hands out (package core/pool does), talk to kubelet, or write
// anywhere but the spec directory it was given. Device node major/minor
// numbers are not written into a spec: VFIO group, iommufd and RDMA minors
// are allocated dynamically, so pinned numbers could go stale and grant a
// container the wrong device. The runtime reads them from the host node
// when it injects the device (the CDI library lstat's any node whose Type
// and Major are unset), and fails loudly if the node is missing. The one
// exception is /dev/vhost-net and /dev/net/tun when the host has no node:
// their misc minors are fixed in the kernel, so they are pinned.
package cdi
