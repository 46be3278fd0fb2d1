package cli

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	ucli "github.com/urfave/cli/v3"
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
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	app := &ucli.Command{Name: "sriov-cdi", Commands: []*ucli.Command{pluginCommand()}, ExitErrHandler: func(context.Context, *ucli.Command, error) {}}
	done := make(chan error, 1)
	go func() {
		done <- app.Run(ctx, []string{"sriov-cdi", "plugin", "--config", e.cfg,
			"--sysfs-root", filepath.Join(e.dir, "sys"), "--dev-root", filepath.Join(e.dir, "dev"),
			"--state-file", e.state, "--device-plugin-dir", dp, "--cdi-dir", filepath.Join(e.dir, "cdi"),
			"--device-info-dir", "", "--pod-resources-socket", "", "--health-addr", "", "--uevents=false", "--log-level", "error"})
	}()
	// Both pools serve (their sockets appear; no kubelet runs, so they are
	// not registered).
	deadline := time.Now().Add(20 * time.Second)
	for {
		socks, _ := filepath.Glob(filepath.Join(dp, "sriov-cdi-*.sock"))
		if len(socks) == 2 {
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
	cancel()
	if err := <-done; err != nil {
		t.Errorf("plugin: %v", err)
	}
	if b, _ := os.ReadFile(e.state); string(b) != `{"version": 1, "devices": [{"address": "0000:01:0` {
		t.Errorf("state file rewritten: %s", b)
	}
	if d := e.driver(t, "0000:01:00.1"); d != "iavf" {
		t.Errorf("0000:01:00.1 on %q, want iavf", d)
	}
}
