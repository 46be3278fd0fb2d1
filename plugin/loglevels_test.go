package plugin

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/sriov-cdi/sriov-cdi/sysfs"
	"github.com/sriov-cdi/sriov-cdi/sysfs/sysfstest"
)

// TestPFWithVFsRefusalIsInfo: a PF with VFs enabled is never handed out by
// design (its VFs are); that is information, not a warning.
func TestPFWithVFsRefusalIsInfo(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	h := startHarness(t, 1, 2, `pools: [{name: vf, mode: vfio, selectors: {rootDevices: ["0000:01:00.0"]}}]`, nil, zap.New(core))
	h.registrations(t, 1)
	h.stop()
	var got []string
	for _, e := range logs.FilterMessage("device refused").All() {
		got = append(got, fmt.Sprint(e.Level, " ", e.ContextMap()["device"]))
	}
	if diff := cmp.Diff([]string{"info 0000:01:00.0"}, got); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
}

// TestRegistrationFailureLoggedOncePerOutage: while kubelet is not there,
// each pool says so once, not at every rescan.
func TestRegistrationFailureLoggedOncePerOutage(t *testing.T) {
	dir := t.TempDir()
	b := sysfstest.SRIOVNICHost(filepath.Join(dir, "host"), 2, 2)
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	dpDir := filepath.Join(dir, "dp")
	if err := os.MkdirAll(dpDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "config.yaml")
	writeConfig(t, cfgPath, twoPools)
	core, logs := observer.New(zap.InfoLevel)
	mgr, err := NewManager(Options{
		ConfigPath: cfgPath, Root: sysfs.Root{Sys: b.Sys(), Dev: b.Dev()}, DevicePluginDir: dpDir,
		RescanInterval: 20 * time.Millisecond, Log: zap.New(core),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Run(ctx) }()
	time.Sleep(400 * time.Millisecond) // many rescans without kubelet
	cancel()
	<-done
	got := map[string]int{}
	for _, e := range logs.FilterMessage("registration failed; will retry when kubelet's socket appears").All() {
		if e.Level != zapcore.WarnLevel {
			t.Errorf("level %v, want warn", e.Level)
		}
		got[fmt.Sprint(e.ContextMap()["resource"])]++
	}
	if diff := cmp.Diff(map[string]int{"example.com/vf-a": 1, "example.com/vf-b": 1}, got); diff != "" {
		t.Errorf("warnings per resource (-want +got)\n%s", diff)
	}
}

// optionsOnly answers GetDevicePluginOptions, all kubelet asks when a
// plugin registers.
type optionsOnly struct {
	pluginapi.UnimplementedDevicePluginServer
}

func (optionsOnly) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

// TestRegistrationOutages: the first failure of an outage is the one to
// warn about; a success ends the outage, so the next failure warns again.
func TestRegistrationOutages(t *testing.T) {
	dir := t.TempDir()
	ep := newEndpoint(dir, "example.com/vf", optionsOnly{}, &pluginapi.DevicePluginOptions{}, zap.NewNop())
	if err := ep.serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ep.stop)
	ctx := context.Background()
	var got []bool
	for range 2 {
		if err := ep.register(ctx); err == nil {
			t.Fatal("register without kubelet succeeded")
		}
		got = append(got, ep.failedRegistering())
	}
	k := startFakeKubelet(t, dir)
	if err := ep.register(ctx); err != nil {
		t.Fatal(err)
	}
	k.stop() // closing the listener removes kubelet.sock
	if err := ep.register(ctx); err == nil {
		t.Fatal("register after kubelet left succeeded")
	}
	got = append(got, ep.failedRegistering())
	if diff := cmp.Diff([]bool{true, false, true}, got); diff != "" {
		t.Errorf("first failure of an outage (-want +got)\n%s", diff)
	}
}
