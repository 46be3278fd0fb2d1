package cdi

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	cdilib "tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/pkg/parser"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// ErrNoUnits is returned by SpecFor for a pool without units: a CDI spec
// must name at least one device.
var ErrNoUnits = errors.New("pool has no devices")

// Container paths of the VFIO device nodes.
const (
	vfioDir        = "/dev/vfio"
	vfioContainer  = "/dev/vfio/vfio"
	vfioDevicesDir = "/dev/vfio/devices"
	iommuDevice    = "/dev/iommu"
	vhostNetDevice = "/dev/vhost-net"
	tunDevice      = "/dev/net/tun"
	rdmaDir        = "/dev/infiniband"
)

// The static misc minors of vhost-net and tun (include/linux/miscdevice.h,
// fixed for every kernel): pinned only when the host has no node, so the
// container still gets one (opening it loads the module).
const (
	miscMajor     = 10
	vhostNetMinor = 238
	tunMinor      = 200
)

// SpecOption adjusts SpecFor.
type SpecOption func(*specOptions)

type specOptions struct {
	noIOMMUFD bool
}

// WithoutIOMMUFD leaves the iommufd nodes (/dev/vfio/devices/vfioN,
// /dev/iommu) out of vfio devices, keeping only the VFIO group interface.
// Kata's runtimes treat every node under /dev/vfio/ other than
// /dev/vfio/vfio as a VFIO device to plug, so a device that lists both its
// group and its iommufd node may be plugged twice; use this for pools that
// serve Kata until that is verified.
func WithoutIOMMUFD() SpecOption { return func(o *specOptions) { o.noIOMMUFD = true } }

// SpecFor builds the CDI spec of one pool: kind = the pool's resource name
// (vendor = resource prefix, class = pool name), one device per unit named
// by the unit's ID, and the minimum cdiVersion the content needs.
//
// vfio pools: the spec-wide edits add /dev/vfio/vfio; each device adds
// /dev/vfio/<group>, and, when the pool asks for iommufd, for each member
// whose iommufd character device exists /dev/vfio/devices/vfioN plus
// /dev/iommu.
// kernel pools: env (see DeviceEnv and NetdevEnv); with rdma, each device
// adds its function's RDMA nodes (/dev/infiniband/uverbsN, umadN, issmN),
// /dev/infiniband/rdma_cm where the host has it, and RDMAEnv.
// Either mode, with vhostNet: each device adds /dev/vhost-net and
// /dev/net/tun. These are per device, not spec-wide, so a device means the
// same whatever else the container asks for, and Contents.Has sees them.
//
// Host paths are under root.Dev, so root must be the /dev the container
// runtime sees (normally "/dev"). Node type and numbers are left for the
// runtime to read at injection time (see the package documentation).
// It reads nothing: the host arrives as the snapshot h.
func SpecFor(p *pool.Pool, h *sysfs.Host, root sysfs.Root, opts ...SpecOption) (*cdispec.Spec, error) {
	var o specOptions
	for _, opt := range opts {
		opt(&o)
	}
	vendor, class, err := KindOf(p.Resource)
	if err != nil {
		return nil, fmt.Errorf("pool %q: %w", p.Name, err)
	}
	if len(p.Units) == 0 {
		return nil, fmt.Errorf("pool %q: %w", p.Name, ErrNoUnits)
	}
	spec := &cdispec.Spec{Kind: vendor + "/" + class, Devices: make([]cdispec.Device, 0, len(p.Units))}
	if p.Mode == config.ModeVhostUser {
		return vhostUserSpec(spec, p)
	}
	if p.Mode == config.ModeVFIO {
		spec.ContainerEdits.DeviceNodes = []*cdispec.DeviceNode{node(vfioContainer, root)}
	}
	envPrefix, netPrefix := PCIDeviceEnv(p.Resource)+"_", "SRIOV_CDI_NETDEV_"+envWord(p.Resource)+"_"
	for i := range p.Units {
		u := &p.Units[i]
		if err := parser.ValidateDeviceName(string(u.ID)); err != nil {
			return nil, fmt.Errorf("pool %q: device %q: %w", p.Name, u.ID, err)
		}
		d := cdispec.Device{Name: string(u.ID)}
		d.ContainerEdits.Env = []string{envPrefix + addrSuffix(u.ID) + "=" + string(u.ID)}
		switch p.Mode {
		case config.ModeVFIO:
			if u.Group == "" {
				return nil, fmt.Errorf("pool %q: device %q has no IOMMU group; a vfio device needs one", p.Name, u.ID)
			}
			iommufd := p.Config != nil && p.Config.IOMMUFD && !o.noIOMMUFD
			d.ContainerEdits.DeviceNodes = vfioNodes(u, h, root, iommufd)
		default:
			if len(u.Netdevs) > 0 {
				d.ContainerEdits.Env = append(d.ContainerEdits.Env, netPrefix+addrSuffix(u.ID)+"="+strings.Join(u.Netdevs, ","))
			}
			if p.Config != nil && p.Config.RDMA {
				nodes, names := rdmaNodes(u, h, root)
				d.ContainerEdits.DeviceNodes = append(d.ContainerEdits.DeviceNodes, nodes...)
				if len(names) > 0 {
					d.ContainerEdits.Env = append(d.ContainerEdits.Env, RDMAEnv(p.Resource, u.ID)+"="+strings.Join(names, ","))
				}
			}
		}
		if p.Config != nil && p.Config.VhostNet {
			d.ContainerEdits.DeviceNodes = append(d.ContainerEdits.DeviceNodes,
				miscNode(vhostNetDevice, root, h.VhostNetNode, vhostNetMinor), miscNode(tunDevice, root, h.TunNode, tunMinor))
		}
		spec.Devices = append(spec.Devices, d)
	}
	if spec.Version, err = cdispec.MinimumRequiredVersion(spec); err != nil {
		return nil, fmt.Errorf("pool %q: choose the CDI version: %w", p.Name, err)
	}
	return spec, nil
}

