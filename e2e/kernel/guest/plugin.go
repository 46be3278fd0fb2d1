package main

// Running the product's plugin (`sriov-cdi plugin`) as a child process.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// pool is one pool of the product config (see the CLI contract in run.sh's
// header and the product's config package).
type pool struct {
	name         string
	mode         string // vfio | kernel
	vendors      []string
	devices      []string
	rootDevices  []string
	pciAddresses []string
	drivers      []string
	pfNames      []string
	// restoreOnRelease: vfio pools return released units to their driver.
	restoreOnRelease bool
	// allowUnbindFrom: drivers a vfio pool may take a VF from. The
	// product's default list leaves out storage drivers such as nvme.
	allowUnbindFrom []string
	// rdma: a kernel pool that injects the functions' RDMA devices.
	rdma bool
}

const resourcePrefix = "sriov-cdi.io"

func (p pool) resource() string { return resourcePrefix + "/" + p.name }

func yamlList(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = fmt.Sprintf("%q", x)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func configYAML(pools ...pool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "resourcePrefix: %s\npools:\n", resourcePrefix)
	for _, p := range pools {
		fmt.Fprintf(&b, "- name: %s\n  mode: %s\n", p.name, p.mode)
		if p.restoreOnRelease {
			b.WriteString("  restoreOnRelease: true\n")
		}
		if p.rdma {
			b.WriteString("  rdma: true\n")
		}
		if len(p.allowUnbindFrom) > 0 {
			fmt.Fprintf(&b, "  allowUnbindFrom: %s\n", yamlList(p.allowUnbindFrom))
		}
		b.WriteString("  selectors:\n")
		for _, s := range []struct {
			key  string
			vals []string
		}{{"vendors", p.vendors}, {"devices", p.devices}, {"rootDevices", p.rootDevices}, {"pciAddresses", p.pciAddresses}, {"drivers", p.drivers}, {"pfNames", p.pfNames}} {
			if len(s.vals) > 0 {
				fmt.Fprintf(&b, "    %s: %s\n", s.key, yamlList(s.vals))
			}
		}
	}
	return b.String()
}

// pluginEnv is the file layout of one plugin under test; a restarted plugin
// reuses it (same state file, same sockets directory, same fake kubelet).
type pluginEnv struct {
	t         *T
	h         *harness
	dir       string
	dpDir     string
	cdiDir    string
	stateFile string
	config    string
	kubelet   *fakeKubelet
	port      int
	runs      int
	shared    bool
	// Set by withPodResources: the fake kubelet also serves PodResources
	// there, and the plugin writes device-info files into deviceInfoDir.
	podResSock    string
	deviceInfoDir string
}

// use hands a shared env to the next scenario (for logging).
func (e *pluginEnv) use(t *T) {
	e.t = t
	e.kubelet.mu.Lock()
	e.kubelet.t = t
	e.kubelet.mu.Unlock()
}

var nextHealthPort = 18080

// newPluginEnv prepares directories, config and a fake kubelet. A shared
// env outlives the scenario that created it (its owner stops it); otherwise
// it is torn down with the scenario.
func (h *harness) newPluginEnv(t *T, shared bool, pools ...pool) (*pluginEnv, error) {
	dir := filepath.Join(h.work, t.name)
	_ = os.RemoveAll(dir)
	e := &pluginEnv{t: t, h: h, dir: dir, dpDir: filepath.Join(dir, "device-plugins"), cdiDir: filepath.Join(dir, "cdi"),
		stateFile: filepath.Join(dir, "state", "state.json"), config: filepath.Join(dir, "config.yaml"), port: nextHealthPort}
	nextHealthPort++
	for _, d := range []string{e.dpDir, e.cdiDir, filepath.Dir(e.stateFile)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	cfg := configYAML(pools...)
	t.Logf("config:\n%s", cfg)
	if err := os.WriteFile(e.config, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	k, err := startFakeKubelet(t, e.dpDir)
	if err != nil {
		return nil, err
	}
	e.kubelet = k
	e.shared = shared
	if !shared {
		t.Cleanup(k.stop)
	}
	return e, nil
}

// pluginProc is one run of `sriov-cdi plugin`.
type pluginProc struct {
	env  *pluginEnv
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func (e *pluginEnv) start(extraEnv ...string) (*pluginProc, error) {
	e.runs++
	logPath := filepath.Join(e.dir, fmt.Sprintf("plugin-%d.log", e.runs))
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	args := []string{"plugin",
		"--config", e.config,
		"--device-plugin-dir", e.dpDir,
		"--cdi-dir", e.cdiDir,
		"--state-file", e.stateFile,
		"--sysfs-root", "/sys",
		"--dev-root", "/dev",
		"--health-addr", fmt.Sprintf("127.0.0.1:%d", e.port),
		"--log-level", "debug",
	}
	if e.podResSock != "" {
		args = append(args, "--pod-resources-socket", e.podResSock, "--device-info-dir", e.deviceInfoDir,
			// The production release rule, at lab speed: absent from 2
			// answers over 2 s, nothing counted for 5 s after a kubelet
			// (re)start, a new allocation's grace 5 s.
			"--release-poll", "1s", "--release-lists", "2", "--release-span", "2s", "--release-settle", "5s", "--release-grace", "5s")
	}
	cmd := exec.Command(e.h.cli, args...)
	cmd.Env = append(os.Environ(), extraEnv...)
	cmd.Stdout, cmd.Stderr = lf, lf
	e.t.Logf("start: %s %s %s", strings.Join(extraEnv, " "), e.h.cli, strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, err
	}
	p := &pluginProc{env: e, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	if !e.shared {
		e.t.Cleanup(func() { _ = p.stop() })
	}
	return p, nil
}

func (p *pluginProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits (SIGKILL after 15 s).
func (p *pluginProc) stop() error {
	if p.exited() {
		return p.err
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("plugin did not exit within 15s of SIGTERM")
	}
}

func (p *pluginProc) kill9() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (p *pluginProc) logText() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// dumpLog prints the last n lines of the plugin's log into the scenario log.
func (p *pluginProc) dumpLog(n int) {
	lines := strings.Split(strings.TrimRight(p.logText(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	p.env.t.Logf("plugin log %s (last %d lines):\n%s", p.log, len(lines), strings.Join(lines, "\n"))
}

// waitRegistered waits for the resource's registration; it fails early if
// the plugin exits.
func (p *pluginProc) waitRegistered(resource string, after *endpoint, timeout time.Duration) (*endpoint, error) {
	type res struct {
		ep  *endpoint
		err error
	}
	ch := make(chan res, 1)
	go func() {
		ep, err := p.env.kubelet.waitEndpoint(resource, after, timeout)
		ch <- res{ep, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			p.dumpLog(40)
		}
		return r.ep, r.err
	case <-p.done:
		p.dumpLog(40)
		return nil, fmt.Errorf("plugin exited before registering %s: %v", resource, p.err)
	}
}

// cdiSpecs returns the concatenated text of the spec files in the CDI dir.
func (e *pluginEnv) cdiSpecs() (string, []string) {
	ents, _ := os.ReadDir(e.cdiDir)
	var b strings.Builder
	var names []string
	for _, ent := range ents {
		data, err := os.ReadFile(filepath.Join(e.cdiDir, ent.Name()))
		if err != nil {
			continue
		}
		names = append(names, ent.Name())
		b.Write(data)
		b.WriteString("\n")
	}
	return b.String(), names
}
