package dra

import (
	"fmt"
	"slices"

	resourceapi "k8s.io/api/resource/v1"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// claimDevice is one allocated device of a claim, resolved to its unit.
type claimDevice struct {
	Request string
	Pool    *pool.Pool
	Device  string
	Unit    pool.Unit
}

// claimUnits resolves the devices of claim allocated from driver to units
// of the plan: the pool must be a dra pool of the plan, the device one of
// its units and healthy (unhealthy also covers extra, e.g. a group that
// changed). Every problem is reported, each naming the claim, pool and
// device.
func claimUnits(claim *resourceapi.ResourceClaim, driver string, plan *pool.Plan, extra map[sysfs.Address]string) ([]claimDevice, error) {
	if claim.Status.Allocation == nil {
		return nil, fmt.Errorf("claim %s/%s is not allocated", claim.Namespace, claim.Name)
	}
	var out []claimDevice
	var errs []error
	for _, r := range claim.Status.Allocation.Devices.Results {
		if r.Driver != driver {
			continue
		}
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("claim %s/%s, request %q, device %s/%s: %s", claim.Namespace, claim.Name, r.Request, r.Pool, r.Device, fmt.Sprintf(format, args...)))
		}
		p := plan.Pool(r.Pool)
		if p == nil || p.Config == nil || p.Config.API != config.APIDRA {
			bad("no DRA pool %q on this node (the config changed since the claim was allocated?)", r.Pool)
			continue
		}
		id, err := ParsePoolDeviceName(p, r.Device)
		if err != nil {
			bad("%v", err)
			continue
		}
		u := p.Unit(id)
		switch {
		case u == nil:
			bad("the pool has no such device now (the function is gone or was refused; see `sriov-cdi discover`)")
			continue
		case !u.Healthy:
			bad("unhealthy: %s", u.Reason)
			continue
		case extra[id] != "":
			bad("unhealthy: %s", extra[id])
			continue
		}
		out = append(out, claimDevice{Request: r.Request, Pool: p, Device: r.Device, Unit: *u})
	}
	if len(errs) > 0 {
		return nil, joinErrs(errs)
	}
	return out, nil
}

// conflicts reports a device of devs whose functions are prepared for a
// claim other than uid: Kubernetes should never allocate one device to two
// claims, and the driver is the last line of defence.
func conflicts(cp *Checkpoint, uid string, devs []claimDevice) error {
	var errs []error
	seen := map[string]string{}
	for _, d := range devs {
		// A PCI unit is held through its functions; a vhost-user slot has
		// none and is held as itself, within its pool.
		ids, slot := d.Unit.Members, len(d.Unit.Members) == 0
		if slot {
			ids = []sysfs.Address{d.Unit.ID}
		}
		for _, m := range ids {
			other, c := cp.preparedFor(m)
			if slot {
				other, c = cp.preparedSlot(d.Pool.Name, m)
			}
			if other != "" && other != uid {
				errs = append(errs, fmt.Errorf("device %s/%s (%s) is already prepared for claim %s/%s (UID %s); a device serves one claim", d.Pool.Name, d.Device, m, c.Namespace, c.Name, other))
			}
			k := d.Pool.Name + "/" + string(m)
			if req, dup := seen[k]; dup && req != d.Request {
				errs = append(errs, fmt.Errorf("device %s/%s (%s) is allocated twice in the claim (requests %q and %q)", d.Pool.Name, d.Device, m, req, d.Request))
			}
			seen[k] = d.Request
		}
	}
	return joinErrs(errs)
}

// groupChanged returns, for every prepared unit whose IOMMU group members
// in the plan differ from those it was prepared with, the reason: the
// container holds a group that no longer matches the unit.
func groupChanged(cp *Checkpoint, plan *pool.Plan) map[sysfs.Address]string {
	out := map[sysfs.Address]string{}
	for _, c := range cp.Claims {
		for _, d := range c.Devices {
			p := plan.Pool(d.Pool)
			if p == nil {
				continue
			}
			if u := p.Unit(d.Unit); u != nil && (u.Group != d.Group || !slices.Equal(u.Members, d.Members)) {
				out[d.Unit] = fmt.Sprintf("IOMMU group changed since it was prepared (group %s %v, now %s %v)", d.Group, d.Members, u.Group, u.Members)
			}
		}
	}
	return out
}

func joinErrs(errs []error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	msg := fmt.Sprintf("%d problems:", len(errs))
	for _, e := range errs {
		msg += "\n  - " + e.Error()
	}
	return fmt.Errorf("%s", msg)
}
