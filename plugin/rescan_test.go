package plugin

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/sriov-cdi/sriov-cdi/sysfs"
	"github.com/sriov-cdi/sriov-cdi/sysfs/sysfstest"
)

// TestQuietTick: a periodic rescan is skipped only while both event
// sources listen and the host's fingerprint is the last full scan's, and
// never more than fullRescanEvery-1 times in a row.
func TestQuietTick(t *testing.T) {
	dir := t.TempDir()
	host := filepath.Join(dir, "host")
	b := sysfstest.SRIOVNICHost(host, 1, 4)
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "cfg", "config.yaml")
	writeConfig(t, cfg, `pools: [{name: vf, selectors: {devices: ["154c"]}}]`)
	dp := filepath.Join(dir, "dp")
	if err := os.MkdirAll(dp, 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := NewManager(Options{ConfigPath: cfg, Root: sysfs.Root{Sys: b.Sys(), Dev: b.Dev()}, DevicePluginDir: dp, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := m.replan(ctx, nil); err != nil {
		t.Fatal(err)
	}
	defer m.shutdown()
	if m.quietTick() {
		t.Error("skipped a tick with no event source listening")
	}
	m.ueventsUp.Store(true)
	if m.quietTick() {
		t.Error("skipped a tick with uevents but no network events")
	}
	m.netEventsUp.Store(true)
	if !m.quietTick() {
		t.Error("scanned a quiet host with both event sources listening")
	}
	if err := sysfstest.SetDriver(host, "0000:01:00.2", ""); err != nil {
		t.Fatal(err)
	}
	if m.quietTick() {
		t.Error("skipped a tick after a driver change whose event was lost")
	}
	// The change announced (a refresh of the function): quiet again.
	if err := m.refreshNow(ctx, []sysfs.Address{"0000:01:00.2"}); err != nil {
		t.Fatal(err)
	}
	if !m.quietTick() {
		t.Error("scanned after a change its event announced")
	}
	if err := m.replan(ctx, nil); err != nil {
		t.Fatal(err)
	}
	skipped := 0
	for m.quietTick() && skipped < 2*fullRescanEvery {
		skipped++
	}
	if skipped != fullRescanEvery-1 {
		t.Errorf("skipped %d ticks in a row, want %d", skipped, fullRescanEvery-1)
	}
}
