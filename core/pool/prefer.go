package pool

import (
	"cmp"
	"slices"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// Candidate is what Prefer needs to know of an available unit.
type Candidate struct {
	ID       sysfs.Address
	NUMANode int
	PF       sysfs.Address // "" for a function that is not a VF
}

// Prefer picks size IDs out of available for kubelet's
// GetPreferredAllocation: every must-include ID first; then the rest from
// one NUMA node when one can hold them (the node of the must-include IDs,
// else the node with most free units); then, within that, spread across PFs
// (fewest already taken first) or pack onto as few PFs as possible. Units
// are whole IOMMU groups, so no group is ever split. The result is sorted by
// choice order, deterministic, and names each unit once. IDs in mustInclude
// that are not available are ignored (kubelet never sends them); an ID
// available twice counts once.
func Prefer(available []Candidate, mustInclude []sysfs.Address, size int, policy config.Policy) []sysfs.Address {
	byID := make(map[sysfs.Address]Candidate, len(available))
	uniq := available[:0:0]
	for _, c := range available {
		if _, dup := byID[c.ID]; !dup {
			byID[c.ID] = c
			uniq = append(uniq, c)
		}
	}
	available = uniq
	chosen := map[sysfs.Address]bool{}
	var out []sysfs.Address
	perPF := map[sysfs.Address]int{}
	perNode := map[int]int{}
	take := func(c Candidate) {
		chosen[c.ID] = true
		out = append(out, c.ID)
		perPF[c.PF]++
		perNode[c.NUMANode]++
	}
	for _, id := range mustInclude {
		if c, ok := byID[id]; ok && !chosen[id] && len(out) < size {
			take(c)
		}
	}
	need := size - len(out)
	if need <= 0 {
		return out
	}
	var rest []Candidate
	free := map[int]int{}
	for _, c := range available {
		if !chosen[c.ID] {
			rest = append(rest, c)
			free[c.NUMANode]++
		}
	}
	node := pickNode(perNode, free, need)
	// Units on the chosen node first, then the rest.
	slices.SortStableFunc(rest, func(a, b Candidate) int {
		return cmp.Or(cmp.Compare(boolRank(a.NUMANode != node), boolRank(b.NUMANode != node)), cmp.Compare(a.ID, b.ID))
	})
	onNode := 0
	for _, c := range rest {
		if c.NUMANode == node {
			onNode++
		}
	}
	// Fill from the node first, then from the others, each by policy.
	for _, part := range [][]Candidate{rest[:onNode], rest[onNode:]} {
		for need > 0 && len(part) > 0 {
			i := pickByPolicy(part, perPF, policy)
			take(part[i])
			part = slices.Delete(part, i, i+1)
			need--
		}
	}
	return out
}

// pickNode prefers the node that already holds most of the must-include
// units if it has enough free units, else the node with most free units;
// ties go to the lowest node number.
func pickNode(taken, free map[int]int, need int) int {
	nodes := make([]int, 0, len(free))
	for n := range free {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	best, bestKey := -2, [3]int{-1, -1, 0}
	for _, n := range nodes {
		key := [3]int{boolRank(free[n] >= need), taken[n], free[n]}
		if best == -2 || key[0] > bestKey[0] || key[0] == bestKey[0] && (key[1] > bestKey[1] || key[1] == bestKey[1] && key[2] > bestKey[2]) {
			best, bestKey = n, key
		}
	}
	return best
}

// pickByPolicy returns the index in part of the next unit to take.
// spread: the PF with the fewest units taken so far; pack: the PF with the
// most. Ties go to the lowest PF address, then the lowest ID.
func pickByPolicy(part []Candidate, perPF map[sysfs.Address]int, policy config.Policy) int {
	best := 0
	for i := 1; i < len(part); i++ {
		a, b := part[i], part[best]
		ta, tb := perPF[a.PF], perPF[b.PF]
		if policy == config.PolicyPack {
			ta, tb = -ta, -tb
		}
		if c := cmp.Or(cmp.Compare(ta, tb), cmp.Compare(a.PF, b.PF), cmp.Compare(a.ID, b.ID)); c < 0 {
			best = i
		}
	}
	return best
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}
