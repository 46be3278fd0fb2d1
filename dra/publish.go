package dra

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/dynamic-resource-allocation/deviceattribute"
	"k8s.io/dynamic-resource-allocation/resourceslice"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// Attribute names in the driver's domain (unqualified names belong to the
// driver). The standard resource.kubernetes.io/ ones come from
// deviceattribute.
const (
	AttrPool       resourceapi.QualifiedName = "pool"
	AttrMode       resourceapi.QualifiedName = "mode"
	AttrNUMANode   resourceapi.QualifiedName = "numaNode"
	AttrIOMMUGroup resourceapi.QualifiedName = "iommuGroup"
	AttrFunctions  resourceapi.QualifiedName = "functions"
	AttrPF         resourceapi.QualifiedName = "pfPciBusID"
	AttrPFNetdev   resourceapi.QualifiedName = "pfNetdev"
	AttrVFIndex    resourceapi.QualifiedName = "vfIndex"
	AttrVendor     resourceapi.QualifiedName = "vendorID"
	AttrDevice     resourceapi.QualifiedName = "deviceID"
	AttrClass      resourceapi.QualifiedName = "class"
	AttrDriver     resourceapi.QualifiedName = "driver"
	AttrLinkType   resourceapi.QualifiedName = "linkType"
	AttrRDMA       resourceapi.QualifiedName = "rdmaDevice"
	// AttrSocketMode is a vhost-user slot's socket mode (server: the
	// container creates the socket; client: the switch does).
	AttrSocketMode resourceapi.QualifiedName = "socketMode"
	// AttrSocketPath is a prepared slot's socket path in the container
	// (device metadata only).
	AttrSocketPath resourceapi.QualifiedName = "socketPath"
)

// Per-slice device limits of resource.k8s.io/v1: 128, or 64 when any
// device of the slice has taints.
const (
	MaxDevicesPerSlice        = resourceapi.ResourceSliceMaxDevices
	MaxDevicesPerTaintedSlice = resourceapi.ResourceSliceMaxDevicesWithAdvancedFeatures
)

// UnhealthyTaintKey is the taint key (under the driver's domain) of an
// unhealthy device.
const UnhealthyTaintKey = "unhealthy"

// PublishOptions tune Resources.
type PublishOptions struct {
	// Driver is the DRA driver name (the config's resourcePrefix).
	Driver string
	// Taints publishes unhealthy devices with a NoSchedule taint (the
	// cluster needs the DRADeviceTaints feature gate) and caps slices at
	// 64 devices; without it, unhealthy devices are left out of the
	// slices, so the scheduler cannot pick them.
	Taints bool
	// Unhealthy marks more units unhealthy than the plan does, by ID
	// (e.g. a prepared unit whose IOMMU group changed), with the reason.
	Unhealthy map[sysfs.Address]string
}

func (o PublishOptions) perSlice() int {
	if o.Taints {
		return MaxDevicesPerTaintedSlice
	}
	return MaxDevicesPerSlice
}

