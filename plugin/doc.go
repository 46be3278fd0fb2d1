// Package plugin serves each configured pool to kubelet over the device
// plugin API v1beta1: one gRPC server and socket per pool, registration and
// re-registration when kubelet restarts, ListAndWatch with live health,
// GetPreferredAllocation and Allocate. The Manager keeps the pools in step
// with the host (kernel uevents, /dev/vfio events, periodic rescans) and the
// config file (hot reload).
//
// Device decisions come from core/pool (pure); CDI specs and driver
// binding are reached through the SpecSyncer and Preparer interfaces so
// that this package never writes sysfs or CDI files itself.
package plugin
