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
	AttrIOMMUGroup resourceapi.QualifiedName = "iommuGroup"
	// AttrFunctions is a unit's function count, published only for a
	// unit of more than one function (a vfio group).
	AttrFunctions resourceapi.QualifiedName = "functions"
	AttrPF        resourceapi.QualifiedName = "pfPciBusID"
	AttrPFNetdev  resourceapi.QualifiedName = "pfNetdev"
	AttrVFIndex   resourceapi.QualifiedName = "vfIndex"
	AttrVendor    resourceapi.QualifiedName = "vendorID"
	AttrDevice    resourceapi.QualifiedName = "deviceID"
	AttrDriver    resourceapi.QualifiedName = "driver"
	AttrLinkType  resourceapi.QualifiedName = "linkType"
	AttrRDMA      resourceapi.QualifiedName = "rdmaDevice"
	// AttrSocketMode is a vhost-user slot's socket mode (server: the
	// container creates the socket; client: the switch does).
	AttrSocketMode resourceapi.QualifiedName = "socketMode"
	// AttrSocketPath is a prepared slot's socket path in the container
	// (device metadata only).
	AttrSocketPath resourceapi.QualifiedName = "socketPath"
	// AttrMode is a pool's mode (device metadata only: a DeviceClass
	// selects a pool by AttrPool, and the pool fixes the mode).
	AttrMode resourceapi.QualifiedName = "mode"
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
	return InputsOf(plan, h, o).Resources()
}

// Inputs is everything Resources reads of a plan, the host and the
// options, as plain comparable data: equal inputs give equal resources.
// Publish compares these (~250 bytes a device) instead of building and
// comparing the resources (~5 KB a device: an attribute is 128 bytes of
// API struct) on every rescan, and keeps no resources of its own once the
// ResourceSlice controller has taken them.
type Inputs struct {
	driver string
	taints bool
	pools  []poolInputs
}

type poolInputs struct {
	name string
	devs []devInputs // sorted by unit ID; unhealthy ones too (their bucket counts)
}

// devInputs is one device's part of Inputs: what DeviceFor reads.
type devInputs struct {
	bucket, name string
	healthy      bool
	reason       string
	vhost        bool
	pool         string
	socketMode   string
	id           string
	numa         int
	functions    int
	hasDevice    bool   // the host has the unit's function
	pcieRoot     string // "" when its path names no PCI root
	vendor       string
	device       string
	group        string
	driver       string
	pf           string
	vfIndex      int
	pfNetdev     string
	pfLinkType   string
	linkType     string // the function's own netdev's link type
	rdma         string
}

// Equal reports whether in and o give the same resources.
func (in Inputs) Equal(o Inputs) bool {
	return in.driver == o.driver && in.taints == o.taints && slices.EqualFunc(in.pools, o.pools, func(a, b poolInputs) bool {
		return a.name == b.name && slices.Equal(a.devs, b.devs)
	})
}

// InputsOf reads the inputs of Resources.
func InputsOf(plan *pool.Plan, h *sysfs.Host, o PublishOptions) Inputs {
	in := Inputs{driver: o.Driver, taints: o.Taints}
	for i := range plan.Pools {
		p := &plan.Pools[i]
		if p.Config == nil || p.Config.API != config.APIDRA {
			continue
		}
		units := slices.Clone(p.Units)
		slices.SortFunc(units, func(a, b pool.Unit) int { return strings.Compare(string(a.ID), string(b.ID)) })
		pi := poolInputs{name: p.Name, devs: make([]devInputs, len(units))}
		for j := range units {
			u := &units[j]
			di := deviceInputs(p, u, h)
			di.bucket = bucket(u, o.perSlice())
			di.healthy, di.reason = u.Healthy, u.Reason
			if r, bad := o.Unhealthy[u.ID]; bad && di.healthy {
				di.healthy, di.reason = false, r
			}
			pi.devs[j] = di
		}
		in.pools = append(in.pools, pi)
	}
	return in
}

