package main

// The DRA front door on the production path: the full binary with the
// DaemonSet's environment for DRA pools publishes to a real
// kube-apiserver (and etcd) running in this network namespace; a watch on
// ResourceSlices (in a child process at nice 10) times start -> every
// device stored, and one VF's driver change -> the slice rewritten.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/sriov-cdi/sriov-cdi/sysfs/sysfstest"
)

const (
	draDriver = "sriov-cdi.io"
	draNode   = "bench-node"
	draToken  = "hostbench-token"
	apiPort   = 6443
	etcdPort  = 2379
)

// draConfig: every VF, in two DRA pools (the vfio VFs of PF 0 and the
// kernel VFs), the chart's default (no device taints).
const draConfig = `pools:
  - {name: vf-vfio, api: dra, mode: vfio, selectors: {rootDevices: ["0000:01:00.0#0-63"]}}
  - {name: vf-kernel, api: dra, mode: kernel, selectors: {devices: ["154c"], drivers: ["iavf"]}}
`

type draResult struct {
	bin              string
	vfs, devices     int
	slices           int
	startToSlices    time.Duration
	change           []time.Duration
	writesPerChange  float64
	hwmKiB           int
	pssAnon, pssFile int
	timedOut         bool
}

const draHeader = "| binary | VFs | sysfs | start → every device in ResourceSlices (devices / slices) | one VF's driver change → its slice rewritten p50 / p99 (n) | slice writes per change | peak RSS MiB (Pss_Anon / Pss_File) |\n|---|---|---|---|---|---|---|"

func (r draResult) row(noLive bool) string {
	mode := "/sys (live)"
	if noLive {
		mode = "tree (no live checks)"
	}
	mem := fmt.Sprintf("%.1f (%.1f / %.1f)", float64(r.hwmKiB)/1024, float64(r.pssAnon)/1024, float64(r.pssFile)/1024)
	if r.timedOut {
		return fmt.Sprintf("| %s | %d | %s | > %v (%d / %d) | — | — | %s |", r.bin, r.vfs, mode, startTimeout, r.devices, r.slices, mem)
	}
	return fmt.Sprintf("| %s | %d | %s | %s (%d / %d) | %s | %.1f | %s |", r.bin, r.vfs, mode, ms(r.startToSlices), r.devices, r.slices,
		pct(r.change), r.writesPerChange, mem)
}

func runDRA(bin, work string, vfs int, noLive bool, apiserverBin, etcdBin string) (string, error) {
	h, err := setupHost(work, vfs, noLive)
	if err != nil {
		return "", err
	}
	stop, client, kubeconfig, err := startAPI(work, apiserverBin, etcdBin)
	if err != nil {
		return "", err
	}
	defer stop()
	ctx := context.Background()
	// kubelet registers its node before any plugin runs.
	if _, err := client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: draNode}}, metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("create node: %w", err)
	}
	w, err := watchSlices()
	if err != nil {
		return "", err
	}
	defer w.stop()

	cfg := filepath.Join(work, "cfg", "config.yaml")
	if err := os.WriteFile(cfg, []byte(draConfig), 0o644); err != nil {
		return "", err
	}
	for _, d := range []string{"plugins", "plugins_registry"} {
		if err := os.MkdirAll(filepath.Join(work, d), 0o755); err != nil {
			return "", err
		}
	}
	// The DaemonSet's environment with DRA pools; the API server is
	// reached through a kubeconfig instead of the pod's service account.
	env := append(h.daemonSetEnv(cfg),
		"NODE_NAME="+draNode,
		"KUBECONFIG="+kubeconfig,
		"SRIOV_CDI_KUBELET_PLUGINS_DIR="+filepath.Join(work, "plugins"),
		"SRIOV_CDI_KUBELET_REGISTRY_DIR="+filepath.Join(work, "plugins_registry"),
		"SRIOV_CDI_DRA_DEVICE_TAINTS=false",
		"SRIOV_CDI_DRA_DEVICE_METADATA=true",
	)
	r := draResult{vfs: vfs, bin: filepath.Base(bin)}
	// A node agent starts on a node whose control plane runs elsewhere:
	// the plugin's start is measured once the API server here has
	// finished booting (its post-start hooks) and the machine is quiet.
	quiet, busy := settle(30 * time.Second)
	fmt.Fprintf(os.Stderr, "hostbench: %d VFs: machine quiet after %s (last 0.5 s: %.0f%% busy)\n", vfs, ms(quiet), 100*busy)
	cmd, start, stopPlugin, err := startPlugin(bin, work, env)
	if err != nil {
		return "", err
	}
	defer stopPlugin()
	at, ok := w.waitDevices(vfs, start.Add(startTimeout))
	r.devices, r.slices = w.count()
	if !ok {
		r.timedOut = true
		r.hwmKiB = vmHWM(cmd.Process.Pid)
		r.pssAnon, r.pssFile = pss(cmd.Process.Pid)
		return r.row(noLive), nil
	}
	r.startToSlices = at.Sub(start)
	fmt.Fprintf(os.Stderr, "hostbench: %d VFs: first slice stored %s after start, the last %s after it; CPU meanwhile: plugin %s, %s\n",
		vfs, ms(w.firstAt().Sub(start)), ms(at.Sub(w.firstAt())), ms(cpuTime(cmd.Process.Pid)), apiCPU())

	if !noLive {
		// A kernel VF of PF 1 loses and regains its driver (a uevent, as
		// the kernel sends): its slice, and only its, is rewritten.
		time.Sleep(time.Second) // settle: the controller's queue is empty
		vf := "0000:02:00.1"
		writes := 0
		for i := range 10 {
			driver, action := "", "unbind"
			if i%2 == 1 {
				driver, action = "iavf", "bind"
			}
			w.drain()
			t := time.Now()
			if err := sysfstest.SetDriver(h.hostDir, vf, driver); err != nil {
				return "", err
			}
			if err := sendUevent(action, h.b.Sys(), vf); err != nil {
				return "", err
			}
			select {
			case at := <-w.events:
				r.change = append(r.change, at.Sub(t))
			case <-time.After(2 * tick):
				r.change = append(r.change, 2*tick)
			}
			time.Sleep(time.Second) // every write of this change arrives
			writes += 1 + w.drain()
		}
		r.writesPerChange = float64(writes) / 10
	}
	r.hwmKiB = vmHWM(cmd.Process.Pid)
	r.pssAnon, r.pssFile = pss(cmd.Process.Pid)
	return r.row(noLive), nil
}

