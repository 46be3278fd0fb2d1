package binding

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeProc writes a /proc with processes holding the given fd targets.
func fakeProc(t *testing.T, procs map[string][]string) string {
	t.Helper()
	root := t.TempDir()
	for pid, targets := range procs {
		fd := filepath.Join(root, pid, "fd")
		if err := os.MkdirAll(fd, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, tgt := range targets {
			if err := os.Symlink(tgt, filepath.Join(fd, string(rune('3'+i)))); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root
}

func TestNodesInUse(t *testing.T) {
	proc := fakeProc(t, map[string][]string{
		"1":    {"/dev/null", "socket:[123]"},
		"4242": {"/dev/vfio/vfio", "/dev/vfio/4", "/dev/kvm"},
		"77":   {"/dev/vfio/40"},
		"self": {"/dev/vfio/5"}, // not a PID
	})
	if err := os.MkdirAll(filepath.Join(proc, "99"), 0o755); err != nil { // no fd dir (kernel thread, gone)
		t.Fatal(err)
	}
	got, err := NodesInUse(proc, []string{"/dev/vfio/4", "/dev/vfio/5", "/dev/vfio/6", ""})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]int{"/dev/vfio/4": 4242}, got); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
	if _, err := NodesInUse(filepath.Join(proc, "missing"), []string{"/dev/vfio/4"}); err == nil {
		t.Error("an unreadable proc root must be an error (cannot tell)")
	}
}
