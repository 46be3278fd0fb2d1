package dra

import (
	"slices"
	"strconv"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/dynamic-resource-allocation/deviceattribute"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// HealthOf is the health of every device of the plan's dra pools, for
// kubelet's resource health API (KEP-4680): Healthy, or Unhealthy with the
// reason (the plan's, or extra's for a unit the plan calls healthy).
// Sorted by pool and device.
func HealthOf(plan *pool.Plan, extra map[sysfs.Address]string, _ time.Time) []kubeletplugin.DeviceHealth {
	var out []kubeletplugin.DeviceHealth
	for i := range plan.Pools {
		p := &plan.Pools[i]
		if p.Config == nil || p.Config.API != config.APIDRA {
			continue
		}
		for _, u := range p.Units {
			h := kubeletplugin.DeviceHealth{PoolName: p.Name, DeviceName: PoolDeviceName(p, u.ID), Health: kubeletplugin.HealthStatusHealthy}
			switch {
			case !u.Healthy:
				h.Health, h.Message = kubeletplugin.HealthStatusUnhealthy, u.Reason
			case extra[u.ID] != "":
				h.Health, h.Message = kubeletplugin.HealthStatusUnhealthy, extra[u.ID]
			}
			out = append(out, h)
		}
	}
	slices.SortFunc(out, func(a, b kubeletplugin.DeviceHealth) int {
		if a.PoolName != b.PoolName {
			if a.PoolName < b.PoolName {
				return -1
			}
			return 1
		}
		if a.DeviceName < b.DeviceName {
			return -1
		}
		if a.DeviceName > b.DeviceName {
			return 1
		}
		return 0
	})
	return out
}

func healthEqual(a, b []kubeletplugin.DeviceHealth) bool {
	return slices.EqualFunc(a, b, func(x, y kubeletplugin.DeviceHealth) bool {
		return x.PoolName == y.PoolName && x.DeviceName == y.DeviceName && x.Health == y.Health && x.Message == y.Message
	})
}

// metadataFor is the device metadata (KEP-5304) of a prepared device:
// what KubeVirt reads (resource.kubernetes.io/pciBusID) and the other
// published attributes when the unit is still in the plan.
func metadataFor(pd PreparedDevice, h *sysfs.Host, driver string) map[string]resourceapi.DeviceAttribute {
	out := map[string]resourceapi.DeviceAttribute{string(deviceattribute.StandardDeviceAttributePCIBusID): str(string(pd.Unit))}
	if h != nil {
		if d := h.Device(pd.Unit); d != nil {
			if root, ok := pcieRoot(d.Path); ok {
				out[string(deviceattribute.StandardDeviceAttributePCIeRoot)] = str(root)
			}
			if d.NUMANode >= 0 {
				out[string(deviceattribute.StandardDeviceAttributeNUMANode)] = integer(int64(d.NUMANode))
			}
			if d.PhysFn != "" {
				out[driver+"/"+string(AttrPF)] = str(string(d.PhysFn))
				out[driver+"/"+string(AttrVFIndex)] = integer(int64(d.VFIndex))
			}
		}
	}
	if pd.Group != "" {
		if g, err := strconv.ParseInt(pd.Group, 10, 64); err == nil {
			out[driver+"/"+string(AttrIOMMUGroup)] = integer(g)
		}
	}
	return out
}
