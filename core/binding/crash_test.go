package binding

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
)

// childDirEnv makes the test binary act as the crashing process: it binds
// two units of the fixture tree in that directory under the fault hook
// from SRIOV_CDI_FAULT, which kills it between two writes.
const childDirEnv = "SRIOV_CDI_TEST_CRASH_CHILD_DIR"

func crashChild(t *testing.T, dir string) {
	e := openEnv(t, dir)
	// No WithFault: the hook comes from the environment, as in production.
	m, err := NewManager(e.root, e.state, zap.NewNop(), WithWriter(e.k), WithTimeout(5*time.Second), WithPollInterval(time.Millisecond))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(1)
	}
	pc, units := e.plan("vf")
	if err := m.Prepare(context.Background(), pc, units[:2]); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// TestCrashBetweenWrites kills a process between every pair of writes of a
// two-unit Prepare (6 writes: override, unbind, probe per VF) and checks
// that the next Manager's reconciliation puts every function back on its
// original driver, with no record left. Past the last write the child
// finishes, and reconciliation keeps the devices bound.
func TestCrashBetweenWrites(t *testing.T) {
	if dir := os.Getenv(childDirEnv); dir != "" {
		crashChild(t, dir)
		return
	}
	specs := []string{"after-unbind", "after-set-override", "after-probe"}
	for n := 1; n <= 7; n++ {
		specs = append(specs, fmt.Sprintf("exit-after-write:%d", n))
	}
	for _, spec := range specs {
		t.Run(spec, func(t *testing.T) {
			e := newEnv(t, 2)
			cmd := exec.Command(os.Args[0], "-test.run=^TestCrashBetweenWrites$", "-test.count=1")
			cmd.Env = append(os.Environ(), childDirEnv+"="+e.dir, FaultEnv+"="+spec)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			crashed := errors.As(err, &ee) && ee.ExitCode() == FaultExitCode
			if err != nil && !crashed {
				t.Fatalf("child failed: %v\n%s", err, out)
			}
			// A new process starts: a fresh fake kernel over the tree the
			// child left, and a Manager reconciling the state file.
			e = openEnv(t, e.dir)
			m := e.manager()
			want := allOn(iavf, vfAddrs[:2]...)
			if !crashed {
				want = allOn(vfio, vfAddrs[:2]...)
			}
			if diff := cmp.Diff(want, e.drivers(vfAddrs[:2]...)); diff != "" {
				t.Errorf("crashed=%v; after reconcile (-want +got)\n%s\nchild output:\n%s", crashed, diff, out)
			}
			if crashed && len(m.Records()) != 0 {
				t.Errorf("records left after reconcile: %+v", m.Records())
			}
			if spec == "exit-after-write:7" && crashed {
				t.Errorf("a two-unit bind makes 6 writes; the 7th should not exist")
			}
			if spec == "exit-after-write:6" && !crashed {
				t.Errorf("want a crash after the 6th write")
			}
		})
	}
}
