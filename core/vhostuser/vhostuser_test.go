package vhostuser

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/deviceinfo"
)

func testLayout(base string) Layout {
	return Layout{Resource: "example.com/vhu", BaseDir: base, Prefix: "sriov-cdi.vhu.", ContainerDir: "/var/run/vhost-user",
		SocketName: "vhost.sock", SocketMode: config.SocketServer}
}

func newDirs(t *testing.T, base string, opts ...Option) *Dirs {
	t.Helper()
	d, err := New(testLayout(base), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestValidateKey(t *testing.T) {
	for _, tc := range []struct {
		key string
		ok  bool
	}{
		{"slot-0", true}, {"0b3f2c1e-claim_uid.req", true}, {"a", true}, {strings.Repeat("k", MaxKeyLen), true},
		{"", false}, {".", false}, {"..", false}, {"../etc", false}, {"a/b", false}, {"a..b", false}, {".hidden", false},
		{"-x", false}, {"a b", false}, {"a\x00b", false}, {strings.Repeat("k", MaxKeyLen+1), false}, {"slot-0/../../x", false},
	} {
		err := ValidateKey(tc.key)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateKey(%q) = %v, want ok=%v", tc.key, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrBadKey) {
			t.Errorf("ValidateKey(%q): %v does not wrap ErrBadKey", tc.key, err)
		}
	}
}

func TestDescribe(t *testing.T) {
	a, err := testLayout("/run/vhu").Describe("slot-3")
	if err != nil {
		t.Fatal(err)
	}
	want := Allocation{
		Key: "slot-3", HostDir: "/run/vhu/sriov-cdi.vhu.slot-3", HostSocket: "/run/vhu/sriov-cdi.vhu.slot-3/vhost.sock",
		ContainerDir: "/var/run/vhost-user/slot-3", ContainerSocket: "/var/run/vhost-user/slot-3/vhost.sock",
		EnvName: "SRIOV_CDI_VHOSTUSER_EXAMPLE_COM_VHU_SLOT_3",
		Edits: cdispec.ContainerEdits{
			Env: []string{"SRIOV_CDI_VHOSTUSER_EXAMPLE_COM_VHU_SLOT_3=/var/run/vhost-user/slot-3/vhost.sock"},
			Mounts: []*cdispec.Mount{{HostPath: "/run/vhu/sriov-cdi.vhu.slot-3", ContainerPath: "/var/run/vhost-user/slot-3", Type: "bind",
				Options: []string{"rbind", "rw", "nosuid", "nodev", "noexec"}}},
		},
		DeviceInfo: deviceinfo.Info{Type: "vhost-user", Version: "1.1.0", VhostUser: &deviceinfo.VhostUser{Mode: "server", Path: "/var/run/vhost-user/slot-3/vhost.sock"}},
	}
	if diff := cmp.Diff(want, a); diff != "" {
		t.Errorf("Describe (-want +got):\n%s", diff)
	}
	if _, err := testLayout("/run/vhu").Describe("../../etc"); !errors.Is(err, ErrBadKey) {
		t.Errorf("Describe(../../etc) = %v, want ErrBadKey", err)
	}
}

func TestNewRefusesBadLayouts(t *testing.T) {
	for name, mut := range map[string]func(*Layout){
		"relative base":   func(l *Layout) { l.BaseDir = "run/vhu" },
		"unclean base":    func(l *Layout) { l.BaseDir = "/run/../etc" },
		"root base":       func(l *Layout) { l.BaseDir = "/" },
		"prefix slash":    func(l *Layout) { l.Prefix = "../x" },
		"empty prefix":    func(l *Layout) { l.Prefix = "" },
		"socket dotdot":   func(l *Layout) { l.SocketName = ".." },
		"socket slash":    func(l *Layout) { l.SocketName = "a/b" },
		"mode":            func(l *Layout) { l.SocketMode = "both" },
		"container root":  func(l *Layout) { l.ContainerDir = "/" },
		"container dotty": func(l *Layout) { l.ContainerDir = "/a/./b" },
	} {
		l := testLayout("/run/vhu")
		mut(&l)
		if _, err := New(l); err == nil {
			t.Errorf("%s: New accepted %+v", name, l)
		}
	}
}

func isDir(t *testing.T, p string) bool {
	t.Helper()
	fi, err := os.Lstat(p)
	return err == nil && fi.IsDir()
}

func TestPrepareFreshAndRelease(t *testing.T) {
	base := t.TempDir()
	d := newDirs(t, base, WithPermissions(0o750))
	a, err := d.PrepareFresh("slot-0")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(a.HostDir)
	if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o750 {
		t.Fatalf("after PrepareFresh: %v, %v; want a directory with mode 0750", fi, err)
	}
	// A real socket in it, as the container's application makes one.
	l, err := net.Listen("unix", a.HostSocket)
	if err != nil {
		t.Fatal(err)
	}
	l.Close() // Close unlinks the socket: make it again without the listener's cleanup
	l, err = net.Listen("unix", a.HostSocket)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if fi, err := os.Lstat(a.HostSocket); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket: %v, %v", fi, err)
	}

	// Prepare (idempotent) keeps it; PrepareFresh starts empty.
	if _, err := d.Prepare("slot-0"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(a.HostSocket); err != nil {
		t.Errorf("Prepare of a prepared key removed its socket: %v", err)
	}
	if _, err := d.PrepareFresh("slot-0"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(a.HostSocket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("PrepareFresh kept the earlier allocation's socket: %v", err)
	}
	if err := os.MkdirAll(filepath.Join(a.HostDir, "x", "y"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := d.Release("slot-0"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(a.HostDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Release: %v, want the directory gone", err)
	}
	if err := d.Release("slot-0"); err != nil {
		t.Errorf("Release of an absent directory: %v", err)
	}
	if err := d.Release("../x"); !errors.Is(err, ErrBadKey) {
		t.Errorf("Release(../x) = %v, want ErrBadKey", err)
	}
}

func TestOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	d := newDirs(t, t.TempDir(), WithOwner(4321, 8765))
	a, err := d.PrepareFresh("slot-1")
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(a.HostDir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 4321 || st.Gid != 8765 {
		t.Errorf("owner %d:%d, want 4321:8765", st.Uid, st.Gid)
	}
}

// A label the file system refuses (no SELinux) must leave no directory;
// one it takes must read back.
func TestSELinuxLabelAllOrNothing(t *testing.T) {
	const label = "system_u:object_r:container_file_t:s0"
	d := newDirs(t, t.TempDir(), WithSELinuxLabel(label))
	a, err := d.PrepareFresh("slot-0")
	if err != nil {
		if !strings.Contains(err.Error(), "set SELinux label") {
			t.Fatalf("error %v does not say what failed", err)
		}
		if _, serr := os.Lstat(a.HostDir); a.HostDir != "" || !errors.Is(serr, os.ErrNotExist) {
			t.Fatalf("failed Prepare left %q behind", a.HostDir)
		}
		entries, _ := os.ReadDir(d.BaseDir)
		if len(entries) != 0 {
			t.Fatalf("failed Prepare left %v in the base", entries)
		}
		return
	}
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(a.HostDir, selinuxXattr, buf)
	if err != nil || strings.TrimRight(string(buf[:n]), "\x00") != label {
		t.Errorf("label %q, %v; want %q", buf[:n], err, label)
	}
}

func TestBaseMissingOrNotADirectory(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		base, want string
	}{
		{filepath.Join(dir, "missing"), "does not exist: create it"},
		{file, "is not a directory"},
	} {
		d := newDirs(t, tc.base)
		for _, err := range []error{d.Check(), func() error { _, err := d.PrepareFresh("slot-0"); return err }(), func() error { _, err := d.Prepare("slot-0"); return err }()} {
			if !errors.Is(err, ErrBaseMissing) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.base) {
				t.Errorf("base %s: %v; want ErrBaseMissing naming it and %q", tc.base, err, tc.want)
			}
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Error("a missing base was created")
	}
}

// Links planted in the base (named like an allocation) or inside an
// allocation (by the container) are removed as links; their targets
// outside the base are never touched.
func TestSymlinkAttacks(t *testing.T) {
	root := t.TempDir()
	base := filepath.Join(root, "base")
	outside := filepath.Join(root, "outside")
	for _, p := range []string{base, outside} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	precious := filepath.Join(outside, "precious")
	if err := os.WriteFile(precious, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := newDirs(t, base, WithPermissions(0o777))

	// 1. A link where slot-0's directory goes.
	if err := os.Symlink(outside, filepath.Join(base, "sriov-cdi.vhu.slot-0")); err != nil {
		t.Fatal(err)
	}
	for _, prep := range []func(string) (Allocation, error){d.Prepare, d.PrepareFresh} {
		a, err := prep("slot-0")
		if err != nil {
			t.Fatal(err)
		}
		if !isDir(t, a.HostDir) {
			t.Errorf("%s is not a real directory", a.HostDir)
		}
		if err := os.Remove(a.HostDir); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(outside, a.HostDir); err != nil {
			t.Fatal(err)
		}
	}
	// Release and Reconcile remove the link itself.
	if err := d.Release("slot-0"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(base, "sriov-cdi.vhu.slot-0")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("link not removed: %v", err)
	}

	// 2. Links made inside an allocation by its container.
	a, err := d.PrepareFresh("slot-1")
	if err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"dir-link": outside, "file-link": precious, "root-link": "/", "dangling": "/nonexistent"} {
		if err := os.Symlink(target, filepath.Join(a.HostDir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(a.HostDir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(a.HostDir, "sub", "up")); err != nil {
		t.Fatal(err)
	}
	if err := d.Release("slot-1"); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(precious); err != nil || string(b) != "keep" {
		t.Fatalf("a file outside the base was touched: %q, %v", b, err)
	}
	if !isDir(t, outside) {
		t.Fatal("the outside directory is gone")
	}
	if _, err := os.Lstat(a.HostDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("allocation directory not removed: %v", err)
	}

	// 3. The chmod of Prepare goes through the descriptor: the outside
	// directory keeps its mode even when it was linked in as slot-2.
	if err := os.Symlink(outside, filepath.Join(base, "sriov-cdi.vhu.slot-2")); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Prepare("slot-2"); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(outside); fi.Mode().Perm() != 0o755 {
		t.Errorf("outside directory mode changed to %v", fi.Mode().Perm())
	}
}

// Reconcile after a restart: directories of held keys stay (with their
// sockets), the others go, foreign entries and other pools' directories
// are left alone.
func TestReconcileAfterRestart(t *testing.T) {
	base := t.TempDir()
	before := newDirs(t, base)
	for _, k := range []string{"slot-0", "slot-1", "slot-2"} {
		a, err := before.PrepareFresh(k)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(a.HostSocket, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	foreign := []string{"ovs-port-7", "sriov-cdi.other.slot-0", "sriov-cdi.vhu.", "sriov-cdi.vhu...x", "readme.txt"}
	for _, f := range foreign {
		if err := os.Mkdir(filepath.Join(base, f), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	after := newDirs(t, base) // a new process: no memory of the first
	keys, err := after.Keys()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"slot-0", "slot-1", "slot-2"}, keys); diff != "" {
		t.Errorf("Keys (-want +got):\n%s", diff)
	}
	removed, err := after.Reconcile(func(k string) bool { return k == "slot-1" })
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"slot-0", "slot-2"}, removed); diff != "" {
		t.Errorf("removed (-want +got):\n%s", diff)
	}
	var left []string
	entries, _ := os.ReadDir(base)
	for _, e := range entries {
		left = append(left, e.Name())
	}
	want := append([]string{"sriov-cdi.vhu.slot-1"}, foreign...)
	if diff := cmp.Diff(want, left, cmpSorted); diff != "" {
		t.Errorf("left in base (-want +got):\n%s", diff)
	}
	if _, err := os.Lstat(filepath.Join(base, "sriov-cdi.vhu.slot-1", "vhost.sock")); err != nil {
		t.Errorf("held allocation lost its socket: %v", err)
	}
}

var cmpSorted = cmp.Transformer("sort", func(in []string) []string {
	out := append([]string(nil), in...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
})

// A release decided from an answer asked before an allocation made the
// directory must not remove it.
func TestReleaseUnchangedSince(t *testing.T) {
	d := newDirs(t, t.TempDir())
	asked := time.Now().Add(-time.Minute)
	if _, err := d.PrepareFresh("slot-0"); err != nil {
		t.Fatal(err)
	}
	at, ok, err := d.ChangedAt("slot-0")
	if err != nil || !ok || at.Before(asked) {
		t.Fatalf("ChangedAt = %v, %v, %v", at, ok, err)
	}
	if removed, err := d.ReleaseUnchangedSince("slot-0", asked); err != nil || removed {
		t.Fatalf("released a directory made after the answer: %v, %v", removed, err)
	}
	if removed, err := d.ReleaseUnchangedSince("slot-0", at.Add(time.Second)); err != nil || !removed {
		t.Fatalf("kept a directory unchanged since the answer: %v, %v", removed, err)
	}
	if _, ok, _ := d.ChangedAt("slot-0"); ok {
		t.Error("directory still there")
	}
	if removed, err := d.ReleaseUnchangedSince("slot-9", time.Now()); err != nil || removed {
		t.Errorf("absent key: %v, %v", removed, err)
	}
}

func TestForPool(t *testing.T) {
	c, err := config.Parse("c.yaml", []byte(`pools: [{name: vhu, mode: vhost-user, vhostUser: {count: 2, baseDir: /run/vhu, owner: "107:108", permissions: "0750", socketMode: client}}]`))
	if err != nil {
		t.Fatal(err)
	}
	d, err := ForPool(c.Resource(&c.Pools[0]), &c.Pools[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.uid != 107 || d.gid != 108 || d.perm != 0o750 || d.Prefix != "sriov-cdi.vhu." || d.SocketMode != config.SocketClient {
		t.Errorf("ForPool: %+v", d)
	}
	if _, err := ForPool("x/y", &config.Pool{Name: "k", Mode: config.ModeKernel}, nil); err == nil {
		t.Error("ForPool accepted a kernel pool")
	}
}