// Resources is what the driver publishes for a plan: one DRA pool per
// config pool with api: dra (named like it), split into slices
// deterministically so that a restart publishes the same slices and a
// change to one unit changes one slice.
//
// Slicing: every unit has a bucket, from its address alone — a VF by its PF
// and VF index / per-slice limit, any other function by its bus and
// device/function slot / limit — so a bucket never exceeds the limit (VF
// indexes and slots are unique). Buckets come from every unit of the plan,
// healthy or not, so a device turning unhealthy (and, without taints,
// leaving its slice) never moves another device; a slice may then be
// empty, which the API allows. Slices are ordered by bucket, devices by
// address.
func Resources(plan *pool.Plan, h *sysfs.Host, o PublishOptions) resourceslice.DriverResources {
	out := resourceslice.DriverResources{Pools: map[string]resourceslice.Pool{}}
	for i := range plan.Pools {
		p := &plan.Pools[i]
		if p.Config == nil || p.Config.API != config.APIDRA {
			continue
		}
		units := slices.Clone(p.Units)
		slices.SortFunc(units, func(a, b pool.Unit) int { return strings.Compare(string(a.ID), string(b.ID)) })
		var keys []string
		byKey := map[string][]resourceapi.Device{}
		for j := range units {
			u := &units[j]
			k := bucket(u, o.perSlice())
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
				byKey[k] = nil
			}
			healthy, reason := u.Healthy, u.Reason
			if r, bad := o.Unhealthy[u.ID]; bad && healthy {
				healthy, reason = false, r
			}
			if !healthy && !o.Taints {
				continue
			}
			d := DeviceFor(p, u, h, o.Driver)
			if !healthy {
				d.Taints = []resourceapi.DeviceTaint{UnhealthyTaint(o.Driver, reason)}
			}
			byKey[k] = append(byKey[k], d)
		}
		slices.Sort(keys)
		rp := resourceslice.Pool{Slices: make([]resourceslice.Slice, 0, max(len(keys), 1))}
		for _, k := range keys {
			rp.Slices = append(rp.Slices, resourceslice.Slice{Devices: byKey[k]})
		}
		if len(rp.Slices) == 0 {
			// An empty pool is not "no pool": the driver runs and the
			// pool has no devices.
			rp.Slices = append(rp.Slices, resourceslice.Slice{})
		}
		out.Pools[p.Name] = rp
	}
	return out
}

// bucket is a unit's slice key; see Resources. Keys sort PFs' VFs first
// by PF address, then other functions by bus.
func bucket(u *pool.Unit, perSlice int) string {
	if n, ok := config.ParseVhostUserSlotID(string(u.ID)); ok {
		return fmt.Sprintf("slot/%04d", n/perSlice)
	}
	if u.PF != "" && u.VFIndex >= 0 {
		return fmt.Sprintf("vf/%s/%04d", u.PF, u.VFIndex/perSlice)
	}
	// dddd:bb:dd.f -> bus "dddd:bb", slot dd*8+f (0..255).
	a := string(u.ID)
	busEnd := strings.LastIndexByte(a, ':')
	dev, fn, _ := strings.Cut(a[busEnd+1:], ".")
	d, _ := strconv.ParseUint(dev, 16, 8)
	f, _ := strconv.ParseUint(fn, 16, 8)
	return fmt.Sprintf("fn/%s/%04d", a[:busEnd], int(d*8+f)/perSlice)
}

// UnhealthyTaint is the taint of an unhealthy device: NoSchedule, so no
// new claim gets it and running pods keep theirs (as the device plugin
// lists a device Unhealthy without evicting). A taint has no message; the
// reason goes to the log and the resource health API.
func UnhealthyTaint(driver, _ string) resourceapi.DeviceTaint {
	return resourceapi.DeviceTaint{Key: driver + "/" + UnhealthyTaintKey, Effect: resourceapi.DeviceTaintEffectNoSchedule}
}

