package main

// The NIC machine (run.sh --machine nic): three emulated Intel 82576 PFs
// (QEMU's igb, 8086:10c9 on igb; VFs 8086:10ca on igbvf), found by MAC.

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

const (
	macA = "52:54:00:e2:e0:0a" // ACS port: kernel pool by pfNames, vfio pool by drivers, release
	macB = "52:54:00:e2:e0:0b" // ACS port: host-use interlock, link health, sriov_numvfs
	macC = "52:54:00:e2:e0:0c" // disable-acs=on: port + PF + VFs in one group; soft-RoCE on its VFs

	nicVFsA = 7
	nicVFsB = 2
	nicVFsC = 2

	// hostNetdevB is QEMU's netdev id of nicB, for `set_link` (run.sh).
	hostNetdevB = "n1"
)

type nicLab struct {
	pfA, pfB, pfC    string // PCI addresses
	netA, netB, netC string // PF netdevs

	// The plugin of nic-kernel-pool and nic-vfio-drivers (nicA), kept
	// running until nic-release sees the released devices come back.
	relEnv        *pluginEnv
	relProc       *pluginProc
	relKernelEP   *endpoint
	relVfioEP     *endpoint
	relRegistered time.Time
	relKernelVFs  []string  // allocated from the kernel pool, then released
	relKernelAt   time.Time // when PodResources stopped listing them
	relVfioVF     string    // allocated from the vfio pool (bound), then released
	relVfioNetdev string    // its igbvf netdev before the bind
	relVfioAt     time.Time

	// The plugin on nicB shared by nic-host-use, nic-health-*, nic-numvfs.
	bEnv  *pluginEnv
	bProc *pluginProc
	bVFEP *endpoint // pool nic-b: the VFs of nicB (kernel)
	bPFEP *endpoint // pool nic-b-pf: nicB's PF itself (kernel)
}

func netdevsOf(addr string) []string {
	ents, _ := os.ReadDir(filepath.Join(devPath(addr), "net"))
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

func netdevOf(addr string) string {
	if n := netdevsOf(addr); len(n) > 0 {
		return n[0]
	}
	return ""
}

func operState(nd string) string {
	s, _ := readAttr(filepath.Join("/sys/class/net", nd, "operstate"))
	return s
}

func carrierOf(nd string) string {
	s, err := readAttr(filepath.Join("/sys/class/net", nd, "carrier"))
	if err != nil {
		return "0" // EINVAL while down
	}
	return s
}

// ipCmd runs busybox ip.
func ipCmd(t *T, args ...string) error {
	r := run(20*time.Second, nil, "ip", args...)
	if t != nil {
		t.Logf("ip %s -> %v %s", strings.Join(args, " "), r.err, strings.TrimSpace(r.stderr))
	}
	if r.err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), r.err, strings.TrimSpace(r.stderr))
	}
	return nil
}

// pfByMAC finds the SR-IOV PF whose netdev has the MAC address.
func pfByMAC(mac string) (addr, netdev string, err error) {
	ents, err := os.ReadDir("/sys/class/net")
	if err != nil {
		return "", "", err
	}
	for _, e := range ents {
		if a, _ := readAttr(filepath.Join("/sys/class/net", e.Name(), "address")); a != mac {
			continue
		}
		dev := linkBase(filepath.Join("/sys/class/net", e.Name(), "device"))
		if exists(filepath.Join(devPath(dev), "sriov_totalvfs")) {
			return dev, e.Name(), nil
		}
	}
	return "", "", fmt.Errorf("no SR-IOV PF netdev with MAC %s", mac)
}

// hostSetLink asks the host (run.sh watches the serial console) to switch
// a QEMU netdev's link, and waits until the guest netdev nd shows it.
func hostSetLink(t *T, hostNetdev, nd string, up bool, timeout time.Duration) (time.Time, error) {
	v, want := "off", func() bool { return operState(nd) != "up" }
	if up {
		v, want = "on", func() bool { return operState(nd) == "up" }
	}
	deadline := time.Now().Add(timeout)
	for attempt := 1; time.Now().Before(deadline); attempt++ {
		emit("E2E HOST set_link %s %s", hostNetdev, v)
		asked := time.Now()
		if waitFor(min(10*time.Second, time.Until(deadline)), want) {
			at := time.Now()
			t.Logf("host set_link %s %s: %s operstate %s carrier %s after %s (attempt %d)", hostNetdev, v, nd, operState(nd), carrierOf(nd), fmtDur(at.Sub(asked)), attempt)
			return at, nil
		}
	}
	return time.Time{}, fmt.Errorf("the host did not switch %s %s within %s (%s operstate %s; is run.sh watching the serial console?)", hostNetdev, v, timeout, nd, operState(nd))
}

