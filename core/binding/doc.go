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
// It must not decide which devices a pool holds (core/pool does), and it
// must never write a driver attribute for a pool that is not in vfio mode:
// Manager.Prepare is the one place that enforces it. All writes go through
// sysfs.Binder.
//
// Wiring, in the plugin: m, err := NewManager(root, statePath, log,
// WithContext(ctx), DegradeOnBadStateFile()) at start (it reconciles; an
// unusable state file turns vfio binding off with the reason, Unusable,
// and kernel pools serve on); ForAllocate{m} as the Allocate Preparer (kernel
// pools pass through untouched); NewWatcher(m, client, log, 0, 0).Run(ctx)
// with a client from DialPodResources(DefaultPodResourcesSocket), and its
// KubeletRestarted called on every registration with kubelet. Crash
// tests and the e2e lab stop a process between two writes with the
// SRIOV_CDI_FAULT environment variable (see FaultEnv).
package binding
