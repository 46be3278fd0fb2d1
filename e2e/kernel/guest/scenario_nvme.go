package main

// Scenarios 6–8 on the e2e-nvme PF, whose VFs the host nvme driver owns
// (after nvme-vfs-online): a kernel-mode pool, the nvme -> vfio-pci -> nvme
// round trip, and a plugin killed with -9 in the middle of a binding.

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// faultEnv is how the fault scenario asks the product to stop in the middle
// of a binding: after the VF left its old driver, before vfio-pci has it.
// The product's hook (core/binding/fault.go) exits the process at once
// (status 3, no cleanup, as a crash would); a hook that blocks instead is
// killed with SIGKILL here.
const faultEnv = "SRIOV_CDI_FAULT=after-unbind"

func (h *harness) needNvmeVFs() error {
	if len(h.lab.nvmeOnline) == 0 {
		return skipf("needs nvme-owned VFs (nvme-vfs-online did not pass)")
	}
	return nil
}

// startNvmePool starts a plugin over the e2e-nvme PF's VFs and waits until
// ListAndWatch lists all of them healthy.
func (h *harness) startNvmePool(t *T, p pool, env ...string) (*pluginEnv, *pluginProc, *endpoint, []string, error) {
	vfs := h.lab.nvmeOnline
	e, err := h.newPluginEnv(t, false, p)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	proc, err := e.start(env...)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	ep, err := proc.waitRegistered(p.resource(), nil, 30*time.Second)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	u, err := ep.waitDevices(time.Time{}, 20*time.Second, func(d []*pluginapi.Device) bool {
		return sameSet(addrsOf(healthyIDs(d)), vfs) && len(d) == len(vfs)
	})
	if err != nil {
		proc.dumpLog(40)
		return nil, nil, nil, nil, fmt.Errorf("want exactly the VFs %v healthy: %w", vfs, err)
	}
	if p.mode == "vfio" {
		if err := h.needWiredPlugin(e, proc); err != nil {
			return nil, nil, nil, nil, err
		}
	}
	ids, err := idsFor(allIDs(u.devices), vfs)
	return e, proc, ep, ids, err
}

func ctrlsLive(vfs []string) []string {
	var bad []string
	for _, vf := range vfs {
		c := nvmeCtrlOf(vf)
		st, _ := readAttr(filepath.Join("/sys/class/nvme", c, "state"))
		if c == "" || st != "live" {
			bad = append(bad, fmt.Sprintf("%s: nvme controller %q state %q, want live", vf, c, st))
		}
	}
	return bad
}

func (h *harness) kernelPool(t *T) error {
	if err := h.needPlugin(); err != nil {
		return err
	}
	if err := h.needNvmeVFs(); err != nil {
		return err
	}
	l := h.lab
	before := snapshot(allPCI())
	t.Cleanup(func() { putBack(t, before) })
	p := pool{name: "nvme-kernel", mode: "kernel", rootDevices: []string{l.pfNvme}, drivers: []string{"nvme"}}
	_, proc, ep, ids, err := h.startNvmePool(t, p)
	if err != nil {
		return err
	}
	resp, d, err := ep.allocate(ids[:2], 60*time.Second)
	if err != nil {
		proc.dumpLog(40)
		return fmt.Errorf("allocate %v: %w", ids[:2], err)
	}
	t.Logf("allocate %v took %s: %s", ids[:2], fmtDur(d), fmtResponse(resp))
	var bad []string
	if len(resp.CdiDevices)+len(resp.Envs)+len(resp.Devices) == 0 {
		bad = append(bad, "empty Allocate response")
	}
	if diff := diffStates(before, snapshot(allPCI())); len(diff) > 0 {
		bad = append(bad, "Allocate of a kernel pool changed drivers: "+strings.Join(diff, "; "))
	}
	bad = append(bad, ctrlsLive(l.nvmeOnline)...)
	stopErr := proc.stop()
	if diff := diffStates(before, snapshot(allPCI())); len(diff) > 0 {
		bad = append(bad, "plugin stop changed drivers: "+strings.Join(diff, "; "))
	}
	if len(bad) > 0 {
		proc.dumpLog(40)
		return errorsJoin(bad)
	}
	t.Detail("allocated=%v drivers_unchanged=%d allocate=%s plugin_exit=%v", addrsOf(ids[:2]), len(before), fmtDur(d), stopErr)
	return nil
}

