package pluginclient

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/klog/v2/textlogger"
	api "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	dpclient "k8s.io/kubernetes/pkg/kubelet/cm/devicemanager/plugin/v1beta1"
)

const (
	resourcePrefix = "sriov-cdi.io"
	// vfioPool holds VF 0000:01:00.2, bound to vfio-pci in the snapshot
	// (IOMMU group 8).
	vfioPool     = "vf"
	vfioResource = resourcePrefix + "/" + vfioPool
	vfioDevice   = "0000:01:00.2"
	vfioGroup    = "8"
	// kernelPool holds VFs 0000:02:00.1 and 0000:02:00.2, bound to nvme.
	kernelPool     = "nvme"
	kernelResource = resourcePrefix + "/" + kernelPool
	kernelDevice1  = "0000:02:00.1"
	kernelDevice2  = "0000:02:00.2"
	kernelPF       = "0000:02:00.0"

	// waitFor bounds every wait for the plugin (registration, an update).
	waitFor = 30 * time.Second
)

// pluginConfig is the plugin's configuration for the snapshot: two pools that
// need no driver writes.
const pluginConfig = `resourcePrefix: ` + resourcePrefix + `
pools:
  - name: ` + vfioPool + `
    mode: vfio
    selectors:
      pciAddresses: ["` + vfioDevice + `"]
  - name: ` + kernelPool + `
    mode: kernel
    selectors:
      pciAddresses: ["` + kernelDevice1 + `", "` + kernelDevice2 + `"]
`

// env is one test's world: the unpacked snapshot, directories, the plugin
// process and the kubelet stub.
type env struct {
	t         *testing.T
	dir       string // everything lives here
	root      string // unpacked snapshot: root/sys, root/dev
	dpDir     string // device-plugin dir (short path: unix socket limit)
	cdiDir    string
	stateFile string
	config    string
	logDir    string
	logger    klog.Logger

	plugin     *exec.Cmd
	pluginDone chan error
	pluginLog  string

	kubelet *fakeKubelet
}

