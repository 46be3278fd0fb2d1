package binding

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// With DegradeOnBadStateFile (the plugin), an unusable state file does not
// stop everything: kernel pools pass ForAllocate untouched, every vfio
// operation fails with the reason, nothing is written, and the reason is
// logged once at start with the file and what to do (issue 11.13).
func TestUnusableStateFileDegrades(t *testing.T) {
	const truncated = `{"version": 1, "devices": [{"address": "0000:01:0`
	e := newEnv(t, 2)
	if err := os.MkdirAll(strings.TrimSuffix(e.state, "/state.json"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.state, []byte(truncated), 0o644); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	m, err := NewManager(e.root, e.state, zap.New(core), WithWriter(e.k), WithFault(""), DegradeOnBadStateFile())
	if err != nil {
		t.Fatalf("NewManager: %v", err)
	}
	reason := m.Unusable()
	if !errors.Is(reason, ErrStateFile) || !strings.Contains(reason.Error(), e.state) {
		t.Fatalf("Unusable() = %v, want ErrStateFile naming %s", reason, e.state)
	}
	ctx := context.Background()
	kunits := []pool.Unit{{ID: "0000:01:00.1", Members: []sysfs.Address{"0000:01:00.1"}}}
	if _, err := (ForAllocate{m}).Prepare(ctx, &e.cfg.Pools[1], kunits); err != nil {
		t.Errorf("kernel pool refused: %v", err)
	}
	pc, units := e.plan("vf")
	for name, op := range map[string]func() error{
		"Prepare": func() error {
			_, err := ForAllocate{m}.Prepare(ctx, pc, units[:1])
			return err
		},
		"Release":    func() error { return m.Release(ctx, []sysfs.Address{units[0].ID}) },
		"RestoreAll": func() error { return m.RestoreAll(ctx) },
		"Restore":    func() error { return m.Restore(ctx, []sysfs.Address{units[0].ID}) },
	} {
		err := op()
		if !errors.Is(err, ErrStateFile) || !strings.Contains(err.Error(), e.state) || !strings.Contains(err.Error(), "restore --all") {
			t.Errorf("%s: got %v, want the state file's reason with what to do", name, err)
		}
	}
	if w := e.k.Writes(); len(w) != 0 {
		t.Errorf("sysfs writes: %v", w)
	}
	if b, _ := os.ReadFile(e.state); string(b) != truncated {
		t.Errorf("state file rewritten: %s", b)
	}
	got := logs.FilterMessageSnippet("state file").All()
	if len(got) != 1 {
		t.Fatalf("want the reason logged once at start, got %d lines: %+v", len(got), logs.All())
	}
	if f := got[0].ContextMap(); f["path"] != e.state || !strings.Contains(got[0].Message+" "+f["fix"].(string), "restore --all") {
		t.Errorf("log line lacks the path or the fix: %+v", got[0])
	}

	// Without the option (bind/restore commands) the file stops the command.
	if _, err := NewManager(e.root, e.state, zap.NewNop(), WithWriter(e.k), WithFault("")); !errors.Is(err, ErrStateFile) {
		t.Errorf("strict NewManager: got %v, want ErrStateFile", err)
	}
}
