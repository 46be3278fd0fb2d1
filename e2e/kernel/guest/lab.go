package main

// The lab's devices (see the QEMU command line in e2e/kernel/run.sh) and the
// state the scenarios hand on to each other.

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

const (
	vfioVFs   = 5 // VFs enabled on the e2e-vfio PF (sriov_max_vfs=7)
	nvmeVFs   = 4 // VFs brought online on the e2e-nvme PF (sriov_max_vfs=4)
	sharedVFs = 2 // VFs on the e2e-shared PF (sriov_max_vfs=2)
)

type lab struct {
	pfVfio, ctrlVfio     string
	pfNvme, ctrlNvme     string
	pfShared, ctrlShared string

	// boot is the driver state of every PCI function after lab setup.
	boot map[string]devState

	// nvmeOnline lists the e2e-nvme PF's VFs once nvme owns them.
	nvmeOnline []string

	// The plugin shared by vfio-allocate, vfio-allocate-multi, restore-all.
	vfioEnv    *pluginEnv
	vfioProc   *pluginProc
	vfioEP     *endpoint
	vfioBefore map[string]devState
	alloc1     time.Duration

	// Set by refuse-shared-group for refuse-reason-logged.
	refuseLogChecked bool
	refuseLogMissing string
}

func newLab() (*lab, error) {
	l := &lab{}
	var err error
	if l.pfVfio, l.ctrlVfio, err = pfBySerial("e2e-vfio"); err != nil {
		return nil, err
	}
	if l.pfNvme, l.ctrlNvme, err = pfBySerial("e2e-nvme"); err != nil {
		return nil, err
	}
	if l.pfShared, l.ctrlShared, err = pfBySerial("e2e-shared"); err != nil {
		return nil, err
	}
	// VFs stay driverless on these two PFs (QEMU's offline secondary
	// controllers would make nvme's probe fail anyway).
	for _, s := range []struct {
		pf string
		n  int
	}{{l.pfVfio, vfioVFs}, {l.pfShared, sharedVFs}} {
		if err := setAutoprobe(s.pf, false); err != nil {
			return nil, err
		}
		d, err := setNumVFs(s.pf, s.n)
		if err != nil {
			return nil, fmt.Errorf("enable %d VFs on %s: %w", s.n, s.pf, err)
		}
		emit("  lab: %s sriov_numvfs=%d took %s, VFs %v", s.pf, s.n, d.Round(time.Millisecond), vfsOf(s.pf))
	}
	l.boot = snapshot(allPCI())
	return l, nil
}

var pciAddrRE = regexp.MustCompile(`[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]`)

// idAddr maps a device-plugin device ID to the PCI address it names.
func idAddr(id string) string {
	return pciAddrRE.FindString(strings.ToLower(id))
}

// idsFor returns the device IDs (from a ListAndWatch list) naming addrs, in
// the order of addrs; missing addresses are reported.
func idsFor(ids []string, addrs []string) ([]string, error) {
	byAddr := map[string]string{}
	for _, id := range ids {
		if a := idAddr(id); a != "" {
			byAddr[a] = id
		}
	}
	var out, missing []string
	for _, a := range addrs {
		if id, ok := byAddr[a]; ok {
			out = append(out, id)
		} else {
			missing = append(missing, a)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("no device ID names %v (IDs: %v)", missing, ids)
	}
	return out, nil
}

func addrsOf(ids []string) []string {
	var out []string
	for _, id := range ids {
		out = append(out, idAddr(id))
	}
	return out
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]int{}
	for _, x := range a {
		m[x]++
	}
	for _, x := range b {
		m[x]--
		if m[x] < 0 {
			return false
		}
	}
	return true
}

// putBack returns devices to the wanted state through sysfs, without the
// product, so that one scenario's leftovers cannot break the next. It
// reports what it had to change.
func putBack(t *T, want map[string]devState) {
	for addr, w := range want {
		if !exists(devPath(addr)) {
			continue
		}
		cur := stateOf(addr)
		if cur == w {
			continue
		}
		t.Logf("cleanup: %s is %s, putting back %s through sysfs", addr, cur, w)
		ov := w.Override
		if ov == "(null)" {
			ov = "\n"
		}
		_ = writeAttr(devPath(addr)+"/driver_override", ov)
		if cur.Driver != "" && cur.Driver != w.Driver {
			_ = writeAttr(devPath(addr)+"/driver/unbind", addr)
		}
		if w.Driver != "" && driverOf(addr) == "" {
			_ = writeAttr("/sys/bus/pci/drivers_probe", addr)
		}
		if got := stateOf(addr); got != w {
			t.Logf("cleanup: %s still %s", addr, got)
		}
	}
}