// Resources is the DRA resources of the inputs.
func (in Inputs) Resources() resourceslice.DriverResources {
	out := resourceslice.DriverResources{Pools: make(map[string]resourceslice.Pool, len(in.pools))}
	perSlice := MaxDevicesPerSlice
	if in.taints {
		perSlice = MaxDevicesPerTaintedSlice
	}
	for _, pi := range in.pools {
		var keys []string
		byKey := map[string][]resourceapi.Device{}
		for j := range pi.devs {
			di := &pi.devs[j]
			if _, ok := byKey[di.bucket]; !ok {
				keys = append(keys, di.bucket)
				byKey[di.bucket] = make([]resourceapi.Device, 0, perSlice)
			}
			if !di.healthy && !in.taints {
				continue
			}
			d := di.device_()
			if !di.healthy {
				d.Taints = []resourceapi.DeviceTaint{UnhealthyTaint(in.driver, di.reason)}
			}
			byKey[di.bucket] = append(byKey[di.bucket], d)
		}
		slices.Sort(keys)
		rp := resourceslice.Pool{Slices: make([]resourceslice.Slice, 0, max(len(keys), 1))}
		for _, k := range keys {
			rp.Slices = append(rp.Slices, resourceslice.Slice{Devices: slices.Clip(byKey[k])})
		}
		if len(rp.Slices) == 0 {
			// An empty pool is not "no pool": the driver runs and the
			// pool has no devices.
			rp.Slices = append(rp.Slices, resourceslice.Slice{})
		}
		out.Pools[pi.name] = rp
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
// moved into a pod) is not published. Every attribute is paid for on
// every device by the API server, each watcher and each CEL evaluation
// (at 4,096 VFs the attribute maps are most of a slice), so none is
// published twice or where the pool already says it: no own NUMA node
// beside resource.kubernetes.io/numaNode, no mode (the DeviceClass
// selects the pool, the pool fixes the mode), no PCI class (vendorID and
// deviceID say more), and functions only for a unit of several.
func DeviceFor(p *pool.Pool, u *pool.Unit, h *sysfs.Host) resourceapi.Device {
	di := deviceInputs(p, u, h)
	return di.device_()
}

// deviceInputs reads what the device of unit u of pool p depends on (all
// but its bucket and health).
func deviceInputs(p *pool.Pool, u *pool.Unit, h *sysfs.Host) devInputs {
	di := devInputs{
		name: PoolDeviceName(p, u.ID), pool: p.Name, id: string(u.ID),
		numa: u.NUMANode, functions: len(u.Members), group: u.Group, driver: u.Driver,
		pf: string(u.PF), vfIndex: u.VFIndex,
	}
	if p.Mode == config.ModeVhostUser {
		di.vhost = true
		if p.Config != nil && p.Config.VhostUser != nil {
			di.socketMode = string(p.Config.VhostUser.SocketMode)
		}
		return di
	}
	if p.Mode == config.ModeVFIO {
		di.driver = sysfs.VFIODriver
	}
	if d := h.Device(u.ID); d != nil {
		di.hasDevice = true
		if root, ok := pcieRoot(d.Path); ok {
			di.pcieRoot = root
		}
		di.vendor, di.device = d.Vendor, d.Device
		if len(d.Netdevs) > 0 {
			di.linkType = d.Netdevs[0].LinkType
		}
	}
	if u.PF != "" {
		if pf := h.Device(u.PF); pf != nil && len(pf.Netdevs) > 0 {
			di.pfNetdev, di.pfLinkType = pf.Netdevs[0].Name, pf.Netdevs[0].LinkType
		}
	}
	if len(u.RDMA) > 0 {
		di.rdma = u.RDMA[0].Name
	}
	return di
}

// device_ builds the device of di (without taints).
func (di *devInputs) device_() resourceapi.Device {
	if di.vhost {
		return vhostUserDevice(di)
	}
	// Sized for every attribute below: a map grown entry by entry keeps
	// up to twice the room.
	attrs := make(map[resourceapi.QualifiedName]resourceapi.DeviceAttribute, maxPCIAttributes)
	attrs[deviceattribute.StandardDeviceAttributePCIBusID] = str(di.id)
	attrs[AttrPool] = str(di.pool)
	if di.functions > 1 {
		attrs[AttrFunctions] = integer(int64(di.functions))
	}
	if di.numa >= 0 {
		attrs[deviceattribute.StandardDeviceAttributeNUMANode] = integer(int64(di.numa))
	}
	if di.hasDevice {
		if di.pcieRoot != "" {
			attrs[deviceattribute.StandardDeviceAttributePCIeRoot] = str(di.pcieRoot)
		}
		attrs[AttrVendor] = str(di.vendor)
		attrs[AttrDevice] = str(di.device)
	}
	if g, err := strconv.ParseInt(di.group, 10, 64); err == nil {
		attrs[AttrIOMMUGroup] = integer(g)
	}
	if di.driver != "" {
		attrs[AttrDriver] = str(di.driver)
	}
	if di.pf != "" {
		attrs[AttrPF] = str(di.pf)
		if di.vfIndex >= 0 {
			attrs[AttrVFIndex] = integer(int64(di.vfIndex))
		}
		if di.pfNetdev != "" {
			attrs[AttrPFNetdev] = str(di.pfNetdev)
			if di.pfLinkType != "" {
				attrs[AttrLinkType] = str(di.pfLinkType)
			}
		}
	}
	if _, ok := attrs[AttrLinkType]; !ok && di.linkType != "" {
		attrs[AttrLinkType] = str(di.linkType)
	}
	if di.rdma != "" {
		attrs[AttrRDMA] = str(di.rdma)
	}
	for k, v := range attrs {
		if v.StringValue != nil && len(*v.StringValue) > resourceapi.DeviceAttributeMaxValueLength {
			delete(attrs, k) // the API refuses longer values; an attribute is a nicety
		}
	}
	return resourceapi.Device{Name: di.name, Attributes: attrs}
}

// maxPCIAttributes is how many attributes device_ sets at most.
const maxPCIAttributes = 14

// vhostUserDevice is the DRA device of a vhost-user slot: named by the
// slot ID, with the pool, the switch's NUMA node as
// resource.kubernetes.io/numaNode (when configured) and the socket mode. A slot
// has no PCI function, so no PCI attributes.
func vhostUserDevice(di *devInputs) resourceapi.Device {
	attrs := map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
		AttrPool: str(di.pool),
	}
	if di.numa >= 0 {
		attrs[deviceattribute.StandardDeviceAttributeNUMANode] = integer(int64(di.numa))
	}
	if di.socketMode != "" {
		attrs[AttrSocketMode] = str(di.socketMode)
	}
	return resourceapi.Device{Name: di.name, Attributes: attrs}
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
