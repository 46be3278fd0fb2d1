package cdi

import (
	"encoding/json"
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
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
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

// entry is one directory entry as Lstat sees it: a symbolic link is never
// followed.
type entry struct {
	Type    fs.FileMode // fs.ModeSymlink, fs.ModeNamedPipe, 0 for a regular file
	Mode    fs.FileMode
	Target  string // of a link
	Content string // of a regular file
}

func lstatEntry(t *testing.T, path string) *entry {
	t.Helper()
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	e := &entry{Type: fi.Mode().Type(), Mode: fi.Mode().Perm()}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		if e.Target, err = os.Readlink(path); err != nil {
			t.Fatal(err)
		}
		e.Mode = 0
	case fi.Mode().IsRegular():
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		e.Content = string(b)
	}
	return e
}

// TestWriterSymlinks: entries in the spec directory named like our specs
// that are symbolic links (or FIFOs) are not ours. Sync never follows them:
// it neither reads, chmods nor writes a target; a link where one of our
// specs belongs is replaced by the spec (the rename replaces the link, not
// its target), a stale one is removed (the link, not its target) with a
// warning. A link planted as the staging directory does not redirect writes.
func TestWriterSymlinks(t *testing.T) {
	a := kernelSpec("sriov-cdi.io/a", "0000:3b:02.0")
	aJSON, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	const (
		nameA    = "sriov-cdi_sriov-cdi.io_a.json"
		nameGone = "sriov-cdi_sriov-cdi.io_gone.json"
	)
	type outsideFile struct {
		Name    string
		Mode    fs.FileMode
		Content string
	}
	tests := []struct {
		name string
		// outside files are created in a directory next to the spec
		// directory; links are name -> target relative to that directory
		// ("" = the directory itself).
		outside []outsideFile
		links   map[string]string
		fifo    string
		specs   []*cdispec.Spec
		// want is the spec directory's entries after Sync (links as
		// targets); the outside files must be unchanged.
		want     map[string]*entry
		wantWarn []string
	}{
		{
			name:    "link named like a wanted spec to an identical file outside: the target is not chmodded, the link is replaced",
			outside: []outsideFile{{"precious", 0o600, string(aJSON)}},
			links:   map[string]string{nameA: "precious"},
			specs:   []*cdispec.Spec{a},
			want:    map[string]*entry{nameA: {Mode: 0o644, Content: string(aJSON)}},
			wantWarn: []string{
				"replacing an entry named like our CDI spec that is not a regular file",
			},
		},
		{
			name:    "link named like a wanted spec to another file outside: the target is not written",
			outside: []outsideFile{{"precious", 0o600, "secret"}},
			links:   map[string]string{nameA: "precious"},
			specs:   []*cdispec.Spec{a},
			want:    map[string]*entry{nameA: {Mode: 0o644, Content: string(aJSON)}},
			wantWarn: []string{
				"replacing an entry named like our CDI spec that is not a regular file",
			},
		},
		{
			name:    "stale link named like ours: the link is removed, its target stays",
			outside: []outsideFile{{"precious", 0o600, string(aJSON)}},
			links:   map[string]string{nameGone: "precious"},
			specs:   []*cdispec.Spec{a},
			want:    map[string]*entry{nameA: {Mode: 0o644, Content: string(aJSON)}},
			wantWarn: []string{
				"removed a symbolic link named like a CDI spec of ours; its target is left alone",
			},
		},
		{
			name:     "dangling stale link: removed",
			links:    map[string]string{nameGone: "nowhere"},
			specs:    nil,
			want:     map[string]*entry{},
			wantWarn: []string{"removed a symbolic link named like a CDI spec of ours; its target is left alone"},
		},
		{
			name:     "FIFO named like a wanted spec: Sync does not block on it and replaces it",
			fifo:     nameA,
			specs:    []*cdispec.Spec{a},
			want:     map[string]*entry{nameA: {Mode: 0o644, Content: string(aJSON)}},
			wantWarn: []string{"replacing an entry named like our CDI spec that is not a regular file"},
		},
		{
			name:    "staging directory planted as a link: nothing is written through it",
			outside: []outsideFile{{nameA, 0o600, "precious"}},
			links:   map[string]string{stagingDir: ""},
			specs:   []*cdispec.Spec{a},
			want:    map[string]*entry{nameA: {Mode: 0o644, Content: string(aJSON)}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			top := t.TempDir()
			dir, out := filepath.Join(top, "cdi"), filepath.Join(top, "outside")
			if err := os.Mkdir(out, 0o755); err != nil {
				t.Fatal(err)
			}
			for _, f := range tt.outside {
				if err := os.WriteFile(filepath.Join(out, f.Name), []byte(f.Content), f.Mode); err != nil {
					t.Fatal(err)
				}
			}
			core, logs := observer.New(zap.WarnLevel)
			w, err := NewWriter(dir, zap.New(core))
			if err != nil {
				t.Fatal(err)
			}
			for name, target := range tt.links {
				if err := os.Symlink(filepath.Join(out, target), filepath.Join(dir, name)); err != nil {
					t.Fatal(err)
				}
			}
			if tt.fifo != "" {
				if err := syscall.Mkfifo(filepath.Join(dir, tt.fifo), 0o600); err != nil {
					t.Fatal(err)
				}
			}

			done := make(chan error, 1)
			go func() { _, err := w.Sync(tt.specs); done <- err }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Sync() = %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Sync() blocked")
			}

			got := map[string]*entry{}
			des, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, de := range des {
				got[de.Name()] = lstatEntry(t, filepath.Join(dir, de.Name()))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("spec directory after Sync (-want +got):\n%s", diff)
			}
			for _, f := range tt.outside {
				want := &entry{Mode: f.Mode, Content: f.Content}
				if diff := cmp.Diff(want, lstatEntry(t, filepath.Join(out, f.Name))); diff != "" {
					t.Errorf("outside file %s changed (-want +got):\n%s", f.Name, diff)
				}
			}
			if des, _ := os.ReadDir(out); len(des) != len(tt.outside) {
				t.Errorf("outside directory holds %d entries, want %d", len(des), len(tt.outside))
			}
			var warns []string
			for _, e := range logs.All() {
				warns = append(warns, e.Message)
				if _, ok := e.ContextMap()["path"]; !ok {
					t.Errorf("warning %q has no path", e.Message)
				}
			}
			if diff := cmp.Diff(tt.wantWarn, warns); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
			if files, err := w.Files(); err != nil || len(files) != len(tt.specs) {
				t.Errorf("Files() = %q, %v; want one file per spec", files, err)
			}
		})
	}
}

