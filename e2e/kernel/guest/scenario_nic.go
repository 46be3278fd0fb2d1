package main

// Scenarios of the NIC machine (issue 13): discover against real igb/igbvf
// netdevs, a kernel pool by pfNames with device-info files, a vfio pool by
// drivers: [igbvf], the host-use interlock, link health, a non-viable
// group, sriov_numvfs changes, release through PodResources.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

func (h *harness) nicDiscover(t *T) error {
	if err := h.needFlags("discover", "--sysfs-root", "--dev-root"); err != nil {
		return err
	}
	l := h.nic
	out, raw, dur, err := h.runDiscover()
	if err != nil {
		return err
	}
	byAddr := map[string]map[string]any{}
	for _, d := range out.Devices {
		byAddr[str(d["address"])] = d
	}
	var bad []string
	check := func(addr, field, want string, got any) {
		if g := str(got); g != want {
			bad = append(bad, fmt.Sprintf("%s %s: discover %q, kernel %q", addr, field, g, want))
		}
	}
	checked, netdevs := 0, 0
	groups := map[string]string{}
	for _, pf := range []string{l.pfA, l.pfB, l.pfC} {
		for _, a := range append([]string{pf}, vfsOf(pf)...) {
			d, ok := byAddr[a]
			if !ok {
				bad = append(bad, a+" missing from devices")
				continue
			}
			checked++
			check(a, "vendor", hexID(attr(a, "vendor")), hexID(str(d["vendor"])))
			check(a, "device", hexID(attr(a, "device")), hexID(str(d["device"])))
			check(a, "driver", driverOf(a), d["driver"])
			check(a, "iommuGroup", groupOf(a), d["iommuGroup"])
			// Netdevs: names, operstate, carrier as the kernel shows them.
			var got []string
			nds, _ := d["netdevs"].([]any)
			for _, x := range nds {
				m, _ := x.(map[string]any)
				got = append(got, fmt.Sprintf("%s:%s:%s", str(m["name"]), str(m["operState"]), str(m["carrier"])))
			}
			var want []string
			for _, nd := range netdevsOf(a) {
				want = append(want, fmt.Sprintf("%s:%s:%v", nd, operState(nd), carrierOf(nd) == "1"))
				netdevs++
			}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				bad = append(bad, fmt.Sprintf("%s netdevs: discover %v, kernel %v", a, got, want))
			}
			if a == pf {
				s, _ := d["sriov"].(map[string]any)
				if s == nil {
					bad = append(bad, a+" has no sriov object")
					continue
				}
				check(a, "sriov.totalVFs", attr(a, "sriov_totalvfs"), s["totalVFs"])
				check(a, "sriov.numVFs", attr(a, "sriov_numvfs"), s["numVFs"])
				vfs, ok := strList(s["vfs"])
				if w := vfsOf(pf); !ok || strings.Join(vfs, ",") != strings.Join(w, ",") {
					bad = append(bad, fmt.Sprintf("%s sriov.vfs: discover %v, kernel %v", a, s["vfs"], w))
				}
				continue
			}
			check(a, "physfn", physfnOf(a), d["physfn"])
			check(a, "vfIndex", strconv.Itoa(vfIndex(a)), d["vfIndex"])
			if pf != l.pfC {
				if o, dup := groups[groupOf(a)]; dup {
					bad = append(bad, fmt.Sprintf("lab: %s and %s share group %s behind an ACS port", o, a, groupOf(a)))
				}
				groups[groupOf(a)] = a
			}
		}
	}
	if len(bad) > 0 {
		t.Logf("discover output:\n%s", tail(raw, 3000))
		return errorsJoin(bad)
	}
	t.Detail("functions=%d netdevs=%d(name,operstate,carrier) discover=%s", checked, netdevs, fmtDur(dur))
	return nil
}

// devInfoFile is the Multus device-info file the plugin writes for a device
// of a resource (core/deviceinfo: "<resource, / as ->-<id>-device.json").
func devInfoFile(e *pluginEnv, resource, id string) string {
	return filepath.Join(e.deviceInfoDir, strings.ReplaceAll(resource, "/", "-")+"-"+id+"-device.json")
}

