package binding

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// NodesInUse returns, of paths (device nodes such as /dev/vfio/4 or the
// iommufd cdev /dev/vfio/devices/vfio0, as processes name them), those
// some process holds open, each with one such process ID, as procRoot
// shows them (the host's /proc: the plugin needs the host PID namespace,
// or the host's /proc mounted, to see QEMU or DPDK in other pods). An open
// vfio node means a VM or a DPDK application is using the devices:
// restoring their driver then would pull them from under it. It reads
// every process's fd directory, so callers ask only about devices about
// to be released. Processes that vanish or hide their fds mid-scan are
// skipped; an unreadable procRoot is an error.
func NodesInUse(procRoot string, paths []string) (map[string]int, error) {
	want := map[string]bool{}
	for _, p := range paths {
		if p != "" {
			want[p] = true
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
			if err != nil || !want[t] {
				continue
			}
			if _, dup := held[t]; !dup {
				held[t] = pid
			}
			if len(held) == len(want) {
				return held, nil
			}
		}
	}
	return held, nil
}

// vfioNodes returns the device nodes through which a process uses a unit:
// its group's /dev/vfio/<group> and, on kernels with vfio cdevs, each
// member's /dev/vfio/devices/vfioN (named by <function>/vfio-dev/ in
// sysfs).
func (m *Manager) vfioNodes(unit sysfs.Address, group string) []string {
	var out []string
	if group != "" {
		out = append(out, "/dev/vfio/"+group)
	}
	members := []sysfs.Address{unit}
	for _, r := range m.Records() {
		if r.Unit == unit && r.Address != unit {
			members = append(members, r.Address)
		}
	}
	for _, a := range members {
		ents, err := os.ReadDir(filepath.Join(m.root.PCIDevicePath(a), "vfio-dev"))
		if err != nil {
			continue
		}
		for _, e := range ents {
			out = append(out, "/dev/vfio/devices/"+e.Name())
		}
	}
	return out
}
