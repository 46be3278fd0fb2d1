package main

// nic-rdma (issue 13): soft-RoCE (rdma_rxe) on real igbvf VF netdevs, a
// kernel pool with rdma: true, against the real kernel's RDMA core.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// rdmaModules are loaded by the scenario (run.sh ships them in the
// initramfs as ONDEMAND_MODULES, modprobe resolves their closure):
// crc32_generic first, rdma_rxe asks the crypto API for "crc32".
var rdmaModules = []string{"crc32_generic", "rdma_rxe", "ib_umad", "rdma_ucm"}

// rdmaKernel is what the kernel shows of one RDMA device, read here
// independently of the product: its sysfs directory, its netdev (rxe's
// parent attribute) and its char devices (class entries whose ibdev names
// it), uverbs then umad then issm, each by index.
type rdmaKernel struct {
	dir    string
	netdev string
	nodes  []string
}

func rdmaFromKernel() map[string]*rdmaKernel {
	out := map[string]*rdmaKernel{}
	ents, _ := os.ReadDir("/sys/class/infiniband")
	for _, e := range ents {
		p := filepath.Join("/sys/class/infiniband", e.Name())
		dir, _ := filepath.EvalSymlinks(p)
		nd, _ := readAttr(filepath.Join(p, "parent"))
		out[e.Name()] = &rdmaKernel{dir: dir, netdev: nd}
	}
	for _, c := range []struct{ class, prefix string }{{"infiniband_verbs", "uverbs"}, {"infiniband_mad", "umad"}, {"infiniband_mad", "issm"}} {
		ents, _ := os.ReadDir(filepath.Join("/sys/class", c.class))
		var names []string
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), c.prefix) {
				names = append(names, e.Name())
			}
		}
		slices.SortFunc(names, func(a, b string) int {
			x, _ := strconv.Atoi(strings.TrimPrefix(a, c.prefix))
			y, _ := strconv.Atoi(strings.TrimPrefix(b, c.prefix))
			return x - y
		})
		for _, n := range names {
			ib, _ := readAttr(filepath.Join("/sys/class", c.class, n, "ibdev"))
			if r := out[ib]; r != nil {
				r.nodes = append(r.nodes, n)
			}
		}
	}
	return out
}

// cdiSpecFile is the part of a CDI spec the scenario checks.
type cdiSpecFile struct {
	Devices []struct {
		Name           string `json:"name"`
		ContainerEdits struct {
			Env         []string `json:"env"`
			DeviceNodes []struct {
				Path string `json:"path"`
			} `json:"deviceNodes"`
		} `json:"containerEdits"`
	} `json:"devices"`
}

// cdiDeviceEdits returns the env and device node paths of one CDI device
// (named by its ID) in the env's spec files.
func (e *pluginEnv) cdiDeviceEdits(id string) (env, nodes []string, found bool) {
	ents, _ := os.ReadDir(e.cdiDir)
	for _, ent := range ents {
		b, err := os.ReadFile(filepath.Join(e.cdiDir, ent.Name()))
		if err != nil {
			continue
		}
		var s cdiSpecFile
		if json.Unmarshal(b, &s) != nil {
			continue
		}
		for _, d := range s.Devices {
			if d.Name != id {
				continue
			}
			for _, n := range d.ContainerEdits.DeviceNodes {
				nodes = append(nodes, n.Path)
			}
			return d.ContainerEdits.Env, nodes, true
		}
	}
	return nil, nil, false
}