func (h *harness) nicKernelPool(t *T) error {
	if err := h.needVfioPlugin(); err != nil {
		return err
	}
	if err := h.needFlags("plugin", "--device-info-dir", "--pod-resources-socket"); err != nil {
		return err
	}
	l := h.nic
	vfs := vfsOf(l.pfA)
	kp := pool{name: "nic-kernel", mode: "kernel", pfNames: []string{l.netA + "#0-2"}}
	vp := pool{name: "nic-vfio", mode: "vfio", drivers: []string{"igbvf"}, pfNames: []string{l.netA + "#3-6"}, restoreOnRelease: true}
	e, err := h.newPluginEnv(t, true, kp, vp)
	if err != nil {
		return err
	}
	if err := e.withPodResources(); err != nil {
		return err
	}
	l.relEnv = e
	before := snapshot(allPCI())
	beforeNet := map[string][]string{}
	for _, a := range allPCI() {
		beforeNet[a] = netdevsOf(a)
	}
	proc, err := e.start()
	if err != nil {
		return err
	}
	l.relProc = proc
	ok := false
	defer func() {
		if !ok && l.relKernelEP == nil {
			_ = proc.stop()
			e.kubelet.stop()
			putBack(t, before)
		}
	}()
	kep, err := proc.waitRegistered(kp.resource(), nil, 60*time.Second)
	if err != nil {
		return err
	}
	vep, err := proc.waitRegistered(vp.resource(), nil, 60*time.Second)
	if err != nil {
		return err
	}
	l.relRegistered = time.Now()
	l.relKernelEP, l.relVfioEP = kep, vep
	want := vfs[:3]
	u, err := kep.waitDevices(time.Time{}, 30*time.Second, func(d []*pluginapi.Device) bool {
		return sameSet(addrsOf(healthyIDs(d)), want) && len(d) == len(want)
	})
	if err != nil {
		proc.dumpLog(40)
		return fmt.Errorf("pfNames %s#0-2: want exactly %v healthy: %w", l.netA, want, err)
	}
	ids, err := idsFor(allIDs(u.devices), want[:2])
	if err != nil {
		return err
	}
	resp, d, err := kep.allocate(ids, 60*time.Second)
	if err != nil {
		proc.dumpLog(40)
		return fmt.Errorf("allocate %v: %w", ids, err)
	}
	t.Logf("allocate %v took %s: %s", ids, fmtDur(d), fmtResponse(resp))
	var bad []string
	if diff := diffStates(before, snapshot(allPCI())); len(diff) > 0 {
		bad = append(bad, "a kernel-pool Allocate changed drivers: "+strings.Join(diff, "; "))
	}
	for _, a := range allPCI() {
		if n := netdevsOf(a); strings.Join(n, ",") != strings.Join(beforeNet[a], ",") {
			bad = append(bad, fmt.Sprintf("%s netdevs %v -> %v", a, beforeNet[a], n))
		}
	}
	for i, id := range ids {
		f := devInfoFile(e, kp.resource(), id)
		b, err := os.ReadFile(f)
		if err != nil {
			ents, _ := os.ReadDir(e.deviceInfoDir)
			var names []string
			for _, x := range ents {
				names = append(names, x.Name())
			}
			bad = append(bad, fmt.Sprintf("no device-info file for %s: %v (dir has %v)", id, err, names))
			continue
		}
		t.Logf("device-info %s: %s", filepath.Base(f), strings.TrimSpace(string(b)))
		if !strings.Contains(string(b), want[i]) {
			bad = append(bad, fmt.Sprintf("device-info file %s does not name %s", f, want[i]))
		}
	}
	if exists(devInfoFile(e, kp.resource(), vfs[2])) {
		bad = append(bad, "a device-info file exists for "+vfs[2]+", which was not allocated")
	}
	if len(bad) > 0 {
		proc.dumpLog(30)
		return errorsJoin(bad)
	}
	// The pod ends: kubelet stops listing the devices. nic-release checks
	// that their files go.
	e.kubelet.podRes.release(kp.resource(), ids...)
	l.relKernelVFs = want[:2]
	l.relKernelAt = time.Now()
	ok = true
	t.Detail("pool=%s#0-2 offered=%v allocated=%d allocate=%s drivers_changed=0 device_info_files=%d", l.netA, want, len(ids), fmtDur(d), len(ids))
	return nil
}