func (h *harness) nvmeVfioRoundtrip(t *T) error {
	if err := h.needVfioPlugin(); err != nil {
		return err
	}
	if err := h.needNvmeVFs(); err != nil {
		return err
	}
	l := h.lab
	before := snapshot(allPCI())
	t.Cleanup(func() { putBack(t, before) })
	vfs := l.nvmeOnline[:2]
	oldCtrls := []string{nvmeCtrlOf(vfs[0]), nvmeCtrlOf(vfs[1])}
	p := pool{name: "nvme-vfio", mode: "vfio", rootDevices: []string{l.pfNvme}, allowUnbindFrom: []string{"nvme"}}
	e, proc, ep, ids, err := h.startNvmePool(t, p)
	if err != nil {
		return err
	}
	resp, d, err := ep.allocate(ids[:2], 60*time.Second)
	if err != nil {
		proc.dumpLog(40)
		dmesgTail(t, 20)
		return fmt.Errorf("allocate %v: %w", ids[:2], err)
	}
	t.Logf("allocate %v took %s: %s", ids[:2], fmtDur(d), fmtResponse(resp))
	bad := checkVfioAlloc(e, resp, vfs)
	bad = append(bad, onlyChanged(before, snapshot(allPCI()), vfs)...)
	for i, vf := range vfs {
		if c := nvmeCtrlOf(vf); c != "" || exists("/sys/class/nvme/"+oldCtrls[i]) {
			bad = append(bad, fmt.Sprintf("%s still has nvme controller %s/%s", vf, c, oldCtrls[i]))
		}
	}
	if len(bad) > 0 {
		proc.dumpLog(40)
		dmesgTail(t, 20)
		return errorsJoin(bad)
	}
	forward := fmtDur(d)
	stopErr := proc.stop()
	t.Logf("plugin stop: %v; changed: %v", stopErr, diffStates(before, snapshot(allPCI())))
	if err := h.needFlags("restore", "--all"); err != nil {
		return skipf("nvme -> vfio-pci works (allocate %s); the way back %s", forward, err)
	}
	args := h.restoreArgs(e)
	r := h.cliRun(120*time.Second, args...)
	t.Logf("sriov-cdi %s: took %s\n%s%s", strings.Join(args, " "), fmtDur(r.dur), tail(r.stdout, 1500), tail(r.stderr, 1500))
	if r.err != nil {
		return fmt.Errorf("sriov-cdi %s: %v", strings.Join(args, " "), r.err)
	}
	// nvme's probe of a VF runs asynchronously after the bind returns.
	waitFor(10*time.Second, func() bool { return len(ctrlsLive(vfs)) == 0 })
	if diff := diffStates(before, snapshot(allPCI())); len(diff) > 0 {
		bad = append(bad, "not back after restore --all: "+strings.Join(diff, "; "))
	}
	bad = append(bad, ctrlsLive(vfs)...)
	if len(bad) > 0 {
		dmesgTail(t, 20)
		return errorsJoin(bad)
	}
	t.Detail("vfs=%v nvme->vfio-pci=%s vfio-pci->nvme(restore)=%s", vfs, forward, fmtDur(r.dur))
	return nil
}

// faultKillRestart: the plugin is killed with SIGKILL while a VF is between
// drivers (unbound from nvme, not yet on vfio-pci). A restarted plugin must
// reconcile from its state file: no VF of the pool left driverless, each
// either back on nvme or on vfio-pci and recorded so restore can undo it.
func (h *harness) faultKillRestart(t *T) error {
	if err := h.needVfioPlugin(); err != nil {
		return err
	}
	if !h.cliHasString("SRIOV_CDI_FAULT") {
		return skipf("the product has no SRIOV_CDI_FAULT fault hook yet (want %s to stop the plugin between unbind and bind)", faultEnv)
	}
	if err := h.needNvmeVFs(); err != nil {
		return err
	}
	l := h.lab
	vfs := l.nvmeOnline
	before := snapshot(allPCI())
	t.Cleanup(func() { putBack(t, before) })
	p := pool{name: "nvme-fault", mode: "vfio", rootDevices: []string{l.pfNvme}, allowUnbindFrom: []string{"nvme"}}
	e, proc, ep, ids, err := h.startNvmePool(t, p, faultEnv)
	if err != nil {
		return err
	}
	target := vfs[0]
	go func() { _, _, _ = ep.allocate(ids[:1], 60*time.Second) }()
	// Wait for the plugin to reach the fault point: the VF driverless, or
	// the plugin gone (a hook may kill itself).
	var mid devState
	reached := waitFor(30*time.Second, func() bool {
		mid = stateOf(target)
		return proc.exited() || mid.Driver == ""
	})
	if !reached {
		proc.dumpLog(40)
		return fmt.Errorf("%s never stopped at the fault point (state %s)", target, stateOf(target))
	}
	if !proc.exited() {
		// Let a hook that exits right after its write, or a binding that
		// is not really stuck, settle.
		time.Sleep(500 * time.Millisecond)
	}
	mid = stateOf(target)
	killedBy := "hook"
	if proc.exited() {
		t.Logf("the plugin stopped itself at the fault point: %v", proc.err)
	} else {
		killedBy = "sigkill"
		proc.kill9()
	}
	t.Logf("killed: %s is %s; state file %s", target, mid, e.stateFile)
	proc.dumpLog(15)

	restart := time.Now()
	proc2, err := e.start()
	if err != nil {
		return err
	}
	ep2, err := proc2.waitRegistered(p.resource(), ep, 60*time.Second)
	if err != nil {
		return err
	}
	var bad []string
	// Reconciliation happens before or soon after registration.
	waitFor(10*time.Second, func() bool { return driverOf(target) != "" })
	for _, vf := range vfs {
		if st := stateOf(vf); st.Driver == "" {
			bad = append(bad, fmt.Sprintf("%s driverless after restart (%s)", vf, st))
		}
	}
	switch d := driverOf(target); d {
	case "nvme":
		waitFor(10*time.Second, func() bool { return len(ctrlsLive(vfs[:1])) == 0 })
		bad = append(bad, ctrlsLive(vfs[:1])...)
	case "vfio-pci":
	default:
		bad = append(bad, fmt.Sprintf("%s on %q after restart, want nvme (rolled back) or vfio-pci (completed)", target, d))
	}
	_, lwErr := ep2.waitDevices(time.Time{}, 10*time.Second, func(d []*pluginapi.Device) bool { return len(d) == len(vfs) })
	if lwErr != nil {
		bad = append(bad, lwErr.Error())
	}
	if len(bad) > 0 {
		proc2.dumpLog(40)
		dmesgTail(t, 20)
		return errorsJoin(bad)
	}
	t.Detail("stopped_by=%s driver_at_stop=%q after_restart=%s reconciled_in=%s", killedBy, mid.Driver, driverOf(target), fmtDur(time.Since(restart)))
	_ = proc2.stop()
	if err := h.needFlags("restore", "--all"); err == nil {
		args := h.restoreArgs(e)
		if r := h.cliRun(120*time.Second, args...); r.err != nil {
			return fmt.Errorf("restore after the fault: %s", r)
		}
		waitFor(10*time.Second, func() bool { return len(ctrlsLive(vfs)) == 0 })
		if diff := diffStates(before, snapshot(allPCI())); len(diff) > 0 {
			return fmt.Errorf("restore --all after the fault left: %s", strings.Join(diff, "; "))
		}
		t.Detail("restore=ok")
	}
	return nil
}