// apiCPU is the CPU etcd and kube-apiserver used since they were ready.
var apiCPU = func() string { return "" }

// startAPI starts etcd and kube-apiserver (token auth, AlwaysAllow, a
// self-signed serving certificate) in this network namespace and returns
// a client and a kubeconfig for it.
func startAPI(work, apiserverBin, etcdBin string) (stop func(), client kubernetes.Interface, kubeconfig string, err error) {
	var procs []*exec.Cmd
	cpu0 := map[string]time.Duration{}
	apiCPU = func() string {
		out := ""
		for _, c := range procs {
			n := filepath.Base(c.Path)
			out += fmt.Sprintf("%s %s ", n, ms(cpuTime(c.Process.Pid)-cpu0[n]))
		}
		return out
	}
	defer func() {
		for _, c := range procs {
			cpu0[filepath.Base(c.Path)] = cpuTime(c.Process.Pid)
		}
	}()
	stop = func() {
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].Process.Signal(unix.SIGTERM)
			procs[i].Wait()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	dir := filepath.Join(work, "api")
	if err = os.MkdirAll(dir, 0o700); err != nil {
		return
	}
	start := func(name string, args ...string) error {
		f, err := os.Create(filepath.Join(dir, filepath.Base(name)+".log"))
		if err != nil {
			return err
		}
		c := exec.Command(name, args...)
		c.Stdout, c.Stderr = f, f
		if err := c.Start(); err != nil {
			return fmt.Errorf("start %s: %w", name, err)
		}
		procs = append(procs, c)
		return nil
	}
	peer := fmt.Sprintf("http://127.0.0.1:%d", etcdPort+10)
	if err = start(etcdBin, "--name", "bench", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPort), "--advertise-client-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPort),
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "bench="+peer,
		"--unsafe-no-fsync", "--log-level", "warn"); err != nil {
		return
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return
	}
	saKey, saPub, tokens := filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub"), filepath.Join(dir, "tokens.csv")
	if err = os.WriteFile(saKey, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return
	}
	if err = os.WriteFile(saPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		return
	}
	if err = os.WriteFile(tokens, []byte(draToken+",hostbench,hostbench,system:masters\n"), 0o600); err != nil {
		return
	}
	if err = start(apiserverBin, "--etcd-servers", fmt.Sprintf("http://127.0.0.1:%d", etcdPort),
		"--secure-port", fmt.Sprint(apiPort), "--advertise-address", "192.0.2.1", "--cert-dir", filepath.Join(dir, "certs"),
		"--token-auth-file", tokens, "--authorization-mode", "AlwaysAllow",
		"--service-account-issuer", "https://kubernetes.default.svc", "--service-account-key-file", saPub,
		"--service-account-signing-key-file", saKey, "--service-cluster-ip-range", "10.96.0.0/16",
		"--enable-priority-and-fairness=false", "--profiling=false", "--v", "1"); err != nil {
		return
	}
	rc := benchREST()
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	ready := false
	for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		req, _ := http.NewRequest(http.MethodGet, rc.Host+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+draToken)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				ready = true
				break
			}
		}
	}
	if !ready {
		err = fmt.Errorf("kube-apiserver not ready within 3 minutes (log: %s)", filepath.Join(dir, "kube-apiserver.log"))
		return
	}
	if client, err = kubernetes.NewForConfig(rc); err != nil {
		return
	}
	kubeconfig = filepath.Join(dir, "kubeconfig")
	err = os.WriteFile(kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: bench
  cluster: {server: %q, insecure-skip-tls-verify: true}
users:
- name: hostbench
  user: {token: %q}
contexts:
- name: bench
  context: {cluster: bench, user: hostbench}
current-context: bench
`, rc.Host, draToken)), 0o600)
	return
}

// benchREST is the client configuration of the API server startAPI runs.
func benchREST() *rest.Config {
	return &rest.Config{Host: fmt.Sprintf("https://127.0.0.1:%d", apiPort), BearerToken: draToken,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true}, QPS: 100, Burst: 200,
		// Protobuf, as kubelet and the scheduler watch slices.
		ContentConfig: rest.ContentConfig{ContentType: "application/vnd.kubernetes.protobuf",
			AcceptContentTypes: "application/vnd.kubernetes.protobuf,application/json"}}
}

// watchSlicesMain is hostbench -watch-slices: it watches the driver's
// ResourceSlices on startAPI's server and prints "ready", then one line
// per event: "<unix ns> <ADDED|MODIFIED|DELETED> <slice> <devices>".
func watchSlicesMain() error {
	c, err := kubernetes.NewForConfig(benchREST())
	if err != nil {
		return err
	}
	w, err := c.ResourceV1().ResourceSlices().Watch(context.Background(), metav1.ListOptions{FieldSelector: resourceapi.ResourceSliceSelectorDriver + "=" + draDriver})
	if err != nil {
		return fmt.Errorf("watch ResourceSlices: %w", err)
	}
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintln(out, "ready")
	out.Flush()
	for ev := range w.ResultChan() {
		if sl, ok := ev.Object.(*resourceapi.ResourceSlice); ok {
			fmt.Fprintf(out, "%d %s %s %d\n", time.Now().UnixNano(), ev.Type, sl.Name, len(sl.Spec.Devices))
			out.Flush()
		}
	}
	return fmt.Errorf("the ResourceSlice watch ended")
}

// sliceWatch follows the driver's ResourceSlices: devices per slice, and
// an event per write. The watch runs in a child process (hostbench
// -watch-slices) at nice 10: it stands in for the scheduler and kubelet,
// which decode every slice on other machines; here it would take the CPU
// that the plugin and the API server need. A lower priority can only
// delay what it sees, never make the plugin look faster: each event is
// timed when the child has decoded it.
type sliceWatch struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	devs   map[string]int
	events chan time.Time // when the child decoded each event
	total  chan stamped   // the device total after each event
	first  time.Time
}

// stamped is a device total and when the event that made it was decoded.
type stamped struct {
	n  int
	at time.Time
}

func watchSlices() (*sliceWatch, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("nice", "-n", "10", self, "-watch-slices")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the slice watcher: %w", err)
	}
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != "ready" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("the slice watcher did not start (%q)", lines.Text())
	}
	s := &sliceWatch{cmd: cmd, devs: map[string]int{}, events: make(chan time.Time, 1024), total: make(chan stamped, 1024)}
	go func() {
		for lines.Scan() {
			var ns int64
			var typ, name string
			var devices int
			if _, err := fmt.Sscan(lines.Text(), &ns, &typ, &name, &devices); err != nil {
				fmt.Fprintf(os.Stderr, "hostbench: slice watcher: %q: %v\n", lines.Text(), err)
				continue
			}
			at := time.Unix(0, ns)
			s.mu.Lock()
			if s.first.IsZero() {
				s.first = at
			}
			if typ == string(watch.Deleted) {
				delete(s.devs, name)
			} else {
				s.devs[name] = devices
			}
			n := 0
			for _, d := range s.devs {
				n += d
			}
			s.mu.Unlock()
			select {
			case s.events <- at:
			default:
			}
			select {
			case s.total <- stamped{n, at}:
			default:
			}
		}
	}()
	return s, nil
}

func (s *sliceWatch) stop() {
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
}

func (s *sliceWatch) firstAt() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first
}

func (s *sliceWatch) count() (devices, slices int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.devs {
		devices += d
	}
	return devices, len(s.devs)
}

// waitDevices returns when the slices hold want devices (the time of the
// event that made it so), or false at the deadline.
func (s *sliceWatch) waitDevices(want int, deadline time.Time) (time.Time, bool) {
	for {
		select {
		case t := <-s.total:
			if t.n == want {
				return t.at, true
			}
		case <-time.After(time.Until(deadline)):
			return time.Time{}, false
		}
	}
}

// drain empties the event channels; it returns how many writes were seen.
func (s *sliceWatch) drain() int {
	n := 0
	for {
		select {
		case <-s.events:
			n++
		case <-s.total:
		default:
			return n
		}
	}
}
