package main

// Scenarios 2–5 on the e2e-vfio PF (VFs start driverless): allocate one VF,
// allocate four at once, `restore --all`, shrink sriov_numvfs under a
// running plugin.

import (
	"fmt"
	"strings"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

func fmtResponse(r *pluginapi.ContainerAllocateResponse) string {
	var b strings.Builder
	fmt.Fprintf(&b, "envs=%v", r.Envs)
	for _, d := range r.Devices {
		fmt.Fprintf(&b, " device=%s:%s:%s", d.HostPath, d.ContainerPath, d.Permissions)
	}
	for _, m := range r.Mounts {
		fmt.Fprintf(&b, " mount=%s:%s", m.HostPath, m.ContainerPath)
	}
	for _, c := range r.CdiDevices {
		fmt.Fprintf(&b, " cdi=%s", c.Name)
	}
	fmt.Fprintf(&b, " annotations=%v", r.Annotations)
	return b.String()
}

// checkVfioAlloc checks the kernel and the Allocate response after a vfio
// allocation of addrs: each VF on vfio-pci, its /dev/vfio/<group> a char
// device, a CDI device naming it whose spec has the group node, its address
// in the environment.
func checkVfioAlloc(e *pluginEnv, resp *pluginapi.ContainerAllocateResponse, addrs []string) []string {
	var bad []string
	specs, files := e.cdiSpecs()
	var envs []string
	for k, v := range resp.Envs {
		envs = append(envs, k+"="+v)
	}
	envText := strings.Join(envs, "\n")
	if len(resp.CdiDevices) == 0 {
		bad = append(bad, "response has no CdiDevices")
	}
	for _, c := range resp.CdiDevices {
		kind, dev, ok := strings.Cut(c.Name, "=")
		if !ok {
			bad = append(bad, fmt.Sprintf("CDI device %q is not qualified (vendor/class=name)", c.Name))
			continue
		}
		if !strings.Contains(specs, kind) || !strings.Contains(specs, dev) {
			bad = append(bad, fmt.Sprintf("no CDI spec in %s (files %v) has kind %q and device %q", e.cdiDir, files, kind, dev))
		}
	}
	if !isCharDev("/dev/vfio/vfio") {
		bad = append(bad, "/dev/vfio/vfio is not a char device")
	}
	for _, a := range addrs {
		if d := driverOf(a); d != "vfio-pci" {
			bad = append(bad, fmt.Sprintf("%s driver is %q, want vfio-pci", a, d))
		}
		g := groupOf(a)
		if !isCharDev("/dev/vfio/" + g) {
			bad = append(bad, fmt.Sprintf("%s: /dev/vfio/%s is not a char device", a, g))
		}
		if !strings.Contains(specs, "/dev/vfio/"+g) {
			bad = append(bad, fmt.Sprintf("%s: no CDI spec mentions /dev/vfio/%s", a, g))
		}
		named := false
		for _, c := range resp.CdiDevices {
			if _, dev, _ := strings.Cut(c.Name, "="); idAddr(dev) == a {
				named = true
			}
		}
		if !named {
			bad = append(bad, fmt.Sprintf("no CDI device in the response names %s", a))
		}
		if !strings.Contains(envText, a) {
			bad = append(bad, fmt.Sprintf("no env var lists %s (envs %v)", a, envs))
		}
	}
	return bad
}

// onlyChanged reports devices that changed state but are not in allowed.
func onlyChanged(before, after map[string]devState, allowed []string) []string {
	ok := map[string]bool{}
	for _, a := range allowed {
		ok[a] = true
	}
	var bad []string
	for _, d := range diffStates(before, after) {
		addr, _, _ := strings.Cut(d, " ")
		addr = strings.TrimSuffix(addr, ":")
		if !ok[addr] {
			bad = append(bad, "unexpected change: "+d)
		}
	}
	return bad
}

func (h *harness) vfioAllocate(t *T) error {
	if err := h.needVfioPlugin(); err != nil {
		return err
	}
	l := h.lab
	vfs := vfsOf(l.pfVfio)
	p := pool{name: "nvme-vf", mode: "vfio", vendors: []string{"1b36"}, devices: []string{"0010"}, rootDevices: []string{l.pfVfio}}
	e, err := h.newPluginEnv(t, true, p)
	if err != nil {
		return err
	}
	l.vfioEnv = e
	l.vfioBefore = snapshot(allPCI())
	proc, err := e.start()
	if err != nil {
		return err
	}
	l.vfioProc = proc
	// Only a passing run hands the plugin on (to vfio-allocate-multi and
	// restore-all); otherwise it must not overlap the next scenario's.
	defer func() {
		if l.vfioEP == nil {
			_ = proc.stop()
			e.kubelet.stop()
			putBack(t, l.vfioBefore)
		}
	}()
	ep, err := proc.waitRegistered(p.resource(), nil, 30*time.Second)
	if err != nil {
		return err
	}
	u, err := ep.waitDevices(time.Time{}, 20*time.Second, func(d []*pluginapi.Device) bool {
		return sameSet(addrsOf(healthyIDs(d)), vfs) && len(d) == len(vfs)
	})
	if err != nil {
		proc.dumpLog(40)
		return fmt.Errorf("want exactly the VFs %v healthy: %w", vfs, err)
	}
	if err := h.needWiredPlugin(e, proc); err != nil {
		return err
	}
	ids, err := idsFor(allIDs(u.devices), vfs)
	if err != nil {
		return err
	}
	resp, d, err := ep.allocate(ids[:1], 60*time.Second)
	if err != nil {
		proc.dumpLog(40)
		dmesgTail(t, 20)
		return fmt.Errorf("allocate %s: %w", ids[0], err)
	}
	t.Logf("allocate %s took %s: %s", ids[0], fmtDur(d), fmtResponse(resp))
	bad := checkVfioAlloc(e, resp, vfs[:1])
	bad = append(bad, onlyChanged(l.vfioBefore, snapshot(allPCI()), vfs[:1])...)
	if len(bad) > 0 {
		proc.dumpLog(40)
		dmesgTail(t, 20)
		return errorsJoin(bad)
	}
	l.vfioEP = ep
	l.alloc1 = d
	t.Detail("vf=%s group=%s allocate_1vf=%s", vfs[0], groupOf(vfs[0]), fmtDur(d))
	return nil
}

func (h *harness) vfioAllocateMulti(t *T) error {
	l := h.lab
	if l.vfioEP == nil || l.vfioProc == nil || l.vfioProc.exited() {
		if err := h.needVfioPlugin(); err != nil {
			return err
		}
		return skipf("needs the plugin that vfio-allocate starts (vfio-allocate did not pass)")
	}
	l.vfioEnv.use(t)
	vfs := vfsOf(l.pfVfio)[1:5]
	ids, err := idsFor(allIDs(l.vfioEP.latest()), vfs)
	if err != nil {
		return err
	}
	resp, d, err := l.vfioEP.allocate(ids, 120*time.Second)
	if err != nil {
		l.vfioProc.dumpLog(40)
		dmesgTail(t, 20)
		return fmt.Errorf("allocate %v: %w", ids, err)
	}
	t.Logf("allocate %v took %s: %s", ids, fmtDur(d), fmtResponse(resp))
	bad := checkVfioAlloc(l.vfioEnv, resp, vfs)
	bad = append(bad, onlyChanged(l.vfioBefore, snapshot(allPCI()), vfsOf(l.pfVfio)[:5])...)
	if len(bad) > 0 {
		l.vfioProc.dumpLog(40)
		return errorsJoin(bad)
	}
	t.Detail("vfs=%d allocate_%dvf=%s allocate_1vf=%s", len(vfs), len(vfs), fmtDur(d), fmtDur(l.alloc1))
	return nil
}

func (h *harness) restoreAll(t *T) error {
	l := h.lab
	if l.vfioEnv != nil {
		l.vfioEnv.use(t)
		before := l.vfioBefore
		k, proc := l.vfioEnv.kubelet, l.vfioProc
		t.Cleanup(func() {
			if proc != nil {
				_ = proc.stop()
			}
			k.stop()
			putBack(t, before)
		})
	}
	if err := h.needFlags("restore", "--all"); err != nil {
		return err
	}
	if l.vfioEP == nil || l.vfioProc == nil {
		return skipf("needs VFs bound by vfio-allocate (did not pass)")
	}
	stopStart := time.Now()
	stopErr := l.vfioProc.stop()
	t.Logf("plugin stop (SIGTERM) took %s, exit: %v", fmtDur(time.Since(stopStart)), stopErr)
	afterStop := snapshot(allPCI())
	if d := diffStates(l.vfioBefore, afterStop); len(d) > 0 {
		t.Logf("still changed after plugin stop (restore's job): %v", d)
	} else {
		t.Logf("the plugin already restored everything on stop")
	}
	args := h.restoreArgs(l.vfioEnv)
	r := h.cliRun(120*time.Second, args...)
	t.Logf("sriov-cdi %s: took %s\n%s%s", strings.Join(args, " "), fmtDur(r.dur), tail(r.stdout, 1500), tail(r.stderr, 1500))
	if r.err != nil {
		return fmt.Errorf("sriov-cdi %s: %v", strings.Join(args, " "), r.err)
	}
	if d := diffStates(l.vfioBefore, snapshot(allPCI())); len(d) > 0 {
		dmesgTail(t, 20)
		return fmt.Errorf("not back to the original state after restore --all: %s", strings.Join(d, "; "))
	}
	// A second restore has nothing to do and must not fail.
	r2 := h.cliRun(60*time.Second, args...)
	if r2.err != nil {
		return fmt.Errorf("second restore --all: %s", r2)
	}
	if d := diffStates(l.vfioBefore, snapshot(allPCI())); len(d) > 0 {
		return fmt.Errorf("second restore --all changed state: %s", strings.Join(d, "; "))
	}
	t.Detail("restored=%d restore=%s plugin_exit=%v", len(diffStates(l.vfioBefore, afterStop)), fmtDur(r.dur), stopErr)
	return nil
}

func (h *harness) numVFsShrink(t *T) error {
	if err := h.needVfioPlugin(); err != nil {
		return err
	}
	l := h.lab
	pf := l.pfVfio
	if _, err := setNumVFs(pf, vfioVFs); err != nil {
		return err
	}
	before := snapshot(allPCI())
	t.Cleanup(func() {
		if _, err := setNumVFs(pf, vfioVFs); err != nil {
			t.Logf("cleanup: sriov_numvfs=%d: %v", vfioVFs, err)
		}
		putBack(t, before)
	})
	vfs := vfsOf(pf)
	p := pool{name: "shrink", mode: "vfio", rootDevices: []string{pf}}
	e, err := h.newPluginEnv(t, false, p)
	if err != nil {
		return err
	}
	proc, err := e.start()
	if err != nil {
		return err
	}
	ep, err := proc.waitRegistered(p.resource(), nil, 30*time.Second)
	if err != nil {
		return err
	}
	u, err := ep.waitDevices(time.Time{}, 20*time.Second, func(d []*pluginapi.Device) bool {
		return sameSet(addrsOf(healthyIDs(d)), vfs) && len(d) == len(vfs)
	})
	if err != nil {
		proc.dumpLog(40)
		return err
	}
	if err := h.needWiredPlugin(e, proc); err != nil {
		return err
	}
	// One VF that is about to vanish is in use (bound to vfio-pci).
	ids, err := idsFor(allIDs(u.devices), vfs[3:4])
	if err != nil {
		return err
	}
	if _, _, err := ep.allocate(ids, 60*time.Second); err != nil {
		proc.dumpLog(40)
		return fmt.Errorf("allocate %v: %w", ids, err)
	}
	if d := driverOf(vfs[3]); d != "vfio-pci" {
		return fmt.Errorf("%s on %q after Allocate, want vfio-pci", vfs[3], d)
	}

	// The kernel removes the VFs one by one while the write blocks (about
	// 1 s under TCG), and holds the PF's device lock all along: reading
	// the PF's sriov_numvfs blocks until the write returns (see
	// kernel-binding-facts), so a rescan cannot finish before that. The
	// drop is timed from the moment the write returned.
	vanished := make(chan time.Time, 1)
	go func() {
		waitFor(10*time.Second, func() bool {
			for _, v := range vfs {
				if exists(devPath(v)) {
					return false
				}
			}
			return true
		})
		vanished <- time.Now()
	}()
	w0 := time.Now()
	if err := writeAttr(devPath(pf)+"/sriov_numvfs", "0"); err != nil {
		return err
	}
	w0End := time.Now()
	goneAt := <-vanished
	gone, err := ep.waitDevices(w0, 5*time.Second, func(d []*pluginapi.Device) bool {
		for _, a := range addrsOf(allIDs(d)) {
			for _, v := range vfs {
				if a == v {
					return false
				}
			}
		}
		return true
	})
	if err != nil {
		proc.dumpLog(40)
		return fmt.Errorf("after sriov_numvfs 5->0: %w", err)
	}
	t.Logf("timeline from the write of 0: last VF gone from sysfs +%s, write returned +%s, ListAndWatch without them +%s",
		fmtDur(goneAt.Sub(w0)), fmtDur(w0End.Sub(w0)), fmtDur(gone.at.Sub(w0)))
	dropDelay := max(gone.at.Sub(w0End), 0)

	w2 := time.Now()
	if err := writeAttr(devPath(pf)+"/sriov_numvfs", "2"); err != nil {
		return err
	}
	w2End := time.Now()
	back, err := ep.waitDevices(w2, 5*time.Second, func(d []*pluginapi.Device) bool {
		return sameSet(addrsOf(healthyIDs(d)), vfs[:2]) && len(d) == 2
	})
	if err != nil {
		proc.dumpLog(40)
		return fmt.Errorf("after sriov_numvfs 0->2: %w", err)
	}
	addDelay := max(back.at.Sub(w2End), 0)
	if proc.exited() {
		proc.dumpLog(40)
		return fmt.Errorf("plugin exited: %v", proc.err)
	}
	t.Detail("kernel_numvfs_5to0=%s dropped_after_write=%s kernel_numvfs_0to2=%s added_after_write=%s",
		fmtDur(w0End.Sub(w0)), fmtDur(dropDelay), fmtDur(w2End.Sub(w2)), fmtDur(addDelay))
	if dropDelay > time.Second {
		proc.dumpLog(40)
		return fmt.Errorf("ListAndWatch dropped the removed VFs %s after the sriov_numvfs write returned, want <= 1s", fmtDur(dropDelay))
	}
	return nil
}