func newNicLab() (*nicLab, error) {
	l := &nicLab{}
	var err error
	if l.pfA, l.netA, err = pfByMAC(macA); err != nil {
		return nil, err
	}
	if l.pfB, l.netB, err = pfByMAC(macB); err != nil {
		return nil, err
	}
	if l.pfC, l.netC, err = pfByMAC(macC); err != nil {
		return nil, err
	}
	emit("  lab: nicA %s %s, nicB %s %s, nicC %s %s (igb %s:%s totalvfs=%s)", l.pfA, l.netA, l.pfB, l.netB, l.pfC, l.netC,
		attr(l.pfA, "vendor"), attr(l.pfA, "device"), attr(l.pfA, "sriov_totalvfs"))
	// Kernel-pool VFs are healthy only while their PF's link is up (nicC:
	// nic-rdma's kernel pool; its group refusal does not depend on it).
	for _, nd := range []string{l.netA, l.netB, l.netC} {
		if r := run(20*time.Second, nil, "ip", "link", "set", nd, "up"); r.err != nil {
			return nil, fmt.Errorf("ip link set %s up: %s", nd, r)
		}
	}
	for _, s := range []struct {
		pf string
		n  int
	}{{l.pfA, nicVFsA}, {l.pfB, nicVFsB}, {l.pfC, nicVFsC}} {
		d, err := setNumVFs(s.pf, s.n)
		if err != nil {
			return nil, fmt.Errorf("enable %d VFs on %s: %w", s.n, s.pf, err)
		}
		vfs := vfsOf(s.pf)
		ok := waitFor(60*time.Second, func() bool {
			for _, v := range vfs {
				if driverOf(v) != "igbvf" || netdevOf(v) == "" {
					return false
				}
			}
			return true
		})
		var desc []string
		for _, v := range vfs {
			desc = append(desc, fmt.Sprintf("%s(%s,%s,g%s)", v, driverOf(v), netdevOf(v), groupOf(v)))
		}
		emit("  lab: %s sriov_numvfs=%d took %s, VFs %s", s.pf, s.n, d.Round(time.Millisecond), strings.Join(desc, " "))
		if !ok {
			return nil, fmt.Errorf("VFs of %s not all on igbvf with a netdev within 60s: %s", s.pf, strings.Join(desc, " "))
		}
	}
	if !waitFor(20*time.Second, func() bool { return operState(l.netA) == "up" && operState(l.netB) == "up" }) {
		return nil, fmt.Errorf("PF links not up: %s %s, %s %s", l.netA, operState(l.netA), l.netB, operState(l.netB))
	}
	return l, nil
}

// nicScenarios lists the NIC machine's scenarios in run order.
func nicScenarios(h *harness) []scenario {
	return []scenario{
		{name: "nic-discover", run: h.nicDiscover},
		{name: "nic-kernel-pool", run: h.nicKernelPool},
		{name: "nic-vfio-drivers", run: h.nicVfioDrivers},
		{name: "nic-host-use", timeout: 240 * time.Second, run: h.nicHostUse},
		{name: "nic-health-vf-link", run: h.nicHealthVFLink},
		{name: "nic-health-pf-link", run: h.nicHealthPFLink},
		{name: "nic-refuse-shared-group", run: h.nicRefuseShared},
		{name: "nic-numvfs", timeout: 240 * time.Second, run: h.nicNumVFs},
		{name: "nic-rdma", run: h.nicRDMA},
		{name: "nic-release", timeout: 420 * time.Second, run: h.nicRelease},
		{name: "kernel-log-clean", run: h.kernelLogClean},
	}
}
