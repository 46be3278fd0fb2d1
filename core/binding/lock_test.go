package binding

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// holdStateLock takes the state file's lock through its own open file
// description, as another process (an operator's `sriov-cdi restore`)
// would: flock conflicts between descriptions even within one process.
// The returned func releases it.
func holdStateLock(t *testing.T, statePath string) func() {
	t.Helper()
	f, err := os.OpenFile(statePath+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		t.Fatalf("take the state lock: %v", err)
	}
	return func() { f.Close() }
}

// A cancelled operation waiting for the state lock gives up at once and,
// when the lock frees later, writes nothing: no state file change, no sysfs
// write (issue 11.4: after Ctrl-C the bind used to happen anyway).
func TestLockWaitHonoursContext(t *testing.T) {
	e := newEnv(t, 2)
	m := e.manager()
	pc, units := e.plan("vf")
	ctx0 := context.Background()
	// One unit bound before: Release and RestoreAll have work to do.
	if err := m.Prepare(ctx0, pc, units[1:2]); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(e.state)
	if err != nil {
		t.Fatal(err)
	}
	writesBefore := len(e.k.Writes())

	for name, op := range map[string]func(ctx context.Context) error{
		"Prepare":    func(ctx context.Context) error { return m.Prepare(ctx, pc, units[:1]) },
		"Release":    func(ctx context.Context) error { return m.Release(ctx, []sysfs.Address{units[1].ID}) },
		"RestoreAll": func(ctx context.Context) error { return m.RestoreAll(ctx) },
	} {
		t.Run(name, func(t *testing.T) {
			release := holdStateLock(t, e.state)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- op(ctx) }()
			cancel()
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				release()
				err = <-done
				t.Errorf("%s still waited for the state lock 10 s after its context was cancelled (returned %v once the lock was freed)", name, err)
			}
			release()
			if !errors.Is(err, context.Canceled) {
				t.Errorf("got %v, want context.Canceled", err)
			}
			after, rerr := os.ReadFile(e.state)
			if rerr != nil {
				t.Fatal(rerr)
			}
			if !bytes.Equal(before, after) {
				t.Errorf("state file changed by a cancelled %s:\n%s", name, after)
			}
			if w := e.k.Writes(); len(w) != writesBefore {
				t.Errorf("a cancelled %s wrote sysfs: %v", name, w[writesBefore:])
			}
		})
	}
	// The lock is free again: the next operation proceeds.
	if err := m.Prepare(ctx0, pc, units[:1]); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(allOn(vfio, vfAddrs[:2]...), e.drivers(vfAddrs[:2]...)); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
}