func newEnv(t *testing.T) *env {
	t.Helper()
	requirePlugin(t)
	dir := t.TempDir()
	// Unix socket paths are limited to 107 bytes; t.TempDir() embeds the
	// test name, so the device-plugin dir gets a short name of its own.
	dpDir, err := os.MkdirTemp("", "dp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dpDir) })
	e := &env{
		t:         t,
		dir:       dir,
		root:      filepath.Join(dir, "root"),
		dpDir:     dpDir,
		cdiDir:    filepath.Join(dir, "cdi"),
		stateFile: filepath.Join(dir, "state", "state.json"),
		config:    filepath.Join(dir, "config.yaml"),
		logDir:    filepath.Join(dir, "logs"),
	}
	for _, d := range []string{e.root, e.cdiDir, filepath.Dir(e.stateFile), e.logDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	extractSnapshot(t, e.root)
	if err := os.WriteFile(e.config, []byte(pluginConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	klogFile, err := os.Create(filepath.Join(e.logDir, "kubelet-stub.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { klogFile.Close() })
	e.logger = textlogger.NewLogger(textlogger.NewConfig(textlogger.Verbosity(4), textlogger.Output(klogFile)))
	// The registration server logs through klog's global logger too.
	klog.SetLoggerWithOptions(e.logger, klog.ContextualLogger(true))
	t.Cleanup(klog.ClearLogger)
	// Registered first, runs last: logs are printed after everything stopped.
	t.Cleanup(e.dumpLogs)
	return e
}

// sysRoot is the --sysfs-root the plugin gets.
func (e *env) sysRoot() string { return filepath.Join(e.root, "sys") }

// startPlugin runs `sriov-cdi plugin` against the snapshot.
func (e *env) startPlugin() {
	t := e.t
	t.Helper()
	port := freePort(t)
	e.pluginLog = filepath.Join(e.logDir, "plugin.log")
	logf, err := os.OpenFile(e.pluginLog, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(pluginBin, "plugin",
		"--config", e.config,
		"--device-plugin-dir", e.dpDir,
		"--cdi-dir", e.cdiDir,
		"--state-file", e.stateFile,
		"--sysfs-root", e.sysRoot(),
		"--dev-root", filepath.Join(e.root, "dev"),
		"--health-addr", fmt.Sprintf("127.0.0.1:%d", port),
		"--log-level", "debug",
	)
	// Keep optional outputs in the test's directory too.
	if strings.Contains(pluginHelp, "--device-info-dir") {
		cmd.Args = append(cmd.Args, "--device-info-dir", filepath.Join(e.dir, "devinfo"))
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	t.Logf("started plugin pid %d: %s", cmd.Process.Pid, strings.Join(cmd.Args, " "))
	e.plugin = cmd
	e.pluginDone = make(chan error, 1)
	go func() {
		err := cmd.Wait()
		logf.Close()
		e.pluginDone <- err
	}()
	t.Cleanup(e.stopPlugin)
}

// stopPlugin sends SIGTERM, then SIGKILL after 10 s, and reports a plugin
// that did not exit cleanly on SIGTERM.
func (e *env) stopPlugin() {
	if e.plugin == nil {
		return
	}
	cmd := e.plugin
	e.plugin = nil
	select {
	case err := <-e.pluginDone:
		e.t.Errorf("plugin exited before the test ended: %v", err)
		return
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-e.pluginDone:
		if err != nil {
			e.t.Errorf("plugin exited with %v on SIGTERM, want a clean exit", err)
		}
		// A stopped plugin leaves no socket for kubelet to dial.
		entries, _ := os.ReadDir(e.dpDir)
		for _, de := range entries {
			if de.Type()&os.ModeSocket != 0 && de.Name() != filepath.Base(api.KubeletSocket) {
				e.t.Errorf("socket %s left in the device-plugin dir after SIGTERM", de.Name())
			}
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-e.pluginDone
		e.t.Errorf("plugin ignored SIGTERM for 10 s; killed")
	}
}

// pluginExited fails the test if the plugin process is gone.
func (e *env) checkPluginAlive() {
	e.t.Helper()
	select {
	case err := <-e.pluginDone:
		e.plugin = nil
		e.t.Fatalf("plugin exited: %v", err)
	default:
	}
}

func (e *env) dumpLogs() {
	if !e.t.Failed() && os.Getenv("SRIOV_CDI_E2E_LOGS") == "" {
		return
	}
	for _, name := range []string{"plugin.log", "kubelet-stub.log"} {
		p := filepath.Join(e.logDir, name)
		e.t.Logf("==== %s (last 80 lines)\n%s", name, tail(p, 80))
	}
}

func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startKubelet starts a kubelet stub: the real registration server and
// device-plugin client on <dpDir>/kubelet.sock.
func (e *env) startKubelet() *fakeKubelet {
	t := e.t
	t.Helper()
	k := newFakeKubelet(e.logger)
	srv, err := dpclient.NewServer(e.logger, filepath.Join(e.dpDir, filepath.Base(api.KubeletSocket)), k, k)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(e.logger); err != nil {
		t.Fatalf("start registration server: %v", err)
	}
	k.server = srv
	e.kubelet = k
	t.Cleanup(func() { k.stop() })
	return k
}

// fakeKubelet plays kubelet's device manager on top of the real
// registration server and plugin client: it keeps, per resource, the
// connected plugin, its options and the last device list, as
// devicemanager.ManagerImpl does.
type fakeKubelet struct {
	logger klog.Logger
	server dpclient.Server

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change
	res     map[string]*resourceState
	events  []string
}

type resourceState struct {
	plugin       dpclient.DevicePlugin
	options      *api.DevicePluginOptions
	connected    bool
	connects     int
	devices      []*api.Device
	listed       bool // a device list arrived since the last connect
	updates      int
	disconnected int
}

var (
	_ dpclient.RegistrationHandler = (*fakeKubelet)(nil)
	_ dpclient.ClientHandler       = (*fakeKubelet)(nil)
)

func newFakeKubelet(logger klog.Logger) *fakeKubelet {
	return &fakeKubelet{logger: logger, changed: make(chan struct{}), res: map[string]*resourceState{}}
}

func (k *fakeKubelet) stop() {
	k.mu.Lock()
	srv := k.server
	k.server = nil
	k.mu.Unlock()
	if srv != nil {
		_ = srv.Stop(k.logger)
	}
}

func (k *fakeKubelet) notify(event string) {
	k.events = append(k.events, event)
	close(k.changed)
	k.changed = make(chan struct{})
}

func (k *fakeKubelet) state(resource string) *resourceState {
	s, ok := k.res[resource]
	if !ok {
		s = &resourceState{}
		k.res[resource] = s
	}
	return s
}

// CleanupPluginDirectory removes every socket in the directory, as
// ManagerImpl.CleanupPluginDirectory does at kubelet start.
func (k *fakeKubelet) CleanupPluginDirectory(logger klog.Logger, dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, de := range entries {
		p := filepath.Join(dir, de.Name())
		st, err := os.Stat(p)
		if err != nil || st.IsDir() || st.Mode()&os.ModeSocket == 0 {
			continue
		}
		logger.V(2).Info("Removing socket at kubelet start", "path", p)
		if err := os.Remove(p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// PluginConnected asks the plugin for its options, as ManagerImpl does.
func (k *fakeKubelet) PluginConnected(ctx context.Context, resource string, p dpclient.DevicePlugin) error {
	opts, err := p.API().GetDevicePluginOptions(ctx, &api.Empty{})
	if err != nil {
		return fmt.Errorf("failed to get device plugin options: %w", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	s := k.state(resource)
	s.plugin, s.options, s.connected = p, opts, true
	s.devices, s.listed = nil, false
	s.connects++
	k.notify("connected " + resource)
	return nil
}

func (k *fakeKubelet) PluginDisconnected(_ klog.Logger, resource string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	s := k.state(resource)
	s.connected = false
	s.disconnected++
	k.notify("disconnected " + resource)
}

func (k *fakeKubelet) PluginListAndWatchReceiver(_ klog.Logger, resource string, resp *api.ListAndWatchResponse) {
	k.mu.Lock()
	defer k.mu.Unlock()
	s := k.state(resource)
	s.devices = resp.GetDevices()
	s.listed = true
	s.updates++
	k.notify(fmt.Sprintf("list %s %s", resource, deviceSummary(s.devices)))
}

// waitUntil waits until cond (called with the lock held) is true.
func (k *fakeKubelet) waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		k.mu.Lock()
		ok := cond()
		ch := k.changed
		k.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			k.mu.Lock()
			events := slices.Clone(k.events)
			k.mu.Unlock()
			t.Fatalf("timed out after %v waiting for %s; kubelet-stub events:\n  %s", timeout, what, strings.Join(events, "\n  "))
		}
	}
}

// waitRegistered waits until every resource is connected and has sent a
// device list since the connects-th connection.
func (k *fakeKubelet) waitRegistered(t *testing.T, connects int, resources ...string) {
	t.Helper()
	k.waitUntil(t, fmt.Sprintf("registration #%d of %v", connects, resources), waitFor, func() bool {
		for _, r := range resources {
			s, ok := k.res[r]
			if !ok || !s.connected || s.connects < connects || !s.listed {
				return false
			}
		}
		return true
	})
}

// resource returns a copy of a resource's state.
func (k *fakeKubelet) resource(r string) resourceState {
	k.mu.Lock()
	defer k.mu.Unlock()
	return *k.state(r)
}

func (k *fakeKubelet) resourceNames() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var names []string
	for r, s := range k.res {
		if s.connects > 0 {
			names = append(names, r)
		}
	}
	slices.Sort(names)
	return names
}

// client is the gRPC client kubelet uses for a resource.
func (k *fakeKubelet) client(t *testing.T, resource string) api.DevicePluginClient {
	t.Helper()
	s := k.resource(resource)
	if s.plugin == nil || !s.connected {
		t.Fatalf("resource %q is not connected", resource)
	}
	return s.plugin.API()
}

// deviceSummary renders devices as "id:health,..." sorted by ID.
func deviceSummary(devs []*api.Device) string {
	var parts []string
	for _, d := range devs {
		parts = append(parts, d.GetID()+":"+d.GetHealth())
	}
	slices.Sort(parts)
	return "[" + strings.Join(parts, " ") + "]"
}

// healthMap maps device ID to health.
func healthMap(devs []*api.Device) map[string]string {
	m := map[string]string{}
	for _, d := range devs {
		m[d.GetID()] = d.GetHealth()
	}
	return m
}

// readFile returns a file's content or the error text.
func readFile(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	return string(b)
}