// nicVfioDrivers: a vfio pool that selects VFs by drivers: [igbvf]. After
// the bind the VF is on vfio-pci, no longer on igbvf: the unit must stay in
// the pool and in its CDI spec (commit b47a186 fixed a pool that lost it).
func (h *harness) nicVfioDrivers(t *T) error {
	l := h.nic
	if l.relVfioEP == nil || l.relProc == nil || l.relProc.exited() {
		if err := h.needVfioPlugin(); err != nil {
			return err
		}
		return skipf("needs the plugin that nic-kernel-pool starts (nic-kernel-pool did not pass)")
	}
	e, proc, ep := l.relEnv, l.relProc, l.relVfioEP
	e.use(t)
	vfs := vfsOf(l.pfA)
	want := vfs[3:]
	u, err := ep.waitDevices(time.Time{}, 30*time.Second, func(d []*pluginapi.Device) bool {
		return sameSet(addrsOf(healthyIDs(d)), want) && len(d) == len(want)
	})
	if err != nil {
		proc.dumpLog(40)
		return fmt.Errorf("drivers [igbvf] + pfNames %s#3-6: want exactly %v healthy: %w", l.netA, want, err)
	}
	vf := want[0]
	g := groupOf(vf)
	l.relVfioNetdev = netdevOf(vf)
	ids, err := idsFor(allIDs(u.devices), []string{vf})
	if err != nil {
		return err
	}
	before := snapshot(allPCI())
	resp, d, err := ep.allocate(ids, 60*time.Second)
	if err != nil {
		proc.dumpLog(40)
		dmesgTail(t, 20)
		return fmt.Errorf("allocate %s: %w", ids[0], err)
	}
	t.Logf("allocate %s took %s: %s", ids[0], fmtDur(d), fmtResponse(resp))
	bad := checkVfioAlloc(e, resp, []string{vf})
	bad = append(bad, onlyChanged(before, snapshot(allPCI()), []string{vf})...)
	if n := netdevOf(vf); n != "" {
		bad = append(bad, fmt.Sprintf("%s still has netdev %s on vfio-pci", vf, n))
	}
	if len(bad) > 0 {
		proc.dumpLog(40)
		return errorsJoin(bad)
	}
	// Later rescans read driver vfio-pci, which drivers: [igbvf] does not
	// match: the bound unit must still be advertised and its spec kept.
	time.Sleep(7 * time.Second) // > the 5 s rescan period
	var cdiName string
	for _, c := range resp.CdiDevices {
		cdiName = c.Name
	}
	_, dev, _ := strings.Cut(cdiName, "=")
	specs, files := e.cdiSpecs()
	if !strings.Contains(specs, "/dev/vfio/"+g) || dev == "" || !strings.Contains(specs, dev) {
		bad = append(bad, fmt.Sprintf("after rescans the CDI specs (%v) no longer define %s (/dev/vfio/%s)", files, cdiName, g))
	}
	if !isCharDev("/dev/vfio/" + g) {
		bad = append(bad, "/dev/vfio/"+g+" vanished")
	}
	if cur := addrsOf(allIDs(ep.latest())); !sameSet(cur, want) {
		bad = append(bad, fmt.Sprintf("after rescans ListAndWatch lists %v, want %v (the bound unit left the pool)", cur, want))
	}
	if len(bad) > 0 {
		t.Logf("CDI specs:\n%s", tail(specs, 2000))
		proc.dumpLog(40)
		return errorsJoin(bad)
	}
	e.kubelet.podRes.release(ep.resource, ids...)
	l.relVfioVF = vf
	l.relVfioAt = time.Now()
	t.Detail("vf=%s group=%s allocate=%s cdi=%s spec_kept_after_rescan=yes", vf, g, fmtDur(d), cdiName)
	return nil
}

// nicB returns the plugin serving nicB (started on first use): pool nic-b
// (its VFs, kernel) and nic-b-pf (the PF itself, kernel).
func (h *harness) nicB(t *T) (*pluginEnv, *pluginProc, error) {
	l := h.nic
	if l.bProc != nil && !l.bProc.exited() {
		l.bEnv.use(t)
		return l.bEnv, l.bProc, nil
	}
	if err := h.needPlugin(); err != nil {
		return nil, nil, err
	}
	// nic-b-pf comes first: the PF also matches nic-b's rootDevices, and
	// the first pool wins. It is offered only while it has no VFs (a PF
	// with VFs is refused: "its VFs are the candidates").
	vp := pool{name: "nic-b", mode: "kernel", rootDevices: []string{l.pfB}}
	pp := pool{name: "nic-b-pf", mode: "kernel", pciAddresses: []string{l.pfB}}
	e, err := h.newPluginEnv(t, true, pp, vp)
	if err != nil {
		return nil, nil, err
	}
	proc, err := e.start()
	if err != nil {
		return nil, nil, err
	}
	if l.bVFEP, err = proc.waitRegistered(vp.resource(), nil, 60*time.Second); err != nil {
		_ = proc.stop()
		return nil, nil, err
	}
	if l.bPFEP, err = proc.waitRegistered(pp.resource(), nil, 60*time.Second); err != nil {
		_ = proc.stop()
		return nil, nil, err
	}
	l.bEnv, l.bProc = e, proc
	return e, proc, nil
}

func (h *harness) stopNicB() {
	l := h.nic
	if l.bProc != nil {
		_ = l.bProc.stop()
		l.bEnv.kubelet.stop()
		l.bProc = nil
	}
}