// SpecsFor builds the specs of every pool that has units, in pool order.
// Pools without units get no spec (so the Writer removes a stale one).
func SpecsFor(pools []pool.Pool, h *sysfs.Host, root sysfs.Root, opts ...SpecOption) ([]*cdispec.Spec, error) {
	out := make([]*cdispec.Spec, 0, len(pools))
	for i := range pools {
		if len(pools[i].Units) == 0 {
			continue
		}
		s, err := SpecFor(&pools[i], h, root, opts...)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// vfioNodes lists the nodes of a vfio unit: its group, then (if iommufd)
// the iommufd nodes of the members that have one.
func vfioNodes(u *pool.Unit, h *sysfs.Host, root sysfs.Root, iommufd bool) []*cdispec.DeviceNode {
	nodes := []*cdispec.DeviceNode{node(vfioDir+"/"+u.Group, root)}
	if !iommufd {
		return nodes
	}
	cdev := false
	for _, m := range u.Members {
		if d := h.Device(m); d != nil && d.VFIODevice != "" && d.VFIODeviceNode {
			nodes = append(nodes, node(vfioDevicesDir+"/"+d.VFIODevice, root))
			cdev = true
		}
	}
	if cdev {
		nodes = append(nodes, node(iommuDevice, root))
	}
	return nodes
}

// rdmaNodes lists the RDMA nodes of a kernel unit's functions, then
// rdma_cm when the host has it (a unit without RDMA devices gets none, and
// is unhealthy), and the RDMA device names.
func rdmaNodes(u *pool.Unit, h *sysfs.Host, root sysfs.Root) ([]*cdispec.DeviceNode, []string) {
	var nodes []*cdispec.DeviceNode
	var names []string
	for _, r := range u.RDMA {
		names = append(names, r.Name)
		for _, n := range r.Nodes {
			nodes = append(nodes, node(rdmaDir+"/"+n, root))
		}
	}
	if len(nodes) > 0 && h.RDMACM {
		nodes = append(nodes, node(rdmaDir+"/"+sysfs.RDMACMNode, root))
	}
	return nodes, names
}

// miscNode is a node with a static misc minor: read from the host when it
// has the node, else pinned (the numbers cannot go stale).
func miscNode(p string, root sysfs.Root, onHost bool, minor int64) *cdispec.DeviceNode {
	n := node(p, root)
	if !onHost {
		n.HostPath, n.Type, n.Major, n.Minor = "", "c", miscMajor, minor
		mode := os.FileMode(0o666)
		n.FileMode = &mode
	}
	return n
}

// node is a device node at container path p ("/dev/..."), taken from the
// same path under root.Dev on the host. HostPath is omitted when it equals
// the container path.
func node(p string, root sysfs.Root) *cdispec.DeviceNode {
	n := &cdispec.DeviceNode{Path: p}
	dev := root.Dev
	if dev == "" {
		dev = "/dev"
	}
	if host := filepath.Join(dev, strings.TrimPrefix(p, "/dev/")); host != p {
		n.HostPath = host
	}
	return n
}

// KindOf splits a resource name "<prefix>/<pool>" into a CDI vendor and
// class and checks both with the CDI library's rules.
func KindOf(resource string) (vendor, class string, err error) {
	vendor, class, ok := strings.Cut(resource, "/")
	if !ok {
		return "", "", fmt.Errorf("resource %q is not <prefix>/<name>", resource)
	}
	if err := parser.ValidateVendorName(vendor); err != nil {
		return "", "", fmt.Errorf("resource %q is not a valid CDI kind: %w", resource, err)
	}
	if err := parser.ValidateClassName(class); err != nil {
		return "", "", fmt.Errorf("resource %q is not a valid CDI kind (a pool name must start with a letter to be a CDI class): %w", resource, err)
	}
	return vendor, class, nil
}

// QualifiedName is the CDI device name a container asks for to get unit id
// of the pool with this resource name: "<resource>=<id>".
func QualifiedName(resource string, id sysfs.Address) string {
	return resource + "=" + string(id)
}

// PCIDeviceEnv is the variable the SR-IOV network device plugin sets for a
// resource: "PCIDEVICE_" + resource, upper-cased, '.' and '/' as '_'
// ("sriov-cdi.io/vf" -> "PCIDEVICE_SRIOV-CDI_IO_VF"). Its value is the
// comma-separated list of allocated addresses; Kata's agent rewrites every
// PCIDEVICE_* value from host to guest addresses. One device's CDI edits
// cannot carry the list (edits of several devices set the same variable and
// the last one wins), so the plugin sets it in its Allocate response, with
// AllocateEnv.
func PCIDeviceEnv(resource string) string {
	return config.PCIDeviceEnv(resource) // one mangling rule, which config validation checks for collisions
}

// PCIResourceEnv is the variable KubeVirt reads for a resource when
// externalResourceProvider is set: "PCI_RESOURCE_" + resource, upper-cased,
// '.' and '/' as '_'. Value: comma-separated addresses.
func PCIResourceEnv(resource string) string {
	return config.PCIResourceEnv(resource)
}

// DeviceEnv is the per-device variable a CDI device sets, whose value is
// its address: PCIDeviceEnv(resource) + "_" + the address with ':' and '.'
// as '_' ("PCIDEVICE_SRIOV-CDI_IO_VF_0000_3B_02_0"). It starts with
// PCIDEVICE_ so Kata's agent rewrites it to the guest address, and it is
// distinct per device so that several devices of one pool all show.
func DeviceEnv(resource string, id sysfs.Address) string {
	return PCIDeviceEnv(resource) + "_" + addrSuffix(id)
}

// NetdevEnv is the per-device variable a kernel-mode CDI device sets to its
// netdev names (comma-separated): "SRIOV_CDI_NETDEV_" + resource and address
// with every character outside [A-Z0-9] as '_'. It deliberately does not
// start with PCIDEVICE_: Kata's agent would try to parse it as addresses.
func NetdevEnv(resource string, id sysfs.Address) string {
	return "SRIOV_CDI_NETDEV_" + envWord(resource) + "_" + addrSuffix(id)
}

// RDMAEnv is the per-device variable a CDI device of an rdma pool sets to
// its RDMA device names (comma-separated, e.g. "mlx5_2"), the name
// libibverbs users select (ibv_get_device_list) and the SR-IOV network
// device plugin reports as rdma_dev: "SRIOV_CDI_RDMA_" + resource and
// address as in NetdevEnv. Not PCIDEVICE_*: Kata's agent would parse it
// as addresses.
func RDMAEnv(resource string, id sysfs.Address) string {
	return "SRIOV_CDI_RDMA_" + envWord(resource) + "_" + addrSuffix(id)
}

// AllocateEnv returns the variables a device plugin's Allocate response
// should carry for the given device IDs of one resource, in the formats
// existing consumers read: the SR-IOV device plugin's PCIDEVICE_<RESOURCE>
// and KubeVirt's PCI_RESOURCE_<RESOURCE>, each the comma-separated IDs in
// the order given.
func AllocateEnv(resource string, ids []sysfs.Address) map[string]string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = string(id)
	}
	v := strings.Join(parts, ",")
	return map[string]string{PCIDeviceEnv(resource): v, PCIResourceEnv(resource): v}
}

