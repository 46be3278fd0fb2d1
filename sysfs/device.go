package sysfs

import (
	"path/filepath"
	"sort"
	"strings"
)

// Root locates the kernel's trees. Production uses HostRoot(); tests and the
// bundled sample point it at a fixture directory.
type Root struct {
	Sys string // the sysfs mount, "/sys" on a host
	Dev string // the devtmpfs mount, "/dev" on a host
}

// HostRoot is the root of the running host.
func HostRoot() Root { return Root{Sys: "/sys", Dev: "/dev"} }

// PCIDevicePath is the sysfs directory of a function, through bus/pci/devices.
func (r Root) PCIDevicePath(a Address) string {
	return filepath.Join(r.Sys, "bus", "pci", "devices", string(a))
}

// VFIOGroupPath is the VFIO group character device of an IOMMU group.
func (r Root) VFIOGroupPath(group string) string { return filepath.Join(r.Dev, "vfio", group) }

// VFIOContainerPath is the VFIO container device.
func (r Root) VFIOContainerPath() string { return filepath.Join(r.Dev, "vfio", "vfio") }

// Device is one PCI function as the kernel shows it.
type Device struct {
	Address         Address `json:"address"`
	Vendor          string  `json:"vendor"`          // 4 hex digits, e.g. "8086"
	Device          string  `json:"device"`          // 4 hex digits
	SubsystemVendor string  `json:"subsystemVendor"` // 4 hex digits, "" when unknown
	SubsystemDevice string  `json:"subsystemDevice"`
	Class           string  `json:"class"`          // 6 hex digits, e.g. "020000"
	Driver          string  `json:"driver"`         // "" when no driver is bound
	DriverOverride  string  `json:"driverOverride"` // "" when unset (the kernel shows "(null)")
	NUMANode        int     `json:"numaNode"`       // -1 when the platform reports none
	IOMMUGroup      string  `json:"iommuGroup"`     // "" when the function has no IOMMU group
	// VFIOGroupDev is true when /dev/vfio/<group> exists.
	VFIOGroupDev bool `json:"vfioGroupDev"`
	// VFIODevice is the iommufd character device name ("vfio0") under
	// vfio-dev/, present while vfio-pci owns the function on kernels with
	// VFIO device cdev support.
	VFIODevice string `json:"vfioDevice,omitempty"`
	// VFIODeviceNode is true when /dev/vfio/devices/<VFIODevice> exists
	// (kernels with CONFIG_VFIO_DEVICE_CDEV; 6.1 shows vfio-dev/ in sysfs
	// without the node).
	VFIODeviceNode bool `json:"vfioDeviceNode,omitempty"`
	// PhysFn is the PF of a VF, "" for anything else.
	PhysFn Address `json:"physfn,omitempty"`
	// VFIndex is N of the PF's virtfnN link to this VF, -1 for non-VFs.
	VFIndex int `json:"vfIndex"`
	// SRIOV is set for functions with the SR-IOV capability.
	SRIOV   *SRIOV   `json:"sriov,omitempty"`
	Netdevs []Netdev `json:"netdevs,omitempty"`
	// RDMA lists the RDMA devices the kernel registered on the function
	// (an RDMA driver such as mlx5_ib bound to its auxiliary device).
	RDMA []RDMADevice `json:"rdma,omitempty"`
	// Path is the function's canonical directory relative to Root.Sys,
	// e.g. "devices/pci0000:00/0000:00:01.0/0000:01:00.0"; its parent
	// directories are the bridges above it.
	Path string `json:"path"`
}

// SRIOV is the PF side of SR-IOV.
type SRIOV struct {
	TotalVFs         int       `json:"totalVFs"`
	NumVFs           int       `json:"numVFs"`
	DriversAutoprobe bool      `json:"driversAutoprobe"`
	VFs              []Address `json:"vfs"` // by VF index
}

// Netdev is a network interface backed by a PCI function.
type Netdev struct {
	Name      string `json:"name"`
	OperState string `json:"operState"` // "up", "down", ... as in sysfs
	Carrier   bool   `json:"carrier"`
	LinkType  string `json:"linkType"` // "ether", "infiniband", or the ARPHRD number
	// HostUse says why the host depends on this netdev ("holds 10.0.0.5",
	// "carries the default route"), "" when it does not or when unknown.
	HostUse string `json:"hostUse,omitempty"`
}

// IsVF reports whether the function is an SR-IOV virtual function.
func (d *Device) IsVF() bool { return d.PhysFn != "" }

// IsPFWithVFs reports whether the function is a PF with VFs enabled. Such a
// PF carries its VFs and must never be handed out or unbound.
func (d *Device) IsPFWithVFs() bool { return d.SRIOV != nil && d.SRIOV.NumVFs > 0 }

// IsBridge reports whether the function is a bridge or host controller
// (PCI base class 0x06), which is never an endpoint to hand out.
func (d *Device) IsBridge() bool { return strings.HasPrefix(d.Class, "06") }

// Host is a consistent snapshot of the PCI functions of one root.
type Host struct {
	Devices []*Device // sorted by address
	// Groups maps an IOMMU group number to its member functions, sorted.
	Groups   map[string][]Address
	Warnings []Warning // anomalies skipped during the scan, each naming its device
	// RDMACM is true when /dev/infiniband/rdma_cm exists (rdma_ucm loaded).
	RDMACM bool
	// VhostNetNode and TunNode are true when /dev/vhost-net and
	// /dev/net/tun exist.
	VhostNetNode, TunNode bool
	byAddr                map[Address]*Device
}

// Device returns the function at a, or nil.
func (h *Host) Device(a Address) *Device { return h.byAddr[a] }

// NewHost indexes a list of devices. Scan uses it; tests of other packages
// use it to build a Host from plain data.
func NewHost(devs []*Device, warnings []Warning) *Host {
	sort.Slice(devs, func(i, j int) bool { return devs[i].Address < devs[j].Address })
	h := &Host{Devices: devs, Groups: map[string][]Address{}, Warnings: warnings, byAddr: make(map[Address]*Device, len(devs))}
	for _, d := range devs {
		h.byAddr[d.Address] = d
		if d.IOMMUGroup != "" {
			h.Groups[d.IOMMUGroup] = append(h.Groups[d.IOMMUGroup], d.Address)
		}
	}
	return h
}