func listed(ep *endpoint, addr string) (present, healthy bool) {
	for _, d := range ep.latest() {
		if idAddr(d.ID) == addr {
			return true, d.Health == pluginapi.Healthy
		}
	}
	return false, false
}

// refusalOf runs discover with the env's config and returns the reason
// given for addr ("" when it is not refused).
func (h *harness) refusalOf(e *pluginEnv, addr string) (string, error) {
	out, _, _, err := h.runDiscover("--config", e.config)
	if err != nil {
		return "", err
	}
	for _, u := range out.Unselected {
		if str(u["address"]) == addr {
			return str(u["reason"]), nil
		}
	}
	return "", nil
}

// nicHostUse: a VF, then the PF, holding a routable address or the default
// route is refused with the reason; without it, it is allocatable again.
func (h *harness) nicHostUse(t *T) error {
	l := h.nic
	e, proc, err := h.nicB(t)
	if err != nil {
		return err
	}
	vf := vfsOf(l.pfB)[0]
	if _, err := l.bVFEP.waitDevices(time.Time{}, 30*time.Second, func(d []*pluginapi.Device) bool {
		return sameSet(addrsOf(healthyIDs(d)), vfsOf(l.pfB))
	}); err != nil {
		proc.dumpLog(40)
		return fmt.Errorf("nic-b: want every VF of %s healthy first: %w", l.pfB, err)
	}
	var bad, figs []string
	type target struct {
		name, addr string
		ep         *endpoint
	}
	t.Cleanup(func() {
		if numVFs(l.pfB) != nicVFsB {
			if _, err := setNumVFs(l.pfB, nicVFsB); err != nil {
				t.Logf("cleanup: sriov_numvfs=%d on %s: %v", nicVFsB, l.pfB, err)
			}
		}
	})
	for _, tg := range []target{{"vf", vf, l.bVFEP}, {"pf", l.pfB, l.bPFEP}} {
		if tg.name == "pf" {
			// A PF with VFs is never offered; without VFs it is a plain
			// NIC function that pool nic-b-pf offers.
			w := time.Now()
			if _, err := setNumVFs(l.pfB, 0); err != nil {
				return err
			}
			if _, err := waitHealth(l.bPFEP, w, 15*time.Second, []string{l.pfB}, true); err != nil {
				proc.dumpLog(40)
				return fmt.Errorf("nic-b-pf: want the PF %s (no VFs) offered healthy: %w", l.pfB, err)
			}
		}
		nd := netdevOf(tg.addr)
		wasUp := operState(nd) == "up" || strings.Contains(run(5*time.Second, nil, "ip", "link", "show", nd).stdout, ",UP")
		for _, use := range []struct {
			name      string
			add, del  [][]string
			reasonHas string
		}{
			{"address", [][]string{{"addr", "add", "10.99.0.1/24", "dev", nd}}, [][]string{{"addr", "del", "10.99.0.1/24", "dev", nd}}, "10.99.0.1"},
			{"default-route", [][]string{{"link", "set", nd, "up"}, {"route", "add", "default", "dev", nd}}, [][]string{{"route", "del", "default", "dev", nd}}, "default route"},
		} {
			what := tg.name + "-" + use.name
			t0 := time.Now()
			for _, a := range use.add {
				if err := ipCmd(t, a...); err != nil {
					return err
				}
			}
			if _, err := tg.ep.waitDevices(t0, 15*time.Second, func(d []*pluginapi.Device) bool {
				for _, x := range d {
					if idAddr(x.ID) == tg.addr {
						return false
					}
				}
				return true
			}); err != nil {
				bad = append(bad, fmt.Sprintf("%s: %s still offered after %s: %v", what, tg.addr, use.name, err))
			} else {
				figs = append(figs, fmt.Sprintf("%s_refused_after=%s", what, fmtDur(time.Since(t0))))
			}
			// Kubelet would not ask for it; an Allocate that names it anyway must fail.
			if _, _, err := tg.ep.allocate([]string{tg.addr}, 30*time.Second); err == nil {
				bad = append(bad, fmt.Sprintf("%s: Allocate of %s succeeded while the host uses it", what, tg.addr))
			} else {
				t.Logf("%s: Allocate %s refused: %v", what, tg.addr, err)
			}
			reason, err := h.refusalOf(e, tg.addr)
			if err != nil {
				return err
			}
			t.Logf("%s: discover reason for %s: %q", what, tg.addr, reason)
			// What an operator sees: the plugin logs the refusal too.
			if lg := proc.logText(); !strings.Contains(lg, tg.addr) || !strings.Contains(lg, use.reasonHas) {
				bad = append(bad, fmt.Sprintf("%s: the plugin log does not give the reason (%q) for %s", what, use.reasonHas, tg.addr))
			}
			if !strings.Contains(reason, use.reasonHas) || !strings.Contains(reason, nd) {
				bad = append(bad, fmt.Sprintf("%s: discover gives %s the reason %q, want one naming %s and %q", what, tg.addr, reason, nd, use.reasonHas))
			}
			t1 := time.Now()
			for _, a := range use.del {
				if err := ipCmd(t, a...); err != nil {
					return err
				}
			}
			if _, err := tg.ep.waitDevices(t1, 15*time.Second, func(d []*pluginapi.Device) bool {
				for _, x := range d {
					if idAddr(x.ID) == tg.addr {
						return x.Health == pluginapi.Healthy
					}
				}
				return false
			}); err != nil {
				bad = append(bad, fmt.Sprintf("%s: %s not offered healthy again after the %s went: %v", what, tg.addr, use.name, err))
				if r, _ := h.refusalOf(e, tg.addr); r != "" {
					bad = append(bad, fmt.Sprintf("%s: discover still refuses %s: %q", what, tg.addr, r))
				}
			} else {
				figs = append(figs, fmt.Sprintf("%s_back_after=%s", what, fmtDur(time.Since(t1))))
			}
		}
		if !wasUp && tg.name == "vf" {
			_ = ipCmd(t, "link", "set", nd, "down")
		}
		// Allocatable again: kubelet can have it.
		if _, _, err := tg.ep.allocate([]string{tg.addr}, 30*time.Second); err != nil {
			bad = append(bad, fmt.Sprintf("%s: Allocate of %s after the host let go: %v", tg.name, tg.addr, err))
		}
	}
	w := time.Now()
	if _, err := setNumVFs(l.pfB, nicVFsB); err != nil {
		return err
	}
	if _, err := waitHealth(l.bVFEP, w, 30*time.Second, vfsOf(l.pfB), true); err != nil {
		bad = append(bad, fmt.Sprintf("VFs of %s not offered again after sriov_numvfs=%d: %v", l.pfB, nicVFsB, err))
	}
	if len(bad) > 0 {
		proc.dumpLog(40)
		return errorsJoin(bad)
	}
	t.Detail("vf=%s pf=%s %s", vf, l.pfB, strings.Join(figs, " "))
	return nil
}

