// Package procmem reads a process's memory figures from /proc: the peak
// RSS (VmHWM) and the proportional set size split into anonymous memory
// and file pages (Pss_Anon / Pss_File of smaps_rollup). The benchmarks
// that run the real binary report them (plugin's BenchmarkRSS and
// e2e/bench/hostbench).
package procmem

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// HWM is the peak RSS of process pid in KiB.
func HWM(pid int) (int, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	kb, ok := fields(string(raw))["VmHWM"]
	if !ok {
		return 0, fmt.Errorf("/proc/%d/status has no VmHWM", pid)
	}
	return kb, nil
}

// PSS is Pss_Anon and Pss_File of process pid in KiB: anonymous memory
// against the binary's pages touched.
func PSS(pid int) (anon, file int, err error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, 0, err
	}
	f := fields(string(raw))
	return f["Pss_Anon"], f["Pss_File"], nil
}

// fields parses "Key:   123 kB" lines into KiB by key; other lines are
// skipped.
func fields(s string) map[string]int {
	out := map[string]int{}
	for _, l := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		if err != nil {
			continue
		}
		out[k] = kb
	}
	return out
}
