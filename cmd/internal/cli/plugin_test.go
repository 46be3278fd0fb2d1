package cli

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	ucli "github.com/urfave/cli/v3"

	"github.com/sriov-cdi/sriov-cdi/plugin/kubelettest"
)

// A truncated state file does not stop the plugin: kernel pools never
// write driver attributes and keep serving; vfio pools refuse Allocate
// with the reason (issue 11.13; plugin/degraded_test.go checks Allocate).
func TestPluginServesWithTruncatedStateFile(t *testing.T) {
	e := newBindEnv(t)
	if err := os.WriteFile(e.state, []byte(`{"version": 1, "devices": [{"address": "0000:01:0`), 0o644); err != nil {
		t.Fatal(err)
	}
	dp := filepath.Join(e.dir, "dp")
	stop := startPlugin(t, e, dp, 2, "--pod-resources-socket", "")
	if err := stop(); err != nil {
		t.Errorf("plugin: %v", err)
	}
	if b, _ := os.ReadFile(e.state); string(b) != `{"version": 1, "devices": [{"address": "0000:01:0` {
		t.Errorf("state file rewritten: %s", b)
	}
	if d := e.driver(t, "0000:01:00.1"); d != "iavf" {
		t.Errorf("0000:01:00.1 on %q, want iavf", d)
	}
}

// startPlugin runs the plugin command on e's fixture until pools sockets
// appear in dp (no kubelet runs, so they are not registered) and returns
// how to stop it (as SIGTERM does) and get its error.
func startPlugin(t *testing.T, e *bindEnv, dp string, pools int, extra ...string) func() error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	app := &ucli.Command{Name: "sriov-cdi", Commands: []*ucli.Command{pluginCommand()}, ExitErrHandler: func(context.Context, *ucli.Command, error) {}}
	done := make(chan error, 1)
	go func() {
		done <- app.Run(ctx, append([]string{"sriov-cdi", "plugin", "--config", e.cfg,
			"--sysfs-root", filepath.Join(e.dir, "sys"), "--dev-root", filepath.Join(e.dir, "dev"),
			"--state-file", e.state, "--device-plugin-dir", dp, "--cdi-dir", filepath.Join(e.dir, "cdi"),
			"--device-info-dir", "", "--health-addr", "", "--uevents=false", "--log-level", "error"}, extra...))
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		socks, _ := filepath.Glob(filepath.Join(dp, "sriov-cdi-*.sock"))
		if len(socks) == pools {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the plugin stopped: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("pools not serving after 20 s: sockets %v", socks)
		}
	}
	return func() error { cancel(); return <-done }
}

// TestPluginStopTrimsSpecs: stopped (SIGTERM), the plugin still reaches
// kubelet's PodResources API — the connection closes after its shutdown —
// and removes the specs of pools with no assigned device (cluster lab s6:
// specs were left because the release watcher closed the connection
// first).
func TestPluginStopTrimsSpecs(t *testing.T) {
	e := newBindEnv(t)
	sock := kubelettest.Serve(t, kubelettest.New())
	stop := startPlugin(t, e, filepath.Join(e.dir, "dp"), 2, "--pod-resources-socket", sock)
	specs := func() []string {
		s, _ := filepath.Glob(filepath.Join(e.dir, "cdi", "sriov-cdi_*"))
		return s
	}
	if len(specs()) == 0 {
		t.Fatal("no CDI spec written while serving")
	}
	if err := stop(); err != nil {
		t.Fatalf("plugin: %v", err)
	}
	if s := specs(); len(s) != 0 {
		t.Errorf("specs of pools with no assigned device left after stop: %v", s)
	}
}