// waitHealth waits for a ListAndWatch update at or after since in which
// every addr is listed with the given health.
func waitHealth(ep *endpoint, since time.Time, timeout time.Duration, addrs []string, healthy bool) (lwUpdate, error) {
	return ep.waitDevices(since, timeout, func(d []*pluginapi.Device) bool {
		for _, a := range addrs {
			found := false
			for _, x := range d {
				if idAddr(x.ID) == a {
					found = true
					if (x.Health == pluginapi.Healthy) != healthy {
						return false
					}
				}
			}
			if !found {
				return false
			}
		}
		return true
	})
}

const healthBudget = time.Second

// nicHealthVFLink: `ip link set <vf> down` -> that VF Unhealthy within 1 s;
// up again -> Healthy.
func (h *harness) nicHealthVFLink(t *T) error {
	l := h.nic
	_, proc, err := h.nicB(t)
	if err != nil {
		return err
	}
	vf := vfsOf(l.pfB)[1]
	nd := netdevOf(vf)
	// The plugin counts a VF's link going down as a fault only after it saw
	// the link up (idle VFs sit down): bring it up and give the plugin
	// time to see that (the rtnetlink event and a refresh) before the down.
	// The scenario ends with the link up, so the VF stays Healthy for the
	// scenarios after it.
	if err := ipCmd(t, "link", "set", nd, "up"); err != nil {
		return err
	}
	if !waitFor(10*time.Second, func() bool { return operState(nd) == "up" }) {
		t.Logf("%s operstate %s carrier %s after link up (igbvf)", nd, operState(nd), carrierOf(nd))
	}
	if _, err := waitHealth(l.bVFEP, time.Time{}, 15*time.Second, []string{vf}, true); err != nil {
		return fmt.Errorf("%s not healthy with %s up: %w", vf, nd, err)
	}
	time.Sleep(2 * time.Second)
	t0 := time.Now()
	if err := ipCmd(nil, "link", "set", nd, "down"); err != nil {
		return err
	}
	down := time.Now()
	var bad []string
	u, err := waitHealth(l.bVFEP, t0, 5*time.Second, []string{vf}, false)
	downLat := "none"
	if err != nil {
		bad = append(bad, fmt.Sprintf("%s (%s operstate %s) not marked Unhealthy within 5s of `ip link set %s down`: %v", vf, nd, operState(nd), nd, err))
	} else {
		downLat = fmtDur(u.at.Sub(down))
		if u.at.Sub(down) > healthBudget {
			bad = append(bad, fmt.Sprintf("%s marked Unhealthy %s after its link went down, budget %s", vf, downLat, healthBudget))
		}
	}
	t1 := time.Now()
	if err := ipCmd(nil, "link", "set", nd, "up"); err != nil {
		return err
	}
	upAt := time.Now()
	upLat := "none"
	if u, err := waitHealth(l.bVFEP, t1, 10*time.Second, []string{vf}, true); err != nil {
		bad = append(bad, fmt.Sprintf("%s not Healthy again within 10s of link up: %v", vf, err))
	} else {
		upLat = fmtDur(max(u.at.Sub(upAt), 0))
	}
	t.Logf("vf %s (%s): down -> Unhealthy %s, up -> Healthy %s", vf, nd, downLat, upLat)
	if len(bad) > 0 {
		proc.dumpLog(30)
		return errorsJoin(bad)
	}
	t.Detail("vf=%s netdev=%s down_to_unhealthy=%s up_to_healthy=%s", vf, nd, downLat, upLat)
	return nil
}