// DeviceFor is the DRA device of unit u of pool p: named DeviceName(u.ID),
// with the attributes a DeviceClass or a claim selects on and KubeVirt
// reads (resource.kubernetes.io/pciBusID). Attributes are chosen to stay
// put while the unit is in use: a vfio pool's driver is vfio-pci (what the
// container gets), and a VF's own netdev (gone when bound to vfio-pci or
// moved into a pod) is not published.
func DeviceFor(p *pool.Pool, u *pool.Unit, h *sysfs.Host, driver string) resourceapi.Device {
	if p.Mode == config.ModeVhostUser {
		return vhostUserDevice(p, u)
	}
	attrs := map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
		deviceattribute.StandardDeviceAttributePCIBusID: str(string(u.ID)),
		AttrPool:      str(p.Name),
		AttrMode:      str(string(p.Mode)),
		AttrNUMANode:  integer(int64(u.NUMANode)),
		AttrFunctions: integer(int64(len(u.Members))),
	}
	if u.NUMANode >= 0 {
		attrs[deviceattribute.StandardDeviceAttributeNUMANode] = integer(int64(u.NUMANode))
	}
	d := h.Device(u.ID)
	if d != nil {
		if root, ok := pcieRoot(d.Path); ok {
			attrs[deviceattribute.StandardDeviceAttributePCIeRoot] = str(root)
		}
		attrs[AttrVendor] = str(d.Vendor)
		attrs[AttrDevice] = str(d.Device)
	}
	if u.Class != "" {
		attrs[AttrClass] = str(u.Class)
	}
	if g, err := strconv.ParseInt(u.Group, 10, 64); err == nil {
		attrs[AttrIOMMUGroup] = integer(g)
	}
	switch {
	case p.Mode == config.ModeVFIO:
		attrs[AttrDriver] = str(sysfs.VFIODriver)
	case u.Driver != "":
		attrs[AttrDriver] = str(u.Driver)
	}
	if u.PF != "" {
		attrs[AttrPF] = str(string(u.PF))
		if u.VFIndex >= 0 {
			attrs[AttrVFIndex] = integer(int64(u.VFIndex))
		}
		if pf := h.Device(u.PF); pf != nil && len(pf.Netdevs) > 0 {
			attrs[AttrPFNetdev] = str(pf.Netdevs[0].Name)
			if lt := pf.Netdevs[0].LinkType; lt != "" {
				attrs[AttrLinkType] = str(lt)
			}
		}
	}
	if _, ok := attrs[AttrLinkType]; !ok && d != nil && len(d.Netdevs) > 0 && d.Netdevs[0].LinkType != "" {
		attrs[AttrLinkType] = str(d.Netdevs[0].LinkType)
	}
	if len(u.RDMA) > 0 {
		attrs[AttrRDMA] = str(u.RDMA[0].Name)
	}
	for k, v := range attrs {
		if v.StringValue != nil && len(*v.StringValue) > resourceapi.DeviceAttributeMaxValueLength {
			delete(attrs, k) // the API refuses longer values; an attribute is a nicety
		}
	}
	return resourceapi.Device{Name: PoolDeviceName(p, u.ID), Attributes: attrs}
}

// vhostUserDevice is the DRA device of slot u of vhost-user pool p: named
// by the slot ID, with the pool, the mode, the switch's NUMA node (also as
// resource.kubernetes.io/numaNode when known) and the socket mode. A slot
// has no PCI function, so no PCI attributes.
func vhostUserDevice(p *pool.Pool, u *pool.Unit) resourceapi.Device {
	attrs := map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
		AttrPool:     str(p.Name),
		AttrMode:     str(string(p.Mode)),
		AttrNUMANode: integer(int64(u.NUMANode)),
	}
	if u.NUMANode >= 0 {
		attrs[deviceattribute.StandardDeviceAttributeNUMANode] = integer(int64(u.NUMANode))
	}
	if p.Config != nil && p.Config.VhostUser != nil {
		attrs[AttrSocketMode] = str(string(p.Config.VhostUser.SocketMode))
	}
	return resourceapi.Device{Name: PoolDeviceName(p, u.ID), Attributes: attrs}
}

// pcieRoot is the PCIe root complex of a function from its canonical sysfs
// path ("devices/pci0000:00/..." -> "pci0000:00"), as
// deviceattribute.GetPCIeRootAttributeByPCIBusID reads it from the link.
func pcieRoot(path string) (string, bool) {
	rest, ok := strings.CutPrefix(path, "devices/")
	if !ok {
		return "", false
	}
	root, _, _ := strings.Cut(rest, "/")
	return root, strings.HasPrefix(root, "pci")
}

func str(s string) resourceapi.DeviceAttribute { return resourceapi.DeviceAttribute{StringValue: &s} }

func integer(i int64) resourceapi.DeviceAttribute { return resourceapi.DeviceAttribute{IntValue: &i} }
