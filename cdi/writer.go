package cdi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"go.uber.org/zap"
	cdilib "tags.cncf.io/container-device-interface/pkg/cdi"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/sriov-cdi/sriov-cdi/plugin/pool"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// DefaultDir is where the Writer puts specs unless told otherwise; it is
// the highest-priority directory of the CDI library and runtimes.
const DefaultDir = "/var/run/cdi"

// SpecFilePrefix starts the name of every spec file the Writer owns. Only
// files with this prefix are ever rewritten or removed.
const SpecFilePrefix = "sriov-cdi_"

// stagingDir is a subdirectory of the spec directory where specs are
// written and made world-readable before being renamed into place (same
// file system: the rename is atomic). It exists only during a Sync that
// writes. The CDI library and runtimes do not look into subdirectories.
const stagingDir = ".sriov-cdi-staging"

// specMode lets runtimes that do not run as root read the specs; the CDI
// library creates files 0600.
const specMode fs.FileMode = 0o644

// SpecFileName is the file name (without directory) of the spec for a kind
// "<vendor>/<class>": SpecFilePrefix + "<vendor>_<class>.json". JSON, not
// YAML: the CDI library encodes and runtimes decode it several times faster,
// and every CDI consumer reads both.
func SpecFileName(kind string) (string, error) {
	vendor, class, err := KindOf(kind)
	if err != nil {
		return "", err
	}
	return SpecFilePrefix + vendor + "_" + class + ".json", nil
}

// Writer keeps the spec files of our pools in one directory. It is safe
// for concurrent use.
type Writer struct {
	dir   string
	log   *zap.Logger
	mu    sync.Mutex
	cache *cdilib.Cache // on dir: RemoveSpec
	stage *cdilib.Cache // on dir/stagingDir: WriteSpec
}

// NewWriter returns a writer for dir (DefaultDir when empty), creating the
// directory if needed. A nil logger logs nothing.
func NewWriter(dir string, log *zap.Logger) (*Writer, error) {
	if dir == "" {
		dir = DefaultDir
	}
	if log == nil {
		log = zap.NewNop()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create CDI spec directory %q: %w", dir, err)
	}
	// Leftovers of an interrupted run: the staging directory is ours alone.
	stage := filepath.Join(dir, stagingDir)
	if err := os.RemoveAll(stage); err != nil {
		return nil, fmt.Errorf("clear CDI staging directory %q: %w", stage, err)
	}
	w := &Writer{dir: dir, log: log}
	// NewCache never fails (its error is kept for API compatibility). With
	// auto-refresh off it scans its directory once, here, and never again.
	w.cache, _ = cdilib.NewCache(cdilib.WithSpecDirs(dir), cdilib.WithAutoRefresh(false))
	w.stage, _ = cdilib.NewCache(cdilib.WithSpecDirs(stage), cdilib.WithAutoRefresh(false))
	return w, nil
}

// Dir is the spec directory.
func (w *Writer) Dir() string { return w.dir }