// nicHealthPFLink: the PF's link down through the QEMU monitor (set_link)
// -> every VF of the PF Unhealthy within 1 s of the kernel showing it;
// link on -> Healthy.
func (h *harness) nicHealthPFLink(t *T) error {
	l := h.nic
	_, proc, err := h.nicB(t)
	if err != nil {
		return err
	}
	vfs := vfsOf(l.pfB)
	if _, err := waitHealth(l.bVFEP, time.Time{}, 15*time.Second, vfs, true); err != nil {
		return fmt.Errorf("VFs %v not healthy with %s up: %w", vfs, l.netB, err)
	}
	t.Cleanup(func() {
		if operState(l.netB) != "up" {
			_, _ = hostSetLink(t, hostNetdevB, l.netB, true, 30*time.Second)
		}
	})
	t0 := time.Now()
	down, err := hostSetLink(t, hostNetdevB, l.netB, false, 30*time.Second)
	if err != nil {
		return err
	}
	var bad []string
	downLat, upLat := "none", "none"
	if u, err := waitHealth(l.bVFEP, t0, 5*time.Second, vfs, false); err != nil {
		bad = append(bad, fmt.Sprintf("VFs %v not marked Unhealthy within 5s of %s going %s: %v", vfs, l.netB, operState(l.netB), err))
	} else {
		d := max(u.at.Sub(down), 0)
		downLat = fmtDur(d)
		if d > healthBudget {
			bad = append(bad, fmt.Sprintf("VFs marked Unhealthy %s after the PF link went down, budget %s", downLat, healthBudget))
		}
	}
	t1 := time.Now()
	up, err := hostSetLink(t, hostNetdevB, l.netB, true, 30*time.Second)
	if err != nil {
		return err
	}
	if u, err := waitHealth(l.bVFEP, t1, 10*time.Second, vfs, true); err != nil {
		bad = append(bad, fmt.Sprintf("VFs %v not Healthy within 10s of %s up: %v", vfs, l.netB, err))
	} else {
		d := max(u.at.Sub(up), 0)
		upLat = fmtDur(d)
		if d > healthBudget {
			bad = append(bad, fmt.Sprintf("VFs marked Healthy %s after the PF link came up, budget %s", upLat, healthBudget))
		}
	}
	t.Logf("pf %s (%s): link off -> VFs Unhealthy %s, link on -> Healthy %s", l.pfB, l.netB, downLat, upLat)
	if len(bad) > 0 {
		proc.dumpLog(30)
		return errorsJoin(bad)
	}
	t.Detail("pf=%s vfs=%d down_to_unhealthy=%s up_to_healthy=%s", l.netB, len(vfs), downLat, upLat)
	return nil
}

