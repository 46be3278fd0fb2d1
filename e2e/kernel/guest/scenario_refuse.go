package main

// Scenario 9: the e2e-shared PF sits behind a root port with ACS disabled,
// so the root port, the PF (on nvme) and its VFs share one IOMMU group. That
// group is not viable for vfio: a vfio pool over these VFs must be refused,
// with a reason that names the member in the way, and nothing may be
// unbound (least of all the PF or the root port).

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

func (h *harness) refuseSharedGroup(t *T) error {
	l := h.lab
	vfs := vfsOf(l.pfShared)
	if len(vfs) == 0 {
		return fmt.Errorf("PF %s has no VFs", l.pfShared)
	}
	group := groupOf(vfs[0])
	members := groupMembers(group)
	// The members a reason must name: everything in the group that is not
	// one of the pool's VFs (the root port and the PF).
	var others []string
	for _, m := range members {
		if physfnOf(m) != l.pfShared {
			others = append(others, m)
		}
	}
	t.Logf("group %s members %v; not in the pool: %v", group, members, others)
	if len(others) == 0 {
		return fmt.Errorf("lab error: group %s of %s has no member outside the pool (is disable-acs=on set?)", group, vfs[0])
	}
	namesOther := func(s string) bool {
		for _, o := range others {
			if strings.Contains(s, o) {
				return true
			}
		}
		return false
	}
	before := snapshot(allPCI())
	t.Cleanup(func() { putBack(t, before) })
	p := pool{name: "shared", mode: "vfio", rootDevices: []string{l.pfShared}}

	var ran, skips []string
	// A: discover with the pool config.
	if err := h.needFlags("discover", "--config"); err != nil {
		skips = append(skips, err.Error())
	} else {
		cfg := filepath.Join(h.work, "refuse-config.yaml")
		if err := os.WriteFile(cfg, []byte(configYAML(p)), 0o644); err != nil {
			return err
		}
		out, raw, _, err := h.runDiscover("--config", cfg)
		if err != nil {
			return err
		}
		var bad []string
		for _, pl := range out.Pools {
			if str(pl["name"]) != p.name {
				continue
			}
			b, _ := json.Marshal(pl["devices"])
			for _, vf := range vfs {
				if strings.Contains(string(b), vf) {
					bad = append(bad, fmt.Sprintf("pool %q offers %s from non-viable group %s: %s", p.name, vf, group, tail(string(b), 500)))
				}
			}
		}
		// Each VF needs its own refusal whose reason names a member in the
		// way (a refusal of the root port itself does not count).
		var found []string
		for _, vf := range vfs {
			why := ""
			for _, u := range out.Unselected {
				if str(u["address"]) == vf && namesOther(str(u["reason"])) {
					why = str(u["reason"])
				}
			}
			if why == "" {
				bad = append(bad, fmt.Sprintf("no unselected entry for %s with a reason naming a member of group %s outside the pool %v", vf, group, others))
				continue
			}
			found = append(found, vf+": "+why)
		}
		if len(bad) > 0 {
			t.Logf("discover output:\n%s", tail(raw, 3000))
			return errorsJoin(bad)
		}
		t.Logf("discover refuses:\n%s", strings.Join(found, "\n"))
		ran = append(ran, "discover")
	}

	// B: the plugin must not hand these VFs out.
	if err := h.needPlugin(); err != nil {
		skips = append(skips, err.Error())
	} else {
		e, err := h.newPluginEnv(t, false, p)
		if err != nil {
			return err
		}
		proc, err := e.start()
		if err != nil {
			return err
		}
		ep, regErr := e.kubelet.waitEndpoint(p.resource(), nil, 20*time.Second)
		var bad []string
		if regErr == nil {
			// Registered anyway: only unhealthy or no devices, and an
			// Allocate must fail naming the member.
			if !waitFor(10*time.Second, ep.received) {
				bad = append(bad, "registered, but ListAndWatch sent no list within 10s")
			}
			devs := ep.latest()
			if ids := healthyIDs(devs); len(ids) > 0 {
				bad = append(bad, fmt.Sprintf("pool lists healthy devices %v from non-viable group %s", ids, group))
			}
			if ids := allIDs(devs); len(ids) > 0 {
				_, _, aerr := ep.allocate(ids[:1], 60*time.Second)
				switch {
				case aerr == nil:
					bad = append(bad, fmt.Sprintf("Allocate %s succeeded on a non-viable group", ids[0]))
				case !namesOther(aerr.Error()):
					bad = append(bad, fmt.Sprintf("Allocate %s refused, but the reason names none of %v: %v", ids[0], others, aerr))
				default:
					t.Logf("Allocate refused: %v", aerr)
				}
			}
			t.Logf("registered with %s", fmtDevices(devs))
		} else {
			t.Logf("pool not registered: %v", regErr)
		}
		if regErr != nil || len(allIDs(ep.latest())) == 0 {
			// Checked by refuse-reason-logged, so that this line stays
			// about safety.
			l.refuseLogChecked = true
			if !namesOther(proc.logText()) {
				l.refuseLogMissing = fmt.Sprintf("the plugin refuses the VFs of group %s (no devices offered, nothing unbound) but never says why: its log names none of %v; an operator reading the DaemonSet log needs the reason discover gives", group, others)
			}
		}
		if diff := diffStates(before, snapshot(allPCI())); len(diff) > 0 {
			bad = append(bad, "drivers changed: "+strings.Join(diff, "; "))
		}
		if len(bad) > 0 {
			proc.dumpLog(40)
			return errorsJoin(bad)
		}
		ran = append(ran, "plugin")
	}
	if len(ran) == 0 {
		return skipf("%s", strings.Join(skips, "; "))
	}
	t.Detail("group=%s members=%v refused_by=%s", group, members, strings.Join(ran, "+"))
	if len(skips) > 0 {
		t.Detail("not_checked=%q", strings.Join(skips, "; "))
	}
	return nil
}

// refuseReasonLogged: the plugin's own log explains the refusal of
// refuse-shared-group, naming the group member in the way.
func (h *harness) refuseReasonLogged(t *T) error {
	l := h.lab
	if !l.refuseLogChecked {
		return skipf("needs refuse-shared-group to have run the plugin and seen it refuse the pool")
	}
	if l.refuseLogMissing != "" {
		return fmt.Errorf("%s", l.refuseLogMissing)
	}
	return nil
}
