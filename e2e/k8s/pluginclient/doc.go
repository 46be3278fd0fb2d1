// Package pluginclient drives the sriov-cdi device plugin with the real
// kubelet device-plugin client code
// (k8s.io/kubernetes/pkg/kubelet/cm/devicemanager/plugin/v1beta1).
//
// The tests build `sriov-cdi` from the main module, run `sriov-cdi plugin` as
// a subprocess against the real-kernel sysfs snapshot
// (sysfs/sample/nvme-sriov-acs.tar.gz) unpacked into a temporary directory,
// and play kubelet on a temporary kubelet.sock: registration, ListAndWatch,
// GetPreferredAllocation, Allocate and re-registration after a kubelet
// restart. They own no product logic and must not import product packages:
// they see the plugin only through its command line and its gRPC API, as
// kubelet does.
//
// Environment:
//
//	SRIOV_CDI_BIN      use this binary instead of building ./cmd/sriov-cdi
//	SRIOV_CDI_E2E_LOGS print the plugin and kubelet-stub logs even on success
package pluginclient
