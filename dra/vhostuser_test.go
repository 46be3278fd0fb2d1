package dra

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	rspec "github.com/opencontainers/runtime-spec/specs-go"
	cdilib "tags.cncf.io/container-device-interface/pkg/cdi"
)

const vhostCfg = `
resourcePrefix: example.com
pools:
  - name: vhu
    api: dra
    mode: vhost-user
    vhostUser: {count: 2, baseDir: $DIR/vhu, numaNode: 0, permissions: "0750"}
`

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// shortDir is a temporary directory with a short path: a DRA slot's
// socket path carries the claim UID and must fit a unix socket address.
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("/tmp", "vu")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// A slot of a DRA vhost-user pool: published as slot-N, prepared into a
// per-claim directory the claim's CDI spec mounts (resolved by the real
// CDI library into an OCI spec), exclusive, reconciled after a restart
// and removed by an unprepare in the new process.
func TestPrepareVhostUserSlotMountsReconcilesAndUnprepares(t *testing.T) {
	dir := shortDir(t)
	base := filepath.Join(dir, "vhu")
	if err := os.Mkdir(base, 0o755); err != nil {
		t.Fatal(err)
	}
	r := newRigWith(t, strings.ReplaceAll(vhostCfg, "$DIR", dir))

	// Published: one device per slot, named by the slot.
	var devs []string
	for _, s := range r.published(t).Pools["vhu"].Slices {
		for _, d := range s.Devices {
			devs = append(devs, d.Name)
		}
	}
	if diff := cmp.Diff([]string{"slot-0", "slot-1"}, devs); diff != "" {
		t.Fatalf("published devices (-want +got):\n%s", diff)
	}

	c1 := r.claim(t, "c1", [2]string{"vhu", "slot-0"})
	resp := r.prepare(t, c1)
	if resp.GetError() != "" {
		t.Fatalf("prepare: %s", resp.GetError())
	}
	id := "example.com/vhu=uid-c1_slot-0"
	if diff := cmp.Diff([]string{id}, ourCDIIDs(resp)); diff != "" {
		t.Fatalf("CDI device IDs (-want +got):\n%s", diff)
	}
	hostDir := filepath.Join(base, "sriov-cdi-dra.vhu.uid-c1-slot-0")
	st, err := os.Stat(hostDir)
	if err != nil || !st.IsDir() || st.Mode().Perm() != 0o750 {
		t.Fatalf("claim directory %s: %v, %v", hostDir, st, err)
	}

	// The runtime's view: the OCI spec gets the mount and the variables.
	cache, err := cdilib.NewCache(cdilib.WithSpecDirs(r.cdiDir), cdilib.WithAutoRefresh(false))
	if err != nil {
		t.Fatal(err)
	}
	oci := &rspec.Spec{Process: &rspec.Process{}}
	if unresolved, err := cache.InjectDevices(oci, id); err != nil {
		t.Fatalf("inject %s: %v (unresolved %v)", id, err, unresolved)
	}
	if !slices.ContainsFunc(oci.Mounts, func(m rspec.Mount) bool {
		return m.Source == hostDir && m.Destination == "/var/run/vhost-user/slot-0" && slices.Contains(m.Options, "rbind")
	}) {
		t.Errorf("OCI mounts %+v lack %s at /var/run/vhost-user/slot-0", oci.Mounts, hostDir)
	}
	for _, e := range []string{
		"SRIOV_CDI_VHOSTUSER_EXAMPLE_COM_VHU_SLOT_0=/var/run/vhost-user/slot-0/vhost.sock",
		"SRIOV_CDI_VHOSTUSER_EXAMPLE_COM_VHU=/var/run/vhost-user/slot-0/vhost.sock",
	} {
		if !slices.Contains(oci.Process.Env, e) {
			t.Errorf("OCI env %v lacks %s", oci.Process.Env, e)
		}
	}
	// The device-info file (type vhost-user) and the KEP-5304 metadata.
	info := filepath.Join(r.dir, "devinfo", "example.com-vhu-uid-c1-slot-0-device.json")
	if b, err := os.ReadFile(info); err != nil || !strings.Contains(string(b), `"type":"vhost-user"`) || !strings.Contains(string(b), `"path":"/var/run/vhost-user/slot-0/vhost.sock"`) {
		t.Errorf("device-info %s: %s, %v", info, b, err)
	}
	md := findFile(t, r.pluginDir, "metadata.json")
	if b, _ := os.ReadFile(md); !strings.Contains(string(b), `"example.com/socketPath"`) || strings.Contains(string(b), "pciBusID") {
		t.Errorf("metadata %s: want socketPath and no pciBusID:\n%s", md, b)
	}

	// The slot prepared for c1 is refused to c2, and c2 gets no directory.
	c2 := r.claim(t, "c2", [2]string{"vhu", "slot-0"})
	if e := r.prepare(t, c2).GetError(); !strings.Contains(e, "already prepared for claim ns/c1 (UID uid-c1)") {
		t.Errorf("conflicting prepare error = %q", e)
	}
	if exists(filepath.Join(base, "sriov-cdi-dra.vhu.uid-c2-slot-0")) {
		t.Error("a refused claim got a directory")
	}
	// Bad device names.
	if e := r.prepare(t, r.claim(t, "c3", [2]string{"vhu", "pci-0000-01-00-1"})).GetError(); !strings.Contains(e, `not a slot of vhost-user pool "vhu"`) {
		t.Errorf("non-slot device error = %q", e)
	}
	if e := r.prepare(t, r.claim(t, "c4", [2]string{"vhu", "slot-2"})).GetError(); !strings.Contains(e, "the pool has no such device now") {
		t.Errorf("slot beyond count error = %q", e)
	}

	// The container made its socket; an orphan of a claim not prepared,
	// a device-plugin slot directory and a foreign file lie around.
	if err := os.WriteFile(filepath.Join(hostDir, "vhost.sock"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	orphan := filepath.Join(base, "sriov-cdi-dra.vhu.uid-gone-slot-1")
	dpDir := filepath.Join(base, "sriov-cdi.vhu.slot-1")
	foreign := filepath.Join(base, "foreign")
	for _, d := range []string{filepath.Join(orphan, "sub"), dpDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(foreign, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	// Restart: the orphan goes, the held directory and its socket stay.
	r.stop()
	r.start(t)
	if exists(orphan) {
		t.Error("reconcile kept the directory of a claim not prepared")
	}
	for _, p := range []string{filepath.Join(hostDir, "vhost.sock"), dpDir, foreign} {
		if !exists(p) {
			t.Errorf("reconcile removed %s", p)
		}
	}
	// The new process unprepares from the checkpoint.
	if e := r.unprepare(t, c1); e != "" {
		t.Fatalf("unprepare after restart: %s", e)
	}
	for _, p := range []string{hostDir, info} {
		if exists(p) {
			t.Errorf("%s left after unprepare", p)
		}
	}
	if files, _ := filepath.Glob(filepath.Join(r.cdiDir, "sriov-cdi-dra_*")); len(files) != 0 {
		t.Errorf("CDI specs left after unprepare: %v", files)
	}
	// Now c2 may have the slot, in a directory of its own.
	if e := r.prepare(t, c2).GetError(); e != "" {
		t.Errorf("prepare after the first claim went: %s", e)
	}
	if !exists(filepath.Join(base, "sriov-cdi-dra.vhu.uid-c2-slot-0")) {
		t.Error("c2's directory missing")
	}
}

// A missing base directory: a clear error and nothing made.
func TestPrepareVhostUserMissingBase(t *testing.T) {
	dir := shortDir(t)
	r := newRigWith(t, strings.ReplaceAll(vhostCfg, "$DIR", dir))
	e := r.prepare(t, r.claim(t, "c1", [2]string{"vhu", "slot-1"})).GetError()
	if !strings.Contains(e, "does not exist") || !strings.Contains(e, "vhostUser.baseDir") {
		t.Errorf("prepare error = %q", e)
	}
	if files, _ := filepath.Glob(filepath.Join(r.cdiDir, "*")); len(files) != 0 {
		t.Errorf("files left: %v", files)
	}
	if exists(filepath.Join(dir, "vhu")) {
		t.Error("the base directory was created")
	}
}
