package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// scenarios lists every scenario in run order; later ones use state the
// earlier ones leave (see lab).
func scenarios(h *harness) []scenario {
	return []scenario{
		{name: "nvme-vfs-online", timeout: 120 * time.Second, run: h.nvmeVFsOnline},
		{name: "kernel-binding-facts", run: h.kernelBindingFacts},
		{name: "discover", run: h.discover},
		{name: "vfio-allocate", run: h.vfioAllocate},
		{name: "vfio-allocate-multi", run: h.vfioAllocateMulti},
		{name: "restore-all", run: h.restoreAll},
		{name: "numvfs-shrink", run: h.numVFsShrink},
		{name: "kernel-pool", run: h.kernelPool},
		{name: "nvme-vfio-roundtrip", run: h.nvmeVfioRoundtrip},
		{name: "fault-kill-restart", timeout: 180 * time.Second, run: h.faultKillRestart},
		{name: "sigkill-mid-allocate", timeout: 180 * time.Second, run: h.sigkillMidAllocate},
		{name: "refuse-shared-group", run: h.refuseSharedGroup},
		{name: "refuse-reason-logged", run: h.refuseReasonLogged},
		{name: "kernel-log-clean", run: h.kernelLogClean},
	}
}

// nvmeVFsOnline proves the kernel side of scenario 8 without the product:
// NVMe virtualization management brings the e2e-nvme PF's VFs online and
// the host nvme driver binds each of them.
func (h *harness) nvmeVFsOnline(t *T) error {
	l := h.lab
	start := time.Now()
	vfs, err := bringVFsOnline(t, l.pfNvme, l.ctrlNvme, nvmeVFs)
	if err != nil {
		dmesgTail(t, 40)
		return err
	}
	var ctrls []string
	for _, vf := range vfs {
		c := nvmeCtrlOf(vf)
		st, _ := readAttr(filepath.Join("/sys/class/nvme", c, "state"))
		t.Logf("VF %s vf%d group %s driver %s controller %s state %s", vf, vfIndex(vf), groupOf(vf), driverOf(vf), c, st)
		ctrls = append(ctrls, vf+"="+c)
	}
	l.nvmeOnline = vfs
	// Later scenarios compare against this state.
	for a, s := range snapshot(vfs) {
		l.boot[a] = s
	}
	l.boot[l.pfNvme] = stateOf(l.pfNvme)
	t.Detail("pf=%s vfs=%d %s online+probe=%s", l.pfNvme, len(vfs), strings.Join(ctrls, ","), time.Since(start).Round(time.Millisecond))
	return nil
}

// needPlugin is the common prerequisite of the plugin scenarios.
func (h *harness) needPlugin() error {
	return h.needFlags("plugin", "--config", "--device-plugin-dir", "--cdi-dir", "--state-file", "--sysfs-root")
}

// needVfioPlugin: the plugin plus the vfio binder and the CDI spec writer.
func (h *harness) needVfioPlugin() error {
	if err := h.needPlugin(); err != nil {
		return err
	}
	return h.needLinked("vfio binding and CDI specs in the plugin", symBinder, symCDIWriter)
}

// needWiredPlugin is the runtime half of needVfioPlugin: the packages can be
// linked (for other commands) before `sriov-cdi plugin` uses them. The
// plugin writes its CDI specs before it advertises devices, so a running,
// registered plugin with an empty CDI dir has no spec writer (and, wired
// in the same place, no binder) yet.
func (h *harness) needWiredPlugin(e *pluginEnv, proc *pluginProc) error {
	if waitFor(3*time.Second, func() bool { _, files := e.cdiSpecs(); return len(files) > 0 }) {
		return nil
	}
	proc.dumpLog(10)
	return skipf("`sriov-cdi plugin` registered but wrote no CDI spec into --cdi-dir: its CDI writer and vfio binder are not wired in yet")
}

// restoreArgs returns `restore --all` plus whichever of our root/state
// flags the command accepts.
func (h *harness) restoreArgs(e *pluginEnv) []string {
	r := h.cliRun(30*time.Second, "restore", "--help")
	help := r.stdout + r.stderr
	args := []string{"restore", "--all"}
	for _, f := range [][2]string{{"--state-file", e.stateFile}, {"--sysfs-root", "/sys"}, {"--dev-root", "/dev"}, {"--config", e.config}, {"--cdi-dir", e.cdiDir}} {
		if strings.Contains(help, f[0]) {
			args = append(args, f[0], f[1])
		}
	}
	return args
}

func fmtDur(d time.Duration) string { return d.Round(time.Millisecond).String() }

func errorsJoin(errs []string) error {
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%s", strings.Join(errs, "; "))
}