// TestWriterSpecDirBehindSymlink: the spec directory itself may be reached
// through symbolic links (/var/run is usually a link to /run, and
// /var/run/cdi may be one): that is the operator's choice and works.
func TestWriterSpecDirBehindSymlink(t *testing.T) {
	for _, tc := range []struct {
		name string
		// layout returns the directory to give NewWriter and the real
		// directory it must resolve to.
		layout func(t *testing.T, top string) (dir, real string)
	}{
		{"a parent is a link (/var/run -> /run)", func(t *testing.T, top string) (string, string) {
			if err := os.Mkdir(filepath.Join(top, "run"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Join(top, "run"), filepath.Join(top, "varrun")); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(top, "varrun", "cdi"), filepath.Join(top, "run", "cdi")
		}},
		{"the spec directory is a link", func(t *testing.T, top string) (string, string) {
			if err := os.Mkdir(filepath.Join(top, "real"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Join(top, "real"), filepath.Join(top, "cdi")); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(top, "cdi"), filepath.Join(top, "real")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, real := tc.layout(t, t.TempDir())
			w, err := NewWriter(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			a, b := kernelSpec("sriov-cdi.io/a", "0000:3b:02.0"), kernelSpec("sriov-cdi.io/b", "0000:3b:02.1")
			if changed, err := w.Sync([]*cdispec.Spec{a, b}); err != nil || !changed {
				t.Fatalf("Sync() = %v, %v; want true, nil", changed, err)
			}
			if err := os.Chmod(filepath.Join(real, "sriov-cdi_sriov-cdi.io_a.json"), 0o600); err != nil {
				t.Fatal(err)
			}
			if changed, err := w.Sync([]*cdispec.Spec{a, b}); err != nil || changed {
				t.Fatalf("Sync(same) = %v, %v; want false, nil", changed, err)
			}
			if e := lstatEntry(t, filepath.Join(real, "sriov-cdi_sriov-cdi.io_a.json")); e == nil || e.Mode != 0o644 {
				t.Errorf("mode not repaired through the linked directory: %+v", e)
			}
			if changed, err := w.Sync([]*cdispec.Spec{b}); err != nil || !changed {
				t.Fatalf("Sync(b) = %v, %v; want true, nil", changed, err)
			}
			files, err := os.ReadDir(real)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range files {
				got = append(got, f.Name())
			}
			if diff := cmp.Diff([]string{"sriov-cdi_sriov-cdi.io_b.json"}, got); diff != "" {
				t.Errorf("real directory (-want +got):\n%s", diff)
			}
		})
	}
}
