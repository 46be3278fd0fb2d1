package main

// Scenario 1: `sriov-cdi discover -o json` against the live kernel, compared
// with what this driver reads from /sys itself.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

type discoverOutput struct {
	Devices    []map[string]any `json:"devices"`
	Pools      []map[string]any `json:"pools"`
	Unselected []map[string]any `json:"unselected"`
	Warnings   []any            `json:"warnings"`
}

// str renders a JSON scalar the way sysfs would show it ("" for null).
func str(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	default:
		b, _ := json.Marshal(x)
		return string(b)
	}
}

func hexID(s string) string { return strings.TrimPrefix(strings.ToLower(s), "0x") }

// strList turns a JSON list of addresses (strings, or objects with an
// "address") into a string list, order kept.
func strList(v any) ([]string, bool) {
	xs, ok := v.([]any)
	if !ok {
		return nil, v == nil
	}
	var out []string
	for _, x := range xs {
		switch y := x.(type) {
		case string:
			out = append(out, y)
		case map[string]any:
			out = append(out, str(y["address"]))
		default:
			out = append(out, str(y))
		}
	}
	return out, true
}

func (h *harness) runDiscover(args ...string) (discoverOutput, string, time.Duration, error) {
	var out discoverOutput
	full := append([]string{"discover", "--sysfs-root", "/sys", "--dev-root", "/dev", "-o", "json"}, args...)
	r := h.cliRun(60*time.Second, full...)
	if r.err != nil {
		return out, r.stdout, r.dur, fmt.Errorf("sriov-cdi %s: %s", strings.Join(full, " "), r)
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		return out, r.stdout, r.dur, fmt.Errorf("parse discover JSON: %w; output: %s", err, tail(r.stdout, 2000))
	}
	return out, r.stdout, r.dur, nil
}

func (h *harness) discover(t *T) error {
	if err := h.needFlags("discover", "--sysfs-root", "--dev-root"); err != nil {
		return err
	}
	l := h.lab
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
			bad = append(bad, fmt.Sprintf("%s %s: discover %q, sysfs %q", addr, field, g, want))
		}
	}
	checked := 0
	for _, pf := range []string{l.pfVfio, l.pfNvme, l.pfShared} {
		devs := append([]string{pf}, vfsOf(pf)...)
		for _, a := range devs {
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
			if ov := attr(a, "driver_override"); ov != "(null)" || (str(d["driverOverride"]) != "" && str(d["driverOverride"]) != "(null)") {
				check(a, "driverOverride", ov, d["driverOverride"])
			}
			if g, ok := d["vfioGroupDev"]; ok && groupOf(a) != "" {
				check(a, "vfioGroupDev", strconv.FormatBool(isCharDev("/dev/vfio/"+groupOf(a))), g)
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
				want := vfsOf(pf) // by VF index
				if !ok || strings.Join(vfs, ",") != strings.Join(want, ",") {
					bad = append(bad, fmt.Sprintf("%s sriov.vfs: discover %v, sysfs virtfn links %v", a, s["vfs"], want))
				}
				continue
			}
			check(a, "physfn", physfnOf(a), d["physfn"])
			check(a, "vfIndex", strconv.Itoa(vfIndex(a)), d["vfIndex"])
		}
	}
	// No VF the kernel does not have.
	for _, d := range out.Devices {
		if pf := str(d["physfn"]); pf != "" {
			if !exists(devPath(str(d["address"]))) {
				bad = append(bad, fmt.Sprintf("discover lists %s (physfn %s) which the kernel does not have", str(d["address"]), pf))
			}
		}
	}
	if len(bad) > 0 {
		t.Logf("discover output:\n%s", tail(raw, 3000))
		return errorsJoin(bad)
	}
	t.Detail("devices=%d checked=%d(PF+VF:driver,group,physfn,vfIndex,sriov) discover=%s", len(out.Devices), checked, fmtDur(dur))

	// With a vfio pool over the e2e-vfio PF: one unit per VF (ACS gives
	// each its own group), ID = address, members = [address], its group.
	if h.needFlags("discover", "--config") != nil {
		t.Detail("pools=not-checked(no --config)")
		return nil
	}
	cfg := filepath.Join(h.work, "discover-config.yaml")
	p := pool{name: "nvme-vf", mode: "vfio", rootDevices: []string{l.pfVfio}}
	if err := os.WriteFile(cfg, []byte(configYAML(p)), 0o644); err != nil {
		return err
	}
	out, raw, _, err = h.runDiscover("--config", cfg)
	if err != nil {
		return err
	}
	var units []map[string]any
	for _, pl := range out.Pools {
		if str(pl["name"]) == p.name {
			us, _ := pl["devices"].([]any)
			for _, u := range us {
				if m, ok := u.(map[string]any); ok {
					units = append(units, m)
				}
			}
		}
	}
	vfs := vfsOf(l.pfVfio)
	if len(units) != len(vfs) {
		bad = append(bad, fmt.Sprintf("pool %s has %d devices, want one per VF %v", p.name, len(units), vfs))
	}
	byID := map[string]map[string]any{}
	for _, u := range units {
		byID[str(u["id"])] = u
	}
	for _, vf := range vfs {
		u, ok := byID[vf]
		if !ok {
			bad = append(bad, fmt.Sprintf("pool %s has no device with id %s", p.name, vf))
			continue
		}
		members, _ := strList(u["members"])
		if strings.Join(members, ",") != vf || str(u["iommuGroup"]) != groupOf(vf) {
			bad = append(bad, fmt.Sprintf("pool unit %s: members=%v group=%s, want [%s] group %s", vf, members, str(u["iommuGroup"]), vf, groupOf(vf)))
		}
	}
	if len(bad) > 0 {
		t.Logf("discover --config output:\n%s", tail(raw, 3000))
		return errorsJoin(bad)
	}
	t.Detail("pool_units=%d", len(units))
	return nil
}
