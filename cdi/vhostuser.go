package cdi

import (
	"fmt"
	"strings"

	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/core/vhostuser"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// vhostUserSpec fills spec with one device per slot of a vhost-user pool:
// a bind mount of the slot's host directory
// (<baseDir>/sriov-cdi.<pool>.<slot>) at <containerPath>/<slot>, and the
// variable naming the socket in it (vhostuser.Layout.Describe).
//
// The spec is static: a slot's directory name is derived from the slot ID,
// not made up at Allocate, so the spec written when the pool is planned
// already names the directory Allocate creates, and nothing has to be
// rewritten while kubelet waits for Allocate. That is safe because kubelet
// allocates a slot only when no container holds it: Allocate empties the
// directory of whatever an earlier pod left (PrepareFresh), and the
// directory is removed when kubelet released the slot. It also keeps
// working when the plugin is down (a container restart resolves the same
// spec) and lets an operator point the switch at fixed per-slot paths.
func vhostUserSpec(spec *cdispec.Spec, p *pool.Pool) (*cdispec.Spec, error) {
	if p.Config == nil || p.Config.VhostUser == nil {
		return nil, fmt.Errorf("pool %q: vhost-user pool without a vhostUser block", p.Name)
	}
	l := vhostuser.LayoutFor(p.Resource, p.Config)
	for i := range p.Units {
		a, err := l.Describe(string(p.Units[i].ID))
		if err != nil {
			return nil, fmt.Errorf("pool %q: %w", p.Name, err)
		}
		spec.Devices = append(spec.Devices, cdispec.Device{Name: a.Key, ContainerEdits: a.Edits})
	}
	var err error
	if spec.Version, err = cdispec.MinimumRequiredVersion(spec); err != nil {
		return nil, fmt.Errorf("pool %q: choose the CDI version: %w", p.Name, err)
	}
	return spec, nil
}

// ClaimVhostUserSpecFor builds the CDI spec of the slots of vhost-user
// pool p prepared for the claim with UID uid (DRA): one device per
// allocation (its Key is the slot ID), named ClaimDeviceName, with the
// allocation's edits — the bind mount of its per-claim host directory and
// its variable — and, spec-wide, VhostUserEnv(resource) listing the
// claim's sockets in the container.
func ClaimVhostUserSpecFor(p *pool.Pool, uid string, allocs []vhostuser.Allocation) (*cdispec.Spec, error) {
	if err := checkClaimUID(uid); err != nil {
		return nil, err
	}
	vendor, class, err := KindOf(p.Resource)
	if err != nil {
		return nil, fmt.Errorf("pool %q: %w", p.Name, err)
	}
	spec := &cdispec.Spec{Kind: vendor + "/" + class}
	socks := make([]string, 0, len(allocs))
	for _, a := range allocs {
		spec.Devices = append(spec.Devices, cdispec.Device{Name: ClaimDeviceName(uid, sysfs.Address(a.Key)), ContainerEdits: a.Edits})
		socks = append(socks, a.ContainerSocket)
	}
	spec.ContainerEdits.Env = []string{config.VhostUserEnv(p.Resource) + "=" + strings.Join(socks, ",")}
	if spec.Version, err = cdispec.MinimumRequiredVersion(spec); err != nil {
		return nil, fmt.Errorf("pool %q: choose the CDI version: %w", p.Name, err)
	}
	return spec, nil
}
