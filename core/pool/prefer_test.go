package pool

import (
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

func TestPrefer(t *testing.T) {
	// Two PFs on node 0 (A: 3 VFs, B: 2 VFs), one PF on node 1 (C: 4 VFs).
	avail := []Candidate{
		{"0000:3b:02.0", 0, "0000:3b:00.0"}, {"0000:3b:02.1", 0, "0000:3b:00.0"}, {"0000:3b:02.2", 0, "0000:3b:00.0"},
		{"0000:3c:02.0", 0, "0000:3c:00.0"}, {"0000:3c:02.1", 0, "0000:3c:00.0"},
		{"0000:86:02.0", 1, "0000:86:00.0"}, {"0000:86:02.1", 1, "0000:86:00.0"}, {"0000:86:02.2", 1, "0000:86:00.0"}, {"0000:86:02.3", 1, "0000:86:00.0"},
	}
	tests := []struct {
		name   string
		must   []sysfs.Address
		size   int
		policy config.Policy
		want   []sysfs.Address
	}{
		{name: "spread on the node with most free units", size: 2, policy: config.PolicySpread,
			want: []sysfs.Address{"0000:3b:02.0", "0000:3c:02.0"}},
		{name: "pack on one PF", size: 2, policy: config.PolicyPack,
			want: []sysfs.Address{"0000:3b:02.0", "0000:3b:02.1"}},
		{name: "must-include pulls the node", must: []sysfs.Address{"0000:86:02.3"}, size: 3, policy: config.PolicySpread,
			want: []sysfs.Address{"0000:86:02.3", "0000:86:02.0", "0000:86:02.1"}},
		{name: "the rest goes to a node that can hold all of it", must: []sysfs.Address{"0000:86:02.0"}, size: 6, policy: config.PolicySpread,
			want: []sysfs.Address{"0000:86:02.0", "0000:3b:02.0", "0000:3c:02.0", "0000:3b:02.1", "0000:3c:02.1", "0000:3b:02.2"}},
		{name: "must-include node kept while it can hold the rest", must: []sysfs.Address{"0000:86:02.0"}, size: 4, policy: config.PolicySpread,
			want: []sysfs.Address{"0000:86:02.0", "0000:86:02.1", "0000:86:02.2", "0000:86:02.3"}},
		{name: "a node that can hold everything wins over must-include ties", size: 5, policy: config.PolicySpread,
			want: []sysfs.Address{"0000:3b:02.0", "0000:3c:02.0", "0000:3b:02.1", "0000:3c:02.1", "0000:3b:02.2"}},
		{name: "must-include only", must: []sysfs.Address{"0000:3c:02.1", "0000:3b:02.2"}, size: 2, policy: config.PolicyPack,
			want: []sysfs.Address{"0000:3c:02.1", "0000:3b:02.2"}},
		{name: "duplicate and unknown must-include ignored", must: []sysfs.Address{"0000:3c:02.1", "0000:3c:02.1", "0000:ff:00.0"}, size: 2, policy: config.PolicySpread,
			want: []sysfs.Address{"0000:3c:02.1", "0000:3b:02.0"}},
		{name: "size larger than available: fullest node first, then the rest", size: 20, policy: config.PolicyPack,
			want: []sysfs.Address{"0000:3b:02.0", "0000:3b:02.1", "0000:3b:02.2", "0000:3c:02.0", "0000:3c:02.1", "0000:86:02.0", "0000:86:02.1", "0000:86:02.2", "0000:86:02.3"}},
		{name: "zero", size: 0, policy: config.PolicySpread, want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Prefer(avail, tc.must, tc.size, tc.policy)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

// TestPreferDuplicateAvailable (issue 11.11): kubelet never sends an ID
// twice, but if a caller does, the answer must still name each unit once.
func TestPreferDuplicateAvailable(t *testing.T) {
	a := Candidate{"0000:3b:02.0", 0, "0000:3b:00.0"}
	b := Candidate{"0000:3b:02.1", 0, "0000:3b:00.0"}
	for _, policy := range []config.Policy{config.PolicySpread, config.PolicyPack} {
		got := Prefer([]Candidate{a, a, a, b}, nil, 3, policy)
		if diff := cmp.Diff([]sysfs.Address{a.ID, b.ID}, got); diff != "" {
			t.Errorf("%s: (-want +got)\n%s", policy, diff)
		}
	}
}

// FuzzPrefer checks Prefer's contract on arbitrary inputs: every answer is
// available, named once, no longer than asked, and must-include IDs that
// are available come first.
func FuzzPrefer(f *testing.F) {
	f.Add([]byte{0, 1, 1, 2, 3, 3}, []byte{1}, 3, false)
	f.Add([]byte{5, 5, 5}, []byte{5, 5, 9}, 2, true)
	f.Fuzz(func(t *testing.T, avail, must []byte, size int, pack bool) {
		if size < 0 || size > 64 || len(avail) > 64 || len(must) > 16 {
			t.Skip()
		}
		addr := func(b byte) sysfs.Address { return sysfs.Address(fmt.Sprintf("0000:%02x:00.%d", b>>3, b&7)) }
		var cands []Candidate
		isAvail := map[sysfs.Address]bool{}
		for _, b := range avail {
			cands = append(cands, Candidate{ID: addr(b), NUMANode: int(b % 2), PF: addr(b &^ 7)})
			isAvail[addr(b)] = true
		}
		var mustIDs []sysfs.Address
		for _, b := range must {
			mustIDs = append(mustIDs, addr(b))
		}
		policy := config.PolicySpread
		if pack {
			policy = config.PolicyPack
		}
		got := Prefer(cands, mustIDs, size, policy)
		if len(got) > size || len(got) > len(isAvail) {
			t.Fatalf("%d IDs for size %d and %d available units: %v", len(got), size, len(isAvail), got)
		}
		if want := min(size, len(isAvail)); len(got) != want {
			t.Fatalf("%d IDs, want %d: %v", len(got), want, got)
		}
		seen := map[sysfs.Address]bool{}
		for _, id := range got {
			if !isAvail[id] {
				t.Fatalf("%s is not available", id)
			}
			if seen[id] {
				t.Fatalf("%s named twice: %v", id, got)
			}
			seen[id] = true
		}
		var wantFirst []sysfs.Address
		for _, id := range mustIDs {
			if isAvail[id] && !slices.Contains(wantFirst, id) && len(wantFirst) < size {
				wantFirst = append(wantFirst, id)
			}
		}
		if !slices.Equal(got[:len(wantFirst)], wantFirst) {
			t.Fatalf("must-include %v not first in %v", wantFirst, got)
		}
	})
}