// nicRefuseShared: nicC behind a root port with disable-acs=on: port, PF and
// VFs share one IOMMU group; a vfio pool over its VFs is refused.
func (h *harness) nicRefuseShared(t *T) error {
	if err := h.needFlags("discover", "--config"); err != nil {
		return err
	}
	l := h.nic
	vfs := vfsOf(l.pfC)
	g := groupOf(vfs[0])
	members := groupMembers(g)
	t.Logf("group %s: %v", g, members)
	if len(members) < 2+len(vfs) {
		return fmt.Errorf("lab error: group %s has %v, want the root port, the PF and the VFs (disable-acs=on?)", g, members)
	}
	before := snapshot(allPCI())
	t.Cleanup(func() { putBack(t, before) })
	p := pool{name: "nic-shared", mode: "vfio", rootDevices: []string{l.pfC}}
	cfg := filepath.Join(h.work, "nic-refuse.yaml")
	if err := os.WriteFile(cfg, []byte(configYAML(p)), 0o644); err != nil {
		return err
	}
	out, raw, _, err := h.runDiscover("--config", cfg)
	if err != nil {
		return err
	}
	var bad []string
	for _, pl := range out.Pools {
		if str(pl["name"]) == p.name {
			b, _ := json.Marshal(pl["devices"])
			for _, vf := range vfs {
				if strings.Contains(string(b), vf) {
					bad = append(bad, fmt.Sprintf("pool offers %s from non-viable group %s", vf, g))
				}
			}
		}
	}
	reason := ""
	for _, vf := range vfs {
		why := ""
		for _, u := range out.Unselected {
			if str(u["address"]) == vf {
				why = str(u["reason"])
			}
		}
		if why == "" || !(strings.Contains(why, l.pfC) || strings.Contains(why, members[0])) {
			bad = append(bad, fmt.Sprintf("%s: refusal %q does not name the PF %s or another member in the way", vf, why, l.pfC))
		}
		reason = why
	}
	if len(bad) > 0 {
		t.Logf("discover output:\n%s", tail(raw, 3000))
	}
	// The plugin offers none of them either.
	if err := h.needPlugin(); err == nil {
		e, err := h.newPluginEnv(t, false, p)
		if err != nil {
			return err
		}
		proc, err := e.start()
		if err != nil {
			return err
		}
		if ep, err := proc.waitRegistered(p.resource(), nil, 30*time.Second); err == nil {
			time.Sleep(2 * time.Second)
			for _, a := range addrsOf(allIDs(ep.latest())) {
				for _, vf := range vfs {
					if a == vf {
						bad = append(bad, "the plugin offers "+vf)
					}
				}
			}
		} else {
			t.Logf("pool with no viable unit did not register: %v", err)
		}
		_ = proc.stop()
	}
	if d := diffStates(before, snapshot(allPCI())); len(d) > 0 {
		bad = append(bad, "something was (un)bound: "+strings.Join(d, "; "))
	}
	if len(bad) > 0 {
		return errorsJoin(bad)
	}
	t.Detail("group=%s members=%d reason=%q", g, len(members), reason)
	return nil
}

// nicNumVFs: sriov_numvfs 2 -> (3: EBUSY, 8: ERANGE) -> 0 -> 2 -> 7 under the
// running plugin, followed without a restart.
func (h *harness) nicNumVFs(t *T) error {
	l := h.nic
	_, proc, err := h.nicB(t)
	if err != nil {
		return err
	}
	t.Cleanup(h.stopNicB)
	pf := l.pfB
	path := devPath(pf) + "/sriov_numvfs"
	pid := proc.cmd.Process.Pid
	var bad, figs []string
	if numVFs(pf) == 0 {
		if _, err := setNumVFs(pf, 2); err != nil {
			return err
		}
	}
	n0 := numVFs(pf)
	for _, w := range []struct {
		v    string
		want syscall.Errno
	}{{strconv.Itoa(n0 + 1), syscall.EBUSY}, {strconv.Itoa(8), syscall.ERANGE}} {
		err := writeAttr(path, w.v)
		if !errors.Is(err, w.want) {
			bad = append(bad, fmt.Sprintf("write %s to sriov_numvfs (now %d): %v, want %v", w.v, n0, err, w.want))
		} else {
			figs = append(figs, fmt.Sprintf("%dto%s=%s", n0, w.v, w.want))
		}
	}
	if numVFs(pf) != n0 {
		bad = append(bad, fmt.Sprintf("sriov_numvfs %d after refused writes, want %d", numVFs(pf), n0))
	}
	// set writes n and waits until ListAndWatch offers exactly the VFs the
	// kernel then has, all healthy (igbvf bound, PF link up).
	set := func(n int) error {
		w := time.Now()
		if err := writeAttr(path, strconv.Itoa(n)); err != nil {
			return err
		}
		wEnd := time.Now()
		vfs := vfsOf(pf)
		u, err := l.bVFEP.waitDevices(w, 30*time.Second, func(d []*pluginapi.Device) bool {
			return sameSet(addrsOf(healthyIDs(d)), vfs) && len(d) == len(vfs)
		})
		if err != nil {
			return fmt.Errorf("after sriov_numvfs=%d (VFs %v): %w", n, vfs, err)
		}
		lat := max(u.at.Sub(wEnd), 0)
		figs = append(figs, fmt.Sprintf("to%d:write=%s,listed=+%s", n, fmtDur(wEnd.Sub(w)), fmtDur(lat)))
		var ds []string
		for _, v := range vfs {
			ds = append(ds, driverOf(v)+"/"+netdevOf(v))
		}
		t.Logf("sriov_numvfs=%d: write took %s, ListAndWatch with the %d VFs healthy %s after it returned (%v)", n, fmtDur(wEnd.Sub(w)), len(vfs), fmtDur(lat), ds)
		if n == 0 && lat > healthBudget {
			return fmt.Errorf("VFs dropped %s after the write of 0 returned, want <= 1s", fmtDur(lat))
		}
		return nil
	}
	// 2 -> 0 -> 2 -> (7: EBUSY) -> 0 -> 7.
	for _, n := range []int{0, 2, 7} {
		if cur := numVFs(pf); cur != 0 && n != 0 {
			if err := writeAttr(path, strconv.Itoa(n)); !errors.Is(err, syscall.EBUSY) {
				bad = append(bad, fmt.Sprintf("write %d with %d VFs: %v, want EBUSY", n, cur, err))
			}
			if err := set(0); err != nil {
				bad = append(bad, err.Error())
				break
			}
		}
		if err := set(n); err != nil {
			bad = append(bad, err.Error())
			break
		}
	}
	if proc.exited() || proc.cmd.Process.Pid != pid {
		bad = append(bad, fmt.Sprintf("the plugin exited: %v", proc.err))
	}
	if len(bad) > 0 {
		proc.dumpLog(40)
		return errorsJoin(bad)
	}
	t.Detail("pf=%s %s restarts=0", pf, strings.Join(figs, " "))
	return nil
}