// addrSuffix is an address as a variable name part: upper-case, ':' and
// '.' as '_'.
func addrSuffix(id sysfs.Address) string {
	b := []byte(id)
	for i, c := range b {
		switch {
		case c == ':' || c == '.':
			b[i] = '_'
		case c >= 'a' && c <= 'z':
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

func envWord(s string) string {
	b := []byte(strings.ToUpper(s))
	for i, c := range b {
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

// Validate checks a spec with the CDI library's rules, as WriteSpec and
// the runtimes' caches do when they load it: a known cdiVersion that covers
// the content, valid vendor, class and device names, valid edits, at least
// one device, no device without edits, no duplicate device names.
func Validate(spec *cdispec.Spec) error {
	if spec == nil {
		return errors.New("no spec")
	}
	if err := cdispec.ValidateVersion(spec); err != nil {
		return fmt.Errorf("kind %q: %w", spec.Kind, err)
	}
	vendor, class := parser.ParseQualifier(spec.Kind)
	if err := parser.ValidateVendorName(vendor); err != nil {
		return fmt.Errorf("kind %q: %w", spec.Kind, err)
	}
	if err := parser.ValidateClassName(class); err != nil {
		return fmt.Errorf("kind %q: %w", spec.Kind, err)
	}
	if err := (&cdilib.ContainerEdits{ContainerEdits: &spec.ContainerEdits}).Validate(); err != nil {
		return fmt.Errorf("kind %q: spec-wide edits: %w", spec.Kind, err)
	}
	if len(spec.Devices) == 0 {
		return fmt.Errorf("kind %q: no devices", spec.Kind)
	}
	seen := make(map[string]bool, len(spec.Devices))
	for i := range spec.Devices {
		d := &spec.Devices[i]
		if err := parser.ValidateDeviceName(d.Name); err != nil {
			return fmt.Errorf("kind %q: devices[%d]: %w", spec.Kind, i, err)
		}
		if seen[d.Name] {
			return fmt.Errorf("kind %q: device %q is defined twice", spec.Kind, d.Name)
		}
		seen[d.Name] = true
		e := &d.ContainerEdits
		if len(e.Env) == 0 && len(e.DeviceNodes) == 0 && len(e.NetDevices) == 0 && len(e.Hooks) == 0 &&
			len(e.Mounts) == 0 && e.IntelRdt == nil && len(e.AdditionalGIDs) == 0 {
			return fmt.Errorf("kind %q: device %q has no container edits", spec.Kind, d.Name)
		}
		if err := (&cdilib.ContainerEdits{ContainerEdits: e}).Validate(); err != nil {
			return fmt.Errorf("kind %q: device %q: %w", spec.Kind, d.Name, err)
		}
	}
	return nil
}