// Sync makes the directory hold exactly the given specs among our files:
// each spec whose content differs from its file (or has none) is validated
// and written atomically with mode 0644, an identical one is not touched
// (only its mode is repaired if needed), and every other file of ours is
// removed. changed reports whether any file was written or removed.
//
// Every spec is validated before anything in the directory changes: if one
// is invalid, no file is written or removed. Specs are matched to files by
// kind, so two specs of one kind are an error.
func (w *Writer) Sync(specs []*cdispec.Spec) (changed bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()

	want := make(map[string]*cdispec.Spec, len(specs))
	names := make([]string, 0, len(specs))
	for _, s := range specs {
		if s == nil {
			return false, errors.New("sync CDI specs: nil spec")
		}
		name, err := SpecFileName(s.Kind)
		if err != nil {
			return false, fmt.Errorf("sync CDI specs: %w", err)
		}
		if _, dup := want[name]; dup {
			return false, fmt.Errorf("sync CDI specs: kind %q given twice", s.Kind)
		}
		if err := Validate(s); err != nil {
			return false, fmt.Errorf("sync CDI specs: %w", err)
		}
		want[name] = s
		names = append(names, name)
	}
	ours, err := w.ownFiles()
	if err != nil {
		return false, err
	}

	// Phase 1: stage what changed (the library validates on write and
	// creates the staging directory; it goes when empty).
	defer os.Remove(filepath.Join(w.dir, stagingDir))
	var staged []string
	unstage := func() {
		for _, n := range staged {
			os.Remove(filepath.Join(w.dir, stagingDir, n))
		}
	}
	for _, name := range names {
		s := want[name]
		same, err := w.unchanged(name, s)
		if err != nil {
			unstage()
			return false, err
		}
		if same {
			continue
		}
		if err := w.stage.WriteSpec(s, name); err != nil {
			unstage()
			return false, fmt.Errorf("write CDI spec %q (kind %q): %w", name, s.Kind, err)
		}
		staged = append(staged, name)
		if err := os.Chmod(filepath.Join(w.dir, stagingDir, name), specMode); err != nil {
			unstage()
			return false, fmt.Errorf("make CDI spec %q readable: %w", name, err)
		}
	}

	// Phase 2: rename into place, then remove stale files of ours.
	for i, name := range staged {
		if err := os.Rename(filepath.Join(w.dir, stagingDir, name), filepath.Join(w.dir, name)); err != nil {
			staged = staged[i:]
			unstage()
			return changed, fmt.Errorf("install CDI spec %q: %w", name, err)
		}
		changed = true
		w.log.Info("wrote CDI spec", zap.String("file", filepath.Join(w.dir, name)), zap.String("kind", want[name].Kind),
			zap.Int("devices", len(want[name].Devices)), zap.String("cdiVersion", want[name].Version))
	}
	for _, name := range ours {
		if _, keep := want[name]; keep {
			continue
		}
		if err := w.cache.RemoveSpec(name); err != nil {
			return changed, fmt.Errorf("remove stale CDI spec %q: %w", filepath.Join(w.dir, name), err)
		}
		changed = true
		w.log.Info("removed stale CDI spec", zap.String("file", filepath.Join(w.dir, name)))
	}
	return changed, nil
}

// ownFiles lists the spec files of ours in the directory.
func (w *Writer) ownFiles() ([]string, error) {
	entries, err := os.ReadDir(w.dir)
	if err != nil {
		return nil, fmt.Errorf("list CDI spec directory %q: %w", w.dir, err)
	}
	var out []string
	for _, e := range entries {
		n := e.Name()
		if e.Type().IsRegular() && strings.HasPrefix(n, SpecFilePrefix) && (strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".json")) {
			out = append(out, n)
		}
	}
	return out, nil
}

// unchanged reports whether file name already holds spec s byte for byte
// as the CDI library would write it (JSON, which is cheap to produce and to
// compare). An identical file with the wrong mode gets its mode fixed.
func (w *Writer) unchanged(name string, s *cdispec.Spec) (bool, error) {
	path := filepath.Join(w.dir, name)
	have, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read CDI spec %q: %w", path, err)
	}
	want, err := json.Marshal(s)
	if err != nil {
		return false, fmt.Errorf("encode CDI spec of kind %q: %w", s.Kind, err)
	}
	if !bytes.Equal(have, want) {
		return false, nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return false, fmt.Errorf("stat CDI spec %q: %w", path, err)
	}
	if fi.Mode().Perm() != specMode {
		if err := os.Chmod(path, specMode); err != nil {
			return false, fmt.Errorf("make CDI spec %q readable: %w", path, err)
		}
		w.log.Info("made CDI spec readable", zap.String("file", path), zap.Stringer("was", fi.Mode().Perm()))
	}
	return true, nil
}

// Files lists the spec files the writer owns, sorted; for tests and status.
func (w *Writer) Files() ([]string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	out, err := w.ownFiles()
	slices.Sort(out)
	return out, err
}

// PlanSyncer writes the spec of every pool of a plan that has devices and
// removes ours of the others: the plugin's SpecSyncer.
type PlanSyncer struct {
	W    *Writer
	Root sysfs.Root
}

// Sync implements the plugin's SpecSyncer.
func (s PlanSyncer) Sync(plan *pool.Plan, h *sysfs.Host) error {
	specs, err := SpecsFor(plan.Pools, h, s.Root)
	if err != nil {
		return err
	}
	_, err = s.W.Sync(specs)
	return err
}
