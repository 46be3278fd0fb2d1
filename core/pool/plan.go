package pool

import (
	"fmt"
	"slices"
	"strings"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// Unit is what a pool advertises as one device: a function, or in vfio mode
// every endpoint function of its IOMMU group, allocated as a whole, or in
// vhost-user mode one socket-directory slot (ID "slot-N", no members).
type Unit struct {
	// ID is the device ID kubelet sees (and the CDI device name): the lowest
	// selected address of the group.
	ID sysfs.Address `json:"id"`
	// Members are the endpoint functions that travel with ID, sorted, ID
	// included. Bridges in the group are left alone and not listed.
	Members  []sysfs.Address `json:"members"`
	Group    string          `json:"iommuGroup,omitempty"`
	NUMANode int             `json:"numaNode"`
	PF       sysfs.Address   `json:"pf,omitempty"`
	VFIndex  int             `json:"vfIndex"`
	Driver   string          `json:"driver"`
	Class    string          `json:"class"`
	Netdevs  []string        `json:"netdevs,omitempty"`
	// RDMA are the function's RDMA devices (kernel pools).
	RDMA    []sysfs.RDMADevice `json:"rdma,omitempty"`
	Healthy bool               `json:"healthy"`
	// Reason says why the unit is unhealthy.
	Reason string `json:"reason,omitempty"`
}

// Pool is one configured pool with the units it hands out.
type Pool struct {
	Name     string       `json:"name"`
	Resource string       `json:"resource"`
	Mode     config.Mode  `json:"mode"`
	Config   *config.Pool `json:"-"`
	Units    []Unit       `json:"devices"`
}

// Unit returns the unit with the given ID, or nil.
func (p *Pool) Unit(id sysfs.Address) *Unit {
	for i := range p.Units {
		if p.Units[i].ID == id {
			return &p.Units[i]
		}
	}
	return nil
}

// Refusal is a function no pool hands out, and why.
type Refusal struct {
	Address sysfs.Address `json:"address"`
	Pool    string        `json:"pool,omitempty"` // the pool whose selectors matched, if any
	Reason  string        `json:"reason"`
}

// Plan is the outcome of matching a config against a host.
type Plan struct {
	Pools      []Pool    `json:"pools"`
	Unselected []Refusal `json:"unselected"`
	// Notes are remarks on selected functions (e.g. matched by two pools).
	Notes []Refusal `json:"notes,omitempty"`
}

// Pool returns the pool with the given name, or nil.
func (p *Plan) Pool(name string) *Pool {
	for i := range p.Pools {
		if p.Pools[i].Name == name {
			return &p.Pools[i]
		}
	}
	return nil
}

// Held maps each function whose driver sriov-cdi changed to the pool it
// changed it for (the binding state file's records).
type Held map[sysfs.Address]string

// BuildOption tunes Build.
type BuildOption func(*buildOptions)

type buildOptions struct {
	held  Held
	wasUp LinkHistory
}

// WithHeld makes functions sriov-cdi bound stay in the pool they were bound
// for.
func WithHeld(h Held) BuildOption { return func(o *buildOptions) { o.held = h } }

// LinkHistory names the netdevs (by function and name) seen with their
// link up since they appeared: a VF's own link going down is a fault only
// after it was up — idle VFs sit with their link down, and a VF whose
// netdev moved into a pod is not seen at all. Update it with SeenUp.
type LinkHistory map[NetdevKey]bool

// NetdevKey is one netdev of one function.
type NetdevKey struct {
	Address sysfs.Address
	Name    string
}

// SeenUp returns the history after h: netdevs up now are added, netdevs
// gone (unbound, renamed, moved into a pod) are forgotten, netdevs down
// now keep what they had.
func (lh LinkHistory) SeenUp(h *sysfs.Host) LinkHistory {
	out := LinkHistory{}
	for _, d := range h.Devices {
		for _, n := range d.Netdevs {
			k := NetdevKey{d.Address, n.Name}
			if n.OperState == "up" || lh[k] {
				out[k] = true
			}
		}
	}
	return out
}

// WithLinkHistory makes a kernel-pool function whose own netdev went down
// after being seen up unhealthy, until it is up again.
func WithLinkHistory(lh LinkHistory) BuildOption { return func(o *buildOptions) { o.wasUp = lh } }

// Build matches every function of h against the pools of c. A function
// goes to the first pool whose selectors match it. Bridges and PFs with VFs
// enabled are never handed out. In vfio mode the IOMMU group is the unit and
// a group that also holds something the host uses, a PF with VFs, a function
// of another pool or one bound to a driver the pool may not unbind is
// refused whole, with the reason.
//
// Functions whose driver sriov-cdi changed for a vfio pool (see Held) stay
// in that pool whatever its selectors say now: binding takes a function's
// driver and netdevs away, which selectors may read, and a pool must never
// lose the unit it just prepared.
func Build(c *config.Config, h *sysfs.Host, opts ...BuildOption) *Plan {
	var o buildOptions
	for _, f := range opts {
		f(&o)
	}
	plan := &Plan{Pools: make([]Pool, len(c.Pools))}
	owner := map[sysfs.Address]int{} // function -> pool index
	matched := make([][]*sysfs.Device, len(c.Pools))
	byName := make(map[string]int, len(c.Pools))
	for i := range c.Pools {
		p := &c.Pools[i]
		plan.Pools[i] = Pool{Name: p.Name, Resource: c.Resource(p), Mode: p.Mode, Config: p}
		byName[p.Name] = i
	}
	for _, d := range h.Devices {
		var pf *sysfs.Device
		if d.IsVF() {
			pf = h.Device(d.PhysFn)
		}
		var hits []int
		if i, ok := byName[o.held[d.Address]]; ok && c.Pools[i].Mode == config.ModeVFIO {
			hits = []int{i} // ours since we bound it: selectors judged it before
		} else {
			for i := range c.Pools {
				if c.Pools[i].Match(d, pf) {
					hits = append(hits, i)
				}
			}
		}
		first := ""
		if len(hits) > 0 {
			first = c.Pools[hits[0]].Name
		}
		switch {
		case len(hits) > 1 && crossAPI(c, hits) != "":
			plan.Unselected = append(plan.Unselected, Refusal{d.Address, first, crossAPI(c, hits)})
		case d.IsBridge():
			plan.Unselected = append(plan.Unselected, Refusal{d.Address, first, "bridge or host controller (class " + d.Class + "); never handed out"})
		case d.IsPFWithVFs():
			plan.Unselected = append(plan.Unselected, Refusal{d.Address, first, fmt.Sprintf("PF with %d VFs enabled; its VFs are the candidates", d.SRIOV.NumVFs)})
		case len(hits) == 0:
			plan.Unselected = append(plan.Unselected, Refusal{d.Address, "", "matches no pool's selectors"})
		default:
			owner[d.Address] = hits[0]
			matched[hits[0]] = append(matched[hits[0]], d)
			if len(hits) > 1 {
				var others []string
				for _, j := range hits[1:] {
					others = append(others, fmt.Sprintf("%q", c.Pools[j].Name))
				}
				plan.Notes = append(plan.Notes, Refusal{d.Address, first, fmt.Sprintf("also matches pool %s; the first pool in the config wins", strings.Join(others, ", "))})
			}
		}
	}
	for i := range c.Pools {
		p := &plan.Pools[i]
		switch p.Mode {
		case config.ModeVhostUser:
			buildVhostUser(p)
		case config.ModeVFIO:
			buildVFIO(plan, p, i, matched[i], owner, h, c)
		default:
			buildKernel(plan, p, matched[i], h, o.wasUp)
		}
	}
	slices.SortStableFunc(plan.Unselected, func(a, b Refusal) int { return strings.Compare(string(a.Address), string(b.Address)) })
	return plan
}

// crossAPI says why a function matched by the pools hits (in config
// order) is refused when they are served through different kubelet APIs,
// or "": a device offered as an extended resource and in a DRA pool would
// be counted twice by kubelet, so neither pool takes it.
// CrossAPIRefusal is in the reason of every function refused because a
// deviceplugin pool and a dra pool both select it.
const CrossAPIRefusal = "a device is never served by both APIs"

func crossAPI(c *config.Config, hits []int) string {
	a := &c.Pools[hits[0]]
	for _, j := range hits[1:] {
		b := &c.Pools[j]
		if apiOf(a) != apiOf(b) {
			return fmt.Sprintf("matches pool %q (api: %s) and pool %q (api: %s); "+CrossAPIRefusal+" (kubelet would count it twice): narrow the selectors (e.g. excludeAddresses) so that one pool takes it", a.Name, apiOf(a), b.Name, apiOf(b))
		}
	}
	return ""
}

func apiOf(p *config.Pool) config.API {
	if p.API == "" {
		return config.APIDevicePlugin
	}
	return p.API
}

func buildKernel(plan *Plan, p *Pool, devs []*sysfs.Device, h *sysfs.Host, wasUp LinkHistory) {
	for _, d := range devs {
		if use := hostUse(d); use != "" {
			plan.Unselected = append(plan.Unselected, Refusal{d.Address, p.Name, use})
			continue
		}
		u := newUnit(d, []sysfs.Address{d.Address})
		u.Healthy, u.Reason = kernelHealth(d, h, wasUp)
		if u.Healthy && p.Config != nil && p.Config.RDMA {
			u.Healthy, u.Reason = rdmaHealth(d)
		}
		p.Units = append(p.Units, u)
	}
}

func buildVFIO(plan *Plan, p *Pool, idx int, devs []*sysfs.Device, owner map[sysfs.Address]int, h *sysfs.Host, c *config.Config) {
	byGroup := map[string][]*sysfs.Device{}
	var order []string
	for _, d := range devs {
		if d.IOMMUGroup == "" {
			plan.Unselected = append(plan.Unselected, Refusal{d.Address, p.Name, "no IOMMU group: enable the IOMMU (intel_iommu=on or amd_iommu=on on the kernel command line) to use vfio"})
			continue
		}
		if _, ok := byGroup[d.IOMMUGroup]; !ok {
			order = append(order, d.IOMMUGroup)
		}
		byGroup[d.IOMMUGroup] = append(byGroup[d.IOMMUGroup], d)
	}
	for _, g := range order {
		sel := byGroup[g]
		members, reason := groupMembers(g, idx, p.Config, owner, h, c)
		if reason != "" {
			for _, d := range sel {
				plan.Unselected = append(plan.Unselected, Refusal{d.Address, p.Name, reason})
			}
			continue
		}
		u := newUnit(sel[0], members) // sel is sorted: sel[0] is the lowest selected address
		u.Healthy, u.Reason = vfioHealth(members, g, h)
		p.Units = append(p.Units, u)
	}
}

// groupMembers returns the endpoint functions of group g that would travel
// with a unit of pool idx, or the reason the group cannot be handed out.
func groupMembers(g string, idx int, pc *config.Pool, owner map[sysfs.Address]int, h *sysfs.Host, c *config.Config) ([]sysfs.Address, string) {
	var members []sysfs.Address
	for _, a := range h.Groups[g] {
		m := h.Device(a)
		if isPCIBridge(m.Class) {
			continue // vfio accepts PCI-to-PCI bridges in a group; they stay with the host
		}
		if m.IsBridge() {
			return nil, fmt.Sprintf("group %s also holds %s, a host bridge or controller (class %s); the group cannot leave the host", g, a, m.Class)
		}
		if m.IsPFWithVFs() {
			return nil, fmt.Sprintf("group %s also holds %s, a PF with %d VFs enabled; the group is not viable for vfio", g, a, m.SRIOV.NumVFs)
		}
		if use := hostUse(m); use != "" {
			return nil, fmt.Sprintf("group %s also holds %s bound to %s, in use by host (%s)", g, a, driverName(m.Driver), use)
		}
		if o, ok := owner[a]; ok && o != idx {
			return nil, fmt.Sprintf("group %s also holds %s, selected by pool %q; a group goes to one pool", g, a, c.Pools[o].Name)
		}
		if m.Driver != "" && m.Driver != "vfio-pci" && !slices.Contains(pc.AllowUnbindFrom, m.Driver) {
			return nil, fmt.Sprintf("group %s: %s is bound to %s, which pool %q may not unbind (add %q to allowUnbindFrom if that is intended)", g, a, m.Driver, pc.Name, m.Driver)
		}
		members = append(members, a)
	}
	return members, ""
}

// isPCIBridge: PCI-to-PCI bridges (root ports, switch ports), normal or
// subtractive, which vfio tolerates in a group and leaves alone.
func isPCIBridge(class string) bool {
	return strings.HasPrefix(class, "0604") || strings.HasPrefix(class, "0609")
}

func newUnit(d *sysfs.Device, members []sysfs.Address) Unit {
	u := Unit{ID: d.Address, Members: members, Group: d.IOMMUGroup, NUMANode: d.NUMANode, PF: d.PhysFn, VFIndex: d.VFIndex, Driver: d.Driver, Class: d.Class}
	for _, n := range d.Netdevs {
		u.Netdevs = append(u.Netdevs, n.Name)
	}
	u.RDMA = d.RDMA
	return u
}

// hostUse says why the host depends on d's netdevs, or "".
func hostUse(d *sysfs.Device) string {
	for _, n := range d.Netdevs {
		if n.HostUse != "" {
			return "netdev " + n.Name + " " + n.HostUse
		}
	}
	return ""
}

func driverName(d string) string {
	if d == "" {
		return "no driver"
	}
	return d
}

// kernelHealth: a kernel-mode device needs its driver, its own links up
// once they were seen up, and a VF whose PF has a netdev needs the PF's
// link up.
func kernelHealth(d *sysfs.Device, h *sysfs.Host, wasUp LinkHistory) (bool, string) {
	if d.Driver == "" {
		return false, "no driver bound; a kernel pool hands devices out with their driver"
	}
	for _, n := range d.Netdevs {
		if n.OperState != "up" && wasUp[NetdevKey{d.Address, n.Name}] {
			return false, fmt.Sprintf("link %s went %s after being up", n.Name, n.OperState)
		}
	}
	if d.IsVF() {
		if pf := h.Device(d.PhysFn); pf != nil {
			for _, n := range pf.Netdevs {
				if n.OperState != "up" {
					return false, fmt.Sprintf("PF %s link %s is %s", pf.Address, n.Name, n.OperState)
				}
			}
		}
	}
	return true, ""
}

// rdmaHealth: a function of an rdma pool has an RDMA device whose nodes
// exist, or a container asking for it would get no RDMA device or fail to
// start (the runtime reads each node from the host).
func rdmaHealth(d *sysfs.Device) (bool, string) {
	if len(d.RDMA) == 0 {
		return false, "no RDMA device on the function (load its RDMA driver, e.g. mlx5_ib; a device rdma-cni moved into a pod's network namespace is not seen either)"
	}
	for _, r := range d.RDMA {
		if len(r.Missing) > 0 {
			return false, fmt.Sprintf("RDMA device %s: /dev/infiniband/%s missing on the host (is ib_uverbs/ib_umad loaded, and /dev the host's?)", r.Name, strings.Join(r.Missing, ", /dev/infiniband/"))
		}
	}
	return true, ""
}

// vfioHealth: every member is present, and a group bound to vfio-pci has
// its /dev/vfio node.
func vfioHealth(members []sysfs.Address, g string, h *sysfs.Host) (bool, string) {
	for _, a := range members {
		m := h.Device(a)
		if m == nil {
			return false, fmt.Sprintf("group member %s vanished", a)
		}
		if m.Driver == "vfio-pci" && !m.VFIOGroupDev {
			return false, fmt.Sprintf("%s is bound to vfio-pci but /dev/vfio/%s is missing", a, g)
		}
	}
	return true, ""
}

// buildVhostUser gives a vhost-user pool its configured number of slots:
// units with IDs "slot-0".."slot-N-1", no PCI members, on the switch's
// NUMA node (for kubelet's topology hints and Prefer). Slots read nothing
// from the host and are always healthy here; a missing base directory is
// reported when a slot is prepared.
func buildVhostUser(p *Pool) {
	v := p.Config.VhostUser
	if v == nil {
		return
	}
	numa := -1
	if v.NUMANode != nil {
		numa = *v.NUMANode
	}
	p.Units = make([]Unit, v.Count)
	for i := range p.Units {
		p.Units[i] = Unit{ID: sysfs.Address(config.VhostUserSlotID(i)), NUMANode: numa, VFIndex: -1, Healthy: true}
	}
}
