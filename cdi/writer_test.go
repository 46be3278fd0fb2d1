package cdi

import (
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	cdilib "tags.cncf.io/container-device-interface/pkg/cdi"
	cdispec "tags.cncf.io/container-device-interface/specs-go"
)

func kernelSpec(kind string, ids ...string) *cdispec.Spec {
	s := &cdispec.Spec{Kind: kind}
	for _, id := range ids {
		s.Devices = append(s.Devices, cdispec.Device{Name: id, ContainerEdits: cdispec.ContainerEdits{Env: []string{"PCIDEVICE_X_" + strings.NewReplacer(":", "_", ".", "_").Replace(id) + "=" + id}}})
	}
	s.Version, _ = cdispec.MinimumRequiredVersion(s)
	return s
}

// fileState is what a write would change.
type fileState struct {
	Ino     uint64
	ModTime time.Time
	Mode    fs.FileMode
	Content string
}

func dirState(t *testing.T, dir string) map[string]fileState {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]fileState{}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = fileState{Ino: fi.Sys().(*syscall.Stat_t).Ino, ModTime: fi.ModTime(), Mode: fi.Mode().Perm(), Content: string(b)}
	}
	return out
}

func names(m map[string]fileState) []string { return slices.Sorted(maps.Keys(m)) }

func sortedCopy(s []string) []string { return slices.Sorted(slices.Values(s)) }

