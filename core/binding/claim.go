package binding

import (
	"context"
	"slices"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// ForClaim adapts a Manager to the DRA driver, which binds the units of a
// claim in NodePrepareResources and restores them in
// NodeUnprepareResources: same interlocks, timeouts, rollback and state
// file as Allocate, recorded with OriginDRA so that the PodResources
// release watcher never restores them.
type ForClaim struct{ M *Manager }

// Bind binds every endpoint function of each unit's IOMMU group to
// vfio-pci (vfio pools; kernel pools get nothing and nil) and returns the
// functions this call changed — not those already bound — which is exactly
// what Restore must undo when the claim goes.
func (f ForClaim) Bind(ctx context.Context, pc *config.Pool, units []pool.Unit) ([]sysfs.Address, error) {
	if pc == nil || pc.Mode != config.ModeVFIO {
		return nil, nil
	}
	before := map[sysfs.Address]bool{}
	for _, r := range f.M.Records() {
		before[r.Address] = true
	}
	if err := f.M.change(ctx, pc, units, sysfs.VFIODriver, OriginDRA); err != nil {
		return nil, err
	}
	var bound []sysfs.Address
	for _, r := range f.M.Records() {
		if !before[r.Address] && slices.ContainsFunc(units, func(u pool.Unit) bool { return r.Unit == u.ID }) {
			bound = append(bound, r.Address)
		}
	}
	return bound, nil
}

// Restore returns functions to their recorded original drivers; functions
// without a record (restored by hand meanwhile) are skipped.
func (f ForClaim) Restore(ctx context.Context, addrs []sysfs.Address) error {
	var known []sysfs.Address
	for _, r := range f.M.Records() {
		if slices.Contains(addrs, r.Address) {
			known = append(known, r.Address)
		}
	}
	if len(known) == 0 {
		return nil
	}
	return f.M.Restore(ctx, known)
}

// Claimed returns the functions bound for claims (OriginDRA) whose pool
// returns them to their original driver on release: the DRA driver
// restores those no checkpointed claim holds (a process that stopped
// between the bind and the checkpoint).
func (f ForClaim) Claimed() []sysfs.Address {
	var out []sysfs.Address
	for _, r := range f.M.Records() {
		if r.Origin == OriginDRA && r.RestoreOnRelease {
			out = append(out, r.Address)
		}
	}
	return out
}
