package pool

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sriov-cdi/sriov-cdi/plugin/config"
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
