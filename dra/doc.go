// Package dra is the Dynamic Resource Allocation front door: it publishes
// the pools with api: dra as ResourceSlices (resource.k8s.io/v1) through
// k8s.io/dynamic-resource-allocation's kubeletplugin helper, and prepares
// and unprepares ResourceClaims for kubelet (NodePrepareResources,
// NodeUnprepareResources) over the same core as the device plugin: the
// plan (core/pool), vfio binding (core/binding), CDI specs (cdi/).
//
// The decisions are pure and table-tested: device names (DeviceName),
// attributes and taints (DeviceFor), deterministic slicing (Resources),
// health reports (HealthOf), which units a claim names and whether one is
// already prepared for another claim (claimUnits, conflicts). The effects
// live at the edges: Driver (the helper, the API server), the checkpoint
// file, CDI spec files, the binding manager.
//
// It must not decide which devices a pool holds (core/pool does) nor write
// a driver attribute itself (core/binding does, for vfio pools only).
package dra