// sigkillMidAllocate needs no hook: it sends SIGKILL the moment the first
// VF of a 4-VF Allocate leaves nvme, wherever the binder is then. Any such
// point must be recoverable: after a restart nothing is driverless, and
// `restore --all` brings every VF back to nvme.
func (h *harness) sigkillMidAllocate(t *T) error {
	if err := h.needVfioPlugin(); err != nil {
		return err
	}
	if err := h.needNvmeVFs(); err != nil {
		return err
	}
	l := h.lab
	vfs := l.nvmeOnline
	before := snapshot(allPCI())
	t.Cleanup(func() { putBack(t, before) })
	p := pool{name: "nvme-kill", mode: "vfio", rootDevices: []string{l.pfNvme}, allowUnbindFrom: []string{"nvme"}}
	e, proc, ep, ids, err := h.startNvmePool(t, p)
	if err != nil {
		return err
	}
	go func() { _, _, _ = ep.allocate(ids, 60*time.Second) }()
	var atKill map[string]devState
	if !waitFor(30*time.Second, func() bool {
		for _, vf := range vfs {
			if driverOf(vf) != "nvme" {
				return true
			}
		}
		return proc.exited()
	}) {
		proc.dumpLog(40)
		return fmt.Errorf("no VF left nvme within 30s of Allocate %v", ids)
	}
	proc.kill9()
	atKill = snapshot(vfs)
	t.Logf("SIGKILL sent; states then: %v", atKill)

	proc2, err := e.start()
	if err != nil {
		return err
	}
	if _, err := proc2.waitRegistered(p.resource(), ep, 30*time.Second); err != nil {
		return err
	}
	var bad []string
	waitFor(10*time.Second, func() bool {
		for _, vf := range vfs {
			if driverOf(vf) == "" {
				return false
			}
		}
		return true
	})
	for _, vf := range vfs {
		if st := stateOf(vf); st.Driver == "" {
			bad = append(bad, fmt.Sprintf("%s driverless after restart (%s)", vf, st))
		}
	}
	after := snapshot(vfs)
	_ = proc2.stop()
	if err := h.needFlags("restore", "--all"); err == nil {
		args := h.restoreArgs(e)
		if r := h.cliRun(120*time.Second, args...); r.err != nil {
			bad = append(bad, fmt.Sprintf("restore --all: %s", r))
		}
		waitFor(10*time.Second, func() bool { return len(ctrlsLive(vfs)) == 0 })
		if diff := diffStates(before, snapshot(allPCI())); len(diff) > 0 {
			bad = append(bad, "restore --all after SIGKILL left: "+strings.Join(diff, "; "))
		}
		bad = append(bad, ctrlsLive(vfs)...)
	}
	if len(bad) > 0 {
		proc2.dumpLog(40)
		dmesgTail(t, 20)
		return errorsJoin(bad)
	}
	var killed, restarted []string
	for _, vf := range vfs {
		killed = append(killed, fmt.Sprintf("%s=%q", vf[len(vf)-1:], atKill[vf].Driver))
		restarted = append(restarted, fmt.Sprintf("%s=%s", vf[len(vf)-1:], after[vf].Driver))
	}
	t.Detail("at_kill=[%s] after_restart=[%s]", strings.Join(killed, " "), strings.Join(restarted, " "))
	return nil
}