func TestWriterSync(t *testing.T) {
	dir := t.TempDir()
	// Files that are not ours, some with confusingly similar names.
	foreign := map[string]string{
		"nvidia.yaml":               "---\ncdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: \"0\"\n  containerEdits:\n    env: [A=1]\n",
		"sriov-cdi.io-vf.yaml":      "not ours: no prefix",
		"sriov-cdi_notes.txt":       "not a spec file",
		"sriov-cdi-other_vf.yaml":   "other prefix",
		"unrelated_sriov-cdi_.json": "{}",
	}
	for n, c := range foreign {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	w, err := NewWriter(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := kernelSpec("sriov-cdi.io/a", "0000:3b:02.0", "0000:3b:02.1")
	b := kernelSpec("sriov-cdi.io/b", "0000:5e:00.0")

	// 1. First sync writes both, world-readable.
	changed, err := w.Sync([]*cdispec.Spec{a, b})
	if err != nil || !changed {
		t.Fatalf("first Sync() = %v, %v; want true, nil", changed, err)
	}
	s1 := dirState(t, dir)
	wantNames := sortedCopy(append([]string{"sriov-cdi_sriov-cdi.io_a.json", "sriov-cdi_sriov-cdi.io_b.json"}, keys(foreign)...))
	if diff := cmp.Diff(wantNames, names(s1)); diff != "" {
		t.Fatalf("files after first sync (-want +got):\n%s", diff)
	}
	for _, n := range []string{"sriov-cdi_sriov-cdi.io_a.json", "sriov-cdi_sriov-cdi.io_b.json"} {
		if s1[n].Mode != 0o644 {
			t.Errorf("%s: mode %v, want 0644", n, s1[n].Mode)
		}
	}

	// 2. The same specs again: no write at all (same inode, same mtime).
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, n := range []string{"sriov-cdi_sriov-cdi.io_a.json", "sriov-cdi_sriov-cdi.io_b.json"} {
		if err := os.Chtimes(filepath.Join(dir, n), old, old); err != nil {
			t.Fatal(err)
		}
	}
	before := dirState(t, dir)
	changed, err = w.Sync([]*cdispec.Spec{kernelSpec("sriov-cdi.io/a", "0000:3b:02.0", "0000:3b:02.1"), b})
	if err != nil || changed {
		t.Fatalf("no-change Sync() = %v, %v; want false, nil", changed, err)
	}
	if diff := cmp.Diff(before, dirState(t, dir)); diff != "" {
		t.Fatalf("no-change Sync touched files (-before +after):\n%s", diff)
	}

	// 3. A mode someone broke is repaired without rewriting.
	pa := filepath.Join(dir, "sriov-cdi_sriov-cdi.io_a.json")
	if err := os.Chmod(pa, 0o600); err != nil {
		t.Fatal(err)
	}
	if changed, err = w.Sync([]*cdispec.Spec{a, b}); err != nil || changed {
		t.Fatalf("mode-repair Sync() = %v, %v; want false, nil", changed, err)
	}
	after := dirState(t, dir)
	if after[filepath.Base(pa)].Mode != 0o644 || after[filepath.Base(pa)].Ino != before[filepath.Base(pa)].Ino {
		t.Errorf("mode repair: got %+v, want mode 0644 and the same inode", after[filepath.Base(pa)])
	}

	// 4. A changed spec is rewritten, the other is not; a vanished pool's
	// spec is removed; foreign files stay.
	a2 := kernelSpec("sriov-cdi.io/a", "0000:3b:02.0")
	c := kernelSpec("sriov-cdi.io/c", "0000:af:00.0")
	if changed, err = w.Sync([]*cdispec.Spec{a2, c}); err != nil || !changed {
		t.Fatalf("Sync(changed) = %v, %v; want true, nil", changed, err)
	}
	s4 := dirState(t, dir)
	wantNames = sortedCopy(append([]string{"sriov-cdi_sriov-cdi.io_a.json", "sriov-cdi_sriov-cdi.io_c.json"}, keys(foreign)...))
	if diff := cmp.Diff(wantNames, names(s4)); diff != "" {
		t.Fatalf("files after change (-want +got):\n%s", diff)
	}
	if s4["sriov-cdi_sriov-cdi.io_a.json"].Content == after["sriov-cdi_sriov-cdi.io_a.json"].Content {
		t.Error("changed spec was not rewritten")
	}
	for n, c := range foreign {
		if s4[n].Content != c {
			t.Errorf("foreign file %s changed", n)
		}
	}
	cache, _ := cdilib.NewCache(cdilib.WithSpecDirs(dir), cdilib.WithAutoRefresh(false))
	if d := cache.GetDevice("sriov-cdi.io/a=0000:3b:02.1"); d != nil {
		t.Error("device removed from the spec still resolves")
	}
	if d := cache.GetDevice("sriov-cdi.io/c=0000:af:00.0"); d == nil {
		t.Error("new spec's device does not resolve")
	}

	// 5. One invalid spec: nothing changes at all.
	bad := kernelSpec("sriov-cdi.io/d", "0000:af:00.1")
	bad.Devices = append(bad.Devices, bad.Devices[0]) // duplicate device
	before = dirState(t, dir)
	if changed, err = w.Sync([]*cdispec.Spec{kernelSpec("sriov-cdi.io/a", "0000:3b:02.7"), bad}); err == nil || changed {
		t.Fatalf("Sync(invalid) = %v, %v; want false and an error", changed, err)
	} else if !strings.Contains(err.Error(), `"0000:af:00.1" is defined twice`) {
		t.Errorf("Sync(invalid) error = %v; want it to name the duplicate device", err)
	}
	if diff := cmp.Diff(before, dirState(t, dir)); diff != "" {
		t.Fatalf("failed Sync changed files (-before +after):\n%s", diff)
	}

	// 6. The same kind twice is refused.
	if _, err := w.Sync([]*cdispec.Spec{a, a}); err == nil || !strings.Contains(err.Error(), `kind "sriov-cdi.io/a" given twice`) {
		t.Errorf("Sync(duplicate kind) error = %v", err)
	}

	// 7. A corrupted file of ours is replaced.
	if err := os.WriteFile(pa, []byte("garbage: ["), 0o644); err != nil {
		t.Fatal(err)
	}
	if changed, err = w.Sync([]*cdispec.Spec{a2, c}); err != nil || !changed {
		t.Fatalf("Sync(corrupt) = %v, %v; want true, nil", changed, err)
	}

	// 8. No specs: every file of ours goes, foreign files stay.
	if changed, err = w.Sync(nil); err != nil || !changed {
		t.Fatalf("Sync(nil) = %v, %v; want true, nil", changed, err)
	}
	if diff := cmp.Diff(sortedCopy(keys(foreign)), names(dirState(t, dir))); diff != "" {
		t.Errorf("files after Sync(nil) (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(filepath.Join(dir, stagingDir)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("staging directory left behind: %v", err)
	}
}

func TestNewWriterCleansStaging(t *testing.T) {
	dir := t.TempDir()
	stage := filepath.Join(dir, stagingDir)
	if err := os.MkdirAll(stage, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stage, "spec.123.tmp"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewWriter(dir, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stage); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("leftovers kept: %v", err)
	}
}

func keys(m map[string]string) []string { return slices.Collect(maps.Keys(m)) }
