// Package binding prepares the devices of vfio pools: it binds every
// endpoint function of a unit's IOMMU group to vfio-pci when kubelet
// allocates the unit (or at startup), checks the safety interlocks again
// at bind time on a fresh scan, rolls everything back on any failure, and
// returns functions to their original driver on release or on request.
//
// It owns the state file, which records each function's original driver
// before the first write and the operation in flight, and reconciles it at
// start so that a crash never leaves a function driverless. It owns the
// watcher that learns from kubelet's PodResources API which devices were
// released.
//
// It must not decide which devices a pool holds (plugin/pool does), and it
// must never write a driver attribute for a pool that is not in vfio mode:
// Manager.Prepare is the one place that enforces it. All writes go through
// sysfs.Binder.
package binding