// nicRelease: what nic-kernel-pool and nic-vfio-drivers released (kubelet's
// PodResources stopped listing it) comes back: device-info files removed,
// the VF bound to vfio-pci back on igbvf with a netdev and in its pool.
// The plugin's release rule waits 2 minutes after a kubelet registration
// and needs 3 answers over 30 s, so this waits up to 5 minutes.
func (h *harness) nicRelease(t *T) error {
	l := h.nic
	if l.relProc == nil || l.relProc.exited() || (l.relKernelVFs == nil && l.relVfioVF == "") {
		return skipf("needs devices allocated and released by nic-kernel-pool / nic-vfio-drivers (did not pass)")
	}
	e, proc := l.relEnv, l.relProc
	e.use(t)
	t.Cleanup(func() {
		_ = proc.stop()
		e.kubelet.stop()
	})
	var figs, bad []string
	deadline := l.relRegistered.Add(5 * time.Minute)
	if l.relKernelVFs != nil {
		ok := waitFor(time.Until(deadline), func() bool {
			for _, a := range l.relKernelVFs {
				if exists(devInfoFile(e, "sriov-cdi.io/nic-kernel", a)) {
					return false
				}
			}
			return true
		})
		if !ok {
			bad = append(bad, fmt.Sprintf("device-info files of %v still there %s after the release", l.relKernelVFs, fmtDur(time.Since(l.relKernelAt))))
		} else {
			figs = append(figs, fmt.Sprintf("devinfo_removed=%s_after_release(%s_after_registration)", fmtDur(time.Since(l.relKernelAt)), fmtDur(time.Since(l.relRegistered))))
		}
	}
	if vf := l.relVfioVF; vf != "" {
		ok := waitFor(time.Until(deadline), func() bool {
			return driverOf(vf) == "igbvf" && netdevOf(vf) != ""
		})
		if !ok {
			bad = append(bad, fmt.Sprintf("%s not back on igbvf with a netdev %s after the release (driver %q override %q)", vf, fmtDur(time.Since(l.relVfioAt)), driverOf(vf), attr(vf, "driver_override")))
		} else {
			figs = append(figs, fmt.Sprintf("restored=%s_after_release netdev=%s(was %s)", fmtDur(time.Since(l.relVfioAt)), netdevOf(vf), l.relVfioNetdev))
			if ov := attr(vf, "driver_override"); ov != "(null)" && ov != "" {
				bad = append(bad, fmt.Sprintf("%s driver_override %q after restore", vf, ov))
			}
			if _, err := waitHealth(l.relVfioEP, time.Time{}, 15*time.Second, []string{vf}, true); err != nil {
				bad = append(bad, fmt.Sprintf("%s not back in pool nic-vfio: %v", vf, err))
			}
		}
	}
	n, last := e.kubelet.podRes.stats()
	t.Logf("PodResources List calls: %d, last %s ago", n, fmtDur(time.Since(last)))
	if len(bad) > 0 {
		proc.dumpLog(40)
		return errorsJoin(bad)
	}
	t.Detail("%s podresources_lists=%d", strings.Join(figs, " "), n)
	return nil
}
