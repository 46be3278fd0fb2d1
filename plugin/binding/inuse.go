package binding

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// VFIOGroupsInUse returns, of groups, those whose /dev/vfio/<group> some
// process holds open, each with one such process ID, as procRoot (the
// host's /proc; the plugin needs the host PID namespace to see QEMU or
// DPDK in other pods) shows them. A held group file means a VM or a DPDK
// application is using the devices: restoring their driver then would pull
// them from under it. It reads every process's fd directory, so callers
// ask only about groups about to be released. Processes that vanish or
// hide their fds mid-scan are skipped; an unreadable procRoot is an error.
func VFIOGroupsInUse(procRoot string, groups []string) (map[string]int, error) {
	want := map[string]bool{}
	for _, g := range groups {
		if g != "" {
			want[g] = true
		}
	}
	held := map[string]int{}
	if len(want) == 0 {
		return held, nil
	}
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("list processes in %q: %w", procRoot, err)
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		fdDir := filepath.Join(procRoot, e.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue // gone, or a kernel thread, or not ours to see
		}
		for _, fd := range fds {
			t, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil {
				continue
			}
			g, ok := strings.CutPrefix(t, "/dev/vfio/")
			if !ok || !want[g] {
				continue
			}
			if _, dup := held[g]; !dup {
				held[g] = pid
			}
			if len(held) == len(want) {
				return held, nil
			}
		}
	}
	return held, nil
}