// nicRDMA: rdma_rxe links on nicC's two VF netdevs (added in the opposite
// order of their names: the kernel numbers char devices by registration),
// then discover, a kernel pool with rdma: true (ListAndWatch, Allocate's
// CDI spec and env, the device-info file) and a link deleted under the
// running plugin: that VF stays in the pool, unhealthy, and its CDI
// device loses the RDMA nodes and variable.
func (h *harness) nicRDMA(t *T) error {
	if err := h.needFlags("plugin", "--device-info-dir", "--pod-resources-socket"); err != nil {
		return err
	}
	l := h.nic
	start := time.Now()
	for _, m := range rdmaModules {
		if r := run(60*time.Second, nil, "modprobe", m); r.err != nil {
			dmesgTail(t, 10)
			return fmt.Errorf("modprobe %s (in the initramfs: run.sh ONDEMAND_MODULES): %v: %s", m, r.err, strings.TrimSpace(r.stderr))
		}
	}
	loadDur := time.Since(start)
	vfs := vfsOf(l.pfC)
	if len(vfs) < 2 {
		return fmt.Errorf("lab error: nicC %s has VFs %v, want 2", l.pfC, vfs)
	}
	vf0, vf1 := vfs[0], vfs[1]
	nd0, nd1 := netdevOf(vf0), netdevOf(vf1)
	if nd0 == "" || nd1 == "" {
		return fmt.Errorf("lab error: VFs %s %s have netdevs %q %q, want one each on igbvf", vf0, vf1, nd0, nd1)
	}
	// A kernel-pool VF is healthy only while its PF's link is up (the lab
	// set it up at start).
	if !waitFor(20*time.Second, func() bool { return operState(l.netC) == "up" }) {
		return fmt.Errorf("PF %s link not up within 20s (operstate %s)", l.netC, operState(l.netC))
	}

	links := []struct{ name, netdev, vf string }{{"rxe5", nd1, vf1}, {"rxe3", nd0, vf0}}
	start = time.Now()
	for _, k := range links {
		if err := netlink.RdmaLinkAdd(k.name, "rxe", k.netdev); err != nil {
			dmesgTail(t, 10)
			return fmt.Errorf("rdma link add %s type rxe netdev %s: %w", k.name, k.netdev, err)
		}
		t.Cleanup(func() {
			if _, err := netlink.RdmaLinkByName(k.name); err == nil {
				if err := netlink.RdmaLinkDel(k.name); err != nil {
					t.Logf("cleanup: rdma link delete %s: %v", k.name, err)
				}
			}
		})
	}
	addDur := time.Since(start)
	kern := rdmaFromKernel()
	var bad []string
	for _, k := range links {
		r := kern[k.name]
		switch {
		case r == nil:
			bad = append(bad, fmt.Sprintf("kernel: no /sys/class/infiniband/%s after rdma link add", k.name))
		case r.netdev != k.netdev:
			bad = append(bad, fmt.Sprintf("kernel: %s parent %q, want %s", k.name, r.netdev, k.netdev))
		case len(r.nodes) != 3:
			bad = append(bad, fmt.Sprintf("kernel: %s has char devices %v, want uverbs, umad, issm", k.name, r.nodes))
		}
		if r != nil {
			t.Logf("FACT %s: %s parent=%s nodes=%v", k.name, r.dir, r.netdev, r.nodes)
			for _, n := range r.nodes {
				if !isCharDev("/dev/infiniband/" + n) {
					bad = append(bad, "kernel: /dev/infiniband/"+n+" is not a char device")
				}
			}
		}
	}
	if !isCharDev("/dev/infiniband/rdma_cm") {
		bad = append(bad, "kernel: /dev/infiniband/rdma_cm missing with rdma_ucm loaded")
	}
	if len(bad) > 0 {
		return errorsJoin(bad)
	}

	// discover: each VF carries its soft-RoCE device and the nodes the
	// kernel gave it.
	out, raw, ddur, err := h.runDiscover()
	if err != nil {
		return err
	}
	for _, k := range links {
		var got []string
		for _, d := range out.Devices {
			if str(d["address"]) != k.vf {
				continue
			}
			rs, _ := d["rdma"].([]any)
			for _, x := range rs {
				m, _ := x.(map[string]any)
				nodes, _ := strList(m["nodes"])
				got = append(got, fmt.Sprintf("%s@%s:%s", str(m["name"]), str(m["netdev"]), strings.Join(nodes, ",")))
			}
		}
		want := fmt.Sprintf("%s@%s:%s", k.name, k.netdev, strings.Join(kern[k.name].nodes, ","))
		if len(got) != 1 || got[0] != want {
			bad = append(bad, fmt.Sprintf("discover %s rdma %v, kernel %s", k.vf, got, want))
		}
	}
	if len(bad) > 0 {
		t.Logf("discover output:\n%s", tail(raw, 3000))
		return errorsJoin(bad)
	}

	// The plugin: both VFs healthy; Allocate vf0.
	p := pool{name: "nic-rdma", mode: "kernel", pciAddresses: []string{vf0, vf1}, rdma: true}
	e, err := h.newPluginEnv(t, false, p)
	if err != nil {
		return err
	}
	if err := e.withPodResources(); err != nil {
		return err
	}
	proc, err := e.start()
	if err != nil {
		return err
	}
	ep, err := proc.waitRegistered(p.resource(), nil, 60*time.Second)
	if err != nil {
		return err
	}
	u, err := ep.waitDevices(time.Time{}, 30*time.Second, func(d []*pluginapi.Device) bool {
		return sameSet(addrsOf(healthyIDs(d)), vfs[:2]) && len(d) == 2
	})
	if err != nil {
		proc.dumpLog(40)
		return fmt.Errorf("pool nic-rdma: want %s and %s healthy: %w", vf0, vf1, err)
	}
	ids, err := idsFor(allIDs(u.devices), []string{vf0})
	if err != nil {
		return err
	}
	before := snapshot(allPCI())
	resp, adur, err := ep.allocate(ids, 60*time.Second)
	if err != nil {
		proc.dumpLog(40)
		return fmt.Errorf("allocate %s: %w", ids[0], err)
	}
	t.Logf("allocate %s took %s: %s", ids[0], fmtDur(adur), fmtResponse(resp))
	if d := diffStates(before, snapshot(allPCI())); len(d) > 0 {
		bad = append(bad, "a kernel-pool Allocate changed drivers: "+strings.Join(d, "; "))
	}
	envKey := ""
	for k, v := range resp.Envs {
		if strings.HasPrefix(k, "SRIOV_CDI_RDMA_") {
			envKey = k
			if v != "rxe3" {
				bad = append(bad, fmt.Sprintf("Allocate env %s=%q, want rxe3", k, v))
			}
		}
	}
	if envKey == "" {
		bad = append(bad, fmt.Sprintf("Allocate envs %v have no SRIOV_CDI_RDMA_* variable", resp.Envs))
	}
	if len(resp.CdiDevices) != 1 {
		bad = append(bad, fmt.Sprintf("Allocate CDI devices %v, want one", resp.CdiDevices))
	}
	env, nodes, found := e.cdiDeviceEdits(ids[0])
	wantNodes := []string{}
	for _, n := range kern["rxe3"].nodes {
		wantNodes = append(wantNodes, "/dev/infiniband/"+n)
	}
	wantNodes = append(wantNodes, "/dev/infiniband/rdma_cm")
	switch {
	case !found:
		bad = append(bad, "no CDI device "+ids[0]+" in the specs")
	case strings.Join(nodes, ",") != strings.Join(wantNodes, ","):
		bad = append(bad, fmt.Sprintf("CDI device %s nodes %v, want %v (rxe3's, then rdma_cm)", ids[0], nodes, wantNodes))
	case envKey != "" && !slices.Contains(env, envKey+"=rxe3"):
		bad = append(bad, fmt.Sprintf("CDI device %s env %v lacks %s=rxe3", ids[0], env, envKey))
	}
	for _, n := range nodes {
		if !isCharDev(n) {
			bad = append(bad, "CDI node "+n+" is not a char device on the host")
		}
	}
	info, err := os.ReadFile(devInfoFile(e, p.resource(), ids[0]))
	if err != nil {
		bad = append(bad, fmt.Sprintf("device-info file for %s: %v", ids[0], err))
	} else if !strings.Contains(string(info), `"rdma-device":"rxe3"`) {
		bad = append(bad, fmt.Sprintf("device-info %s lacks \"rdma-device\":\"rxe3\"", strings.TrimSpace(string(info))))
	}
	if len(bad) > 0 {
		specs, _ := e.cdiSpecs()
		t.Logf("CDI specs:\n%s", tail(specs, 2000))
		proc.dumpLog(40)
		return errorsJoin(bad)
	}
	t.Logf("device-info: %s", strings.TrimSpace(string(info)))

	// rdma link delete rxe5 under the running plugin: vf1 stays in the
	// pool, unhealthy, its CDI device without RDMA nodes; vf0 untouched.
	del := time.Now()
	if err := netlink.RdmaLinkDel("rxe5"); err != nil {
		return fmt.Errorf("rdma link delete rxe5: %w", err)
	}
	if _, err := waitHealth(ep, del, 30*time.Second, []string{vf1}, false); err != nil {
		proc.dumpLog(40)
		return fmt.Errorf("after rdma link delete rxe5: %w", err)
	}
	unhealthyAfter := time.Since(del)
	if cur := ep.latest(); !sameSet(addrsOf(allIDs(cur)), vfs[:2]) || !sameSet(addrsOf(healthyIDs(cur)), []string{vf0}) {
		bad = append(bad, fmt.Sprintf("after the delete ListAndWatch has %v healthy of %v; want %s healthy, %s listed unhealthy", addrsOf(healthyIDs(cur)), addrsOf(allIDs(cur)), vf0, vf1))
	}
	ids1, err := idsFor(allIDs(ep.latest()), []string{vf1})
	if err != nil {
		return err
	}
	var env1, nodes1 []string
	ok := waitFor(10*time.Second, func() bool {
		var found bool
		env1, nodes1, found = e.cdiDeviceEdits(ids1[0])
		return found && len(nodes1) == 0
	})
	if !ok {
		bad = append(bad, fmt.Sprintf("CDI device %s still injects %v after its RDMA device went", vf1, nodes1))
	}
	for _, kv := range env1 {
		if strings.HasPrefix(kv, "SRIOV_CDI_RDMA_") {
			bad = append(bad, fmt.Sprintf("CDI device %s still sets %s", vf1, kv))
		}
	}
	// The reason an operator sees: discover with the plugin's config.
	reason := ""
	if dout, _, _, err := h.runDiscover("--config", e.config); err != nil {
		bad = append(bad, fmt.Sprintf("discover --config: %v", err))
	} else {
		for _, pl := range dout.Pools {
			units, _ := pl["devices"].([]any)
			for _, x := range units {
				if m, _ := x.(map[string]any); str(m["id"]) == vf1 && str(m["healthy"]) == "false" {
					reason = str(m["reason"])
				}
			}
		}
	}
	if !strings.Contains(reason, "no RDMA device on the function") {
		bad = append(bad, fmt.Sprintf("discover --config: %s unhealthy reason %q, want \"no RDMA device on the function ...\"", vf1, reason))
	}
	if _, n0, _ := e.cdiDeviceEdits(ids[0]); strings.Join(n0, ",") != strings.Join(wantNodes, ",") {
		bad = append(bad, fmt.Sprintf("CDI device %s nodes %v after rxe5 went, want still %v", vf0, n0, wantNodes))
	}
	if len(bad) > 0 {
		proc.dumpLog(40)
		return errorsJoin(bad)
	}
	// Short: run.sh cuts result lines at 400 characters and took= comes last.
	t.Logf("reason after the delete: %s", reason)
	t.Detail("modprobe=%s link_add=%s rxe3=%s:%s rxe5=%s:%s discover=%s allocate=%s injected=%d+rdma_cm unhealthy_after_delete=%s",
		fmtDur(loadDur), fmtDur(addDur), nd0, kern["rxe3"].nodes[0], nd1, kern["rxe5"].nodes[0],
		fmtDur(ddur), fmtDur(adur), len(nodes)-1, fmtDur(unhealthyAfter))
	return nil
}
