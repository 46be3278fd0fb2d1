package config

import (
	"fmt"
	"strconv"
	"strings"
)

// VFRange is an inclusive range of VF indexes.
type VFRange struct{ First, Last int }

// MaxVFIndex is the largest VF index PCIe allows (TotalVFs is 16 bits).
const MaxVFIndex = 65535

// ParseVFRanges parses the VF index list of a "ens1f0#0,2-7" selector:
// comma-separated indexes and inclusive ranges, each within 0..65535, first
// <= last.
func ParseVFRanges(s string) ([]VFRange, error) {
	if s == "" {
		return nil, fmt.Errorf("empty VF range list (want e.g. \"0,2-7\")")
	}
	var out []VFRange
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		first, err := parseVFIndex(lo)
		if err != nil {
			return nil, fmt.Errorf("VF range %q: %w", part, err)
		}
		last := first
		if isRange {
			if last, err = parseVFIndex(hi); err != nil {
				return nil, fmt.Errorf("VF range %q: %w", part, err)
			}
			if last < first {
				return nil, fmt.Errorf("VF range %q: %d is below %d (write \"%d-%d\")", part, last, first, last, first)
			}
		}
		out = append(out, VFRange{first, last})
	}
	return out, nil
}

func parseVFIndex(s string) (int, error) {
	if s == "" || len(s) > 5 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a VF index (0-%d)", s, MaxVFIndex)
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > MaxVFIndex {
		return 0, fmt.Errorf("%q is not a VF index (0-%d)", s, MaxVFIndex)
	}
	return n, nil
}

// ContainsVF reports whether index i lies in any of rs. No ranges means all.
func ContainsVF(rs []VFRange, i int) bool {
	if len(rs) == 0 {
		return true
	}
	for _, r := range rs {
		if r.First <= i && i <= r.Last {
			return true
		}
	}
	return false
}

// splitNameRanges splits "ens1f0#0,2-7" into "ens1f0" and its ranges.
func splitNameRanges(s string) (string, []VFRange, error) {
	name, ranges, ok := strings.Cut(s, "#")
	if name == "" {
		return "", nil, fmt.Errorf("%q has no name before '#'", s)
	}
	if !ok {
		return name, nil, nil
	}
	rs, err := ParseVFRanges(ranges)
	return name, rs, err
}
