package nri

import (
	"context"
	"maps"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"
	nrilog "github.com/containerd/nri/pkg/log"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/protobuf/testing/protocmp"
)

// startRuntime starts the runtime side of NRI (what containerd and CRI-O
// embed) listening on dir/nri.sock, with no pods or containers to sync.
func startRuntime(t *testing.T, dir string) *adaptation.Adaptation {
	t.Helper()
	sync := func(ctx context.Context, cb adaptation.SyncCB) error {
		_, err := cb(ctx, nil, nil)
		return err
	}
	update := func(context.Context, []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) { return nil, nil }
	rt, err := adaptation.New("test-runtime", "2.4.2", sync, update,
		adaptation.WithPluginPath(filepath.Join(dir, "plugins")),
		adaptation.WithPluginConfigPath(filepath.Join(dir, "conf.d")),
		adaptation.WithSocketPath(filepath.Join(dir, "nri.sock")))
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(); err != nil {
		t.Fatal(err)
	}
	return rt
}

// createRequest is what containerd sends at CreateContainer for a Kata pod
// with pod_annotations = ["cdi.k8s.io/*"]: the sandbox carries the
// annotation, the container has a copy of it and, injected from the CRI
// device list, the device itself, twice (a second injection upstream).
func createRequest() *api.CreateContainerRequest {
	pod := &api.PodSandbox{Id: "pod1", Name: "vm", Namespace: "default",
		Annotations: map[string]string{"cdi.k8s.io/sriov-cdi.io_pod": devVF0}}
	ctr := injected(map[string]string{"cdi.k8s.io/sriov-cdi.io_pod": devVF0, "io.kubernetes.cri.container-name": "app"}, dev("/dev/vfio/41", 1))
	ctr.PodSandboxId = pod.Id
	return &api.CreateContainerRequest{Pod: pod, Container: ctr}
}

type adjusted struct {
	Annotations map[string]string
	Devices     []*api.LinuxDevice
}

// awaitAdjustment sends CreateContainer until a plugin answers (plugins
// join the runtime asynchronously) and returns the adjustment.
func awaitAdjustment(t *testing.T, rt *adaptation.Adaptation) *api.ContainerAdjustment {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := rt.CreateContainer(context.Background(), createRequest())
		if err != nil {
			t.Fatalf("CreateContainer: %v", err)
		}
		if adj := resp.GetAdjust(); len(adj.GetAnnotations()) > 0 || len(adj.GetLinux().GetDevices()) > 0 {
			return adj
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the plugin never adjusted a container")
	return nil
}

// TestPluginAgainstNRIRuntime runs the plugin (Run, as `sriov-cdi nri`
// does) against the real NRI runtime side in-process: started before the
// runtime, it connects once the runtime listens; the runtime relays its
// adjustment; after a runtime restart the plugin comes back.
func TestPluginAgainstNRIRuntime(t *testing.T) {
	// Not t.TempDir(): Unix socket paths must stay short.
	dir, err := os.MkdirTemp("", "nri-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	// The in-process runtime's Stop does not close plugin connections (a
	// real runtime's exit does): track them to cut them.
	var mu sync.Mutex
	var conns []net.Conn
	dial := func(path string) (net.Conn, error) {
		c, err := net.Dial("unix", path)
		if err == nil {
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
		return c, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, zaptest.NewLogger(t), testCache(t), Options{SocketPath: filepath.Join(dir, "nri.sock"), RetryInterval: 20 * time.Millisecond, Dial: dial})
	}()

	check := func(when string, adj *api.ContainerAdjustment) {
		t.Helper()
		// The runtime also fills in empty fields; compare what we set.
		got := adjusted{adj.GetAnnotations(), adj.GetLinux().GetDevices()}
		want := adjusted{map[string]string{"-cdi.k8s.io/sriov-cdi.io_pod": ""}, []*api.LinuxDevice{dev("/dev/vfio/41", 1)}}
		if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
			t.Errorf("adjustment from the runtime %s (-want +got):\n%s", when, diff)
		}
	}
	// The plugin starts before the runtime listens: it retries.
	time.Sleep(50 * time.Millisecond)
	rt := startRuntime(t, dir)
	check("", awaitAdjustment(t, rt))

	// containerd restarts: the plugin reconnects to the new instance.
	rt.Stop()
	mu.Lock()
	for _, c := range conns {
		c.Close()
	}
	mu.Unlock()
	rt = startRuntime(t, dir)
	check("after it restarted", awaitAdjustment(t, rt))

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run() = %v, want nil after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run() did not return after cancel")
	}
	rt.Stop()
}

// quiet drops the log of the in-process runtime side (NRI's package-level
// logger, which the runtime uses); the plugin logs through zaptest.
type quiet struct{}

func (quiet) Debugf(context.Context, string, ...any) {}
func (quiet) Infof(context.Context, string, ...any)  {}
func (quiet) Warnf(context.Context, string, ...any)  {}
func (quiet) Errorf(context.Context, string, ...any) {}

func TestMain(m *testing.M) {
	nrilog.Set(quiet{})
	os.Exit(m.Run())
}

// TestCreateContainerDefaultScope: by default the plugin removes only our
// annotation, leaves another vendor's (which the sandbox also carries)
// alone, and logs two entries for one device path with different numbers
// as a conflict instead of folding them.
func TestCreateContainerDefaultScope(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	p := NewPlugin(zap.New(core), testCache(t), Policy{})
	ann := map[string]string{"cdi.k8s.io/sriov-cdi.io_pod": devVF0, "cdi.k8s.io/gpu": devGPU}
	pod := &api.PodSandbox{Id: "pod1", Name: "vm", Namespace: "default", Annotations: ann}
	ctr := injected(maps.Clone(ann), dev("/dev/vfio/41", 2))
	adj, updates, err := p.CreateContainer(context.Background(), pod, ctr)
	if err != nil || updates != nil {
		t.Fatalf("CreateContainer() = _, %v, %v", updates, err)
	}
	want := &api.ContainerAdjustment{Annotations: map[string]string{"-cdi.k8s.io/sriov-cdi.io_pod": ""}}
	if diff := cmp.Diff(want, adj, protocmp.Transform()); diff != "" {
		t.Errorf("adjustment (-want +got):\n%s", diff)
	}
	type logLine struct {
		Level   zapcore.Level
		Message string
		Fields  map[string]any
	}
	var got []logLine
	for _, e := range logs.All() {
		f := e.ContextMap()
		delete(f, "reason")
		got = append(got, logLine{e.Level, e.Message, f})
	}
	ctxFields := func(kv ...any) map[string]any {
		m := map[string]any{"pod": "default/vm", "container": "app"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	wantLogs := []logLine{
		{zap.InfoLevel, "removing CDI annotation so it is not injected again", ctxFields("annotation", "cdi.k8s.io/sriov-cdi.io_pod")},
		{zap.DebugLevel, "keeping CDI annotation", ctxFields("annotation", "cdi.k8s.io/gpu")},
		{zap.WarnLevel, "conflicting entries for one device path; left as they are", ctxFields("device", "/dev/vfio/41",
			"entries", []any{"c 243:1", "c 243:2"})},
	}
	if diff := cmp.Diff(wantLogs, got); diff != "" {
		t.Errorf("logs (-want +got):\n%s", diff)
	}
}
