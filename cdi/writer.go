package cdi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	"go.uber.org/zap"
	cdilib "tags.cncf.io/container-device-interface/pkg/cdi"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
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
//
// Symbolic links are never followed in the directory (the directory itself
// may be reached through links): a link named like one of our specs is not
// ours, its target is never read, written or chmodded; the link is replaced
// by our spec if we want that name and removed, with a warning, if not.
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
	ours, links, err := w.ownFiles()
	if err != nil {
		return false, err
	}

	// Phase 1: stage what changed (the library validates on write). The
	// staging directory is made fresh, by us, only when something changes,
	// and goes when Sync ends.
	var write []string
	for _, name := range names {
		same, err := w.unchanged(name, want[name])
		if err != nil {
			return false, err
		}
		if !same {
			write = append(write, name)
		}
	}
	stage := filepath.Join(w.dir, stagingDir)
	if len(write) > 0 {
		if err := makeStaging(stage); err != nil {
			return false, err
		}
		defer os.Remove(stage)
	}
	var staged []string
	unstage := func() {
		for _, n := range staged {
			os.Remove(filepath.Join(stage, n))
		}
	}
	for _, name := range write {
		s := want[name]
		if err := w.stage.WriteSpec(s, name); err != nil {
			unstage()
			return false, fmt.Errorf("write CDI spec %q (kind %q): %w", name, s.Kind, err)
		}
		staged = append(staged, name)
		if err := chmodStaged(filepath.Join(stage, name)); err != nil {
			unstage()
			return false, err
		}
	}

	// Phase 2: rename into place, then remove stale files of ours. A
	// rename replaces whatever has the name (a link itself, never its
	// target).
	for i, name := range staged {
		path := filepath.Join(w.dir, name)
		if fi, err := os.Lstat(path); err == nil && !fi.Mode().IsRegular() {
			target, _ := os.Readlink(path)
			w.log.Warn("replacing an entry named like our CDI spec that is not a regular file",
				zap.String("path", path), zap.Stringer("type", fi.Mode().Type()), zap.String("target", target))
		}
		if err := os.Rename(filepath.Join(stage, name), path); err != nil {
			staged = staged[i:]
			unstage()
			return changed, fmt.Errorf("install CDI spec %q: %w", name, err)
		}
		changed = true
		w.log.Info("wrote CDI spec", zap.String("path", path), zap.String("kind", want[name].Kind),
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
		w.log.Info("removed stale CDI spec", zap.String("path", filepath.Join(w.dir, name)))
	}
	// A symbolic link with our name is not ours (the Writer creates none),
	// but runtimes follow it and would read a spec under our name that we
	// do not control. The link itself goes (unlink never touches the
	// target); refusing to sync instead would let a stray link stop every
	// spec update. A wanted name's link was replaced by the rename above.
	for _, name := range links {
		if _, keep := want[name]; keep {
			continue
		}
		path := filepath.Join(w.dir, name)
		target, _ := os.Readlink(path)
		if err := syscall.Unlink(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return changed, fmt.Errorf("remove symbolic link %q named like a CDI spec of ours: %w", path, err)
		}
		changed = true
		w.log.Warn("removed a symbolic link named like a CDI spec of ours; its target is left alone",
			zap.String("path", path), zap.String("target", target))
	}
	return changed, nil
}

// makeStaging creates the staging directory afresh. Whatever has its name
// is a leftover of ours or planted: it is removed first (a link itself, not
// its target), so the library's writes cannot be redirected through it.
func makeStaging(stage string) error {
	if err := os.RemoveAll(stage); err != nil {
		return fmt.Errorf("clear CDI staging directory %q: %w", stage, err)
	}
	if err := os.Mkdir(stage, 0o700); err != nil {
		return fmt.Errorf("create CDI staging directory %q: %w", stage, err)
	}
	return nil
}

// openNoFollow opens path for reading without following a symbolic link in
// its last element (that fails with ELOOP) and without blocking on a FIFO.
// Links in the directory part are followed: the spec directory may be
// reached through links (/var/run -> /run).
func openNoFollow(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
}

// chmodStaged makes a staged spec world-readable through the open file
// (fchmod), never through a path that could have become a link.
func chmodStaged(path string) error {
	f, err := openNoFollow(path)
	if err != nil {
		return fmt.Errorf("make CDI spec %q readable: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("make CDI spec %q readable: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("make CDI spec %q readable: not a regular file (%v)", path, fi.Mode().Type())
	}
	if err := f.Chmod(specMode); err != nil {
		return fmt.Errorf("make CDI spec %q readable: %w", path, err)
	}
	return nil
}

// ownFiles lists the entries of the directory named like our spec files:
// regular files (ours) and symbolic links (never ours: the Writer creates
// none). Other kinds of entries are left alone.
func (w *Writer) ownFiles() (files, links []string, err error) {
	entries, err := os.ReadDir(w.dir)
	if err != nil {
		return nil, nil, fmt.Errorf("list CDI spec directory %q: %w", w.dir, err)
	}
	for _, e := range entries {
		n := e.Name()
		if !strings.HasPrefix(n, SpecFilePrefix) || !(strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".json")) {
			continue
		}
		switch {
		case e.Type().IsRegular():
			files = append(files, n)
		case e.Type()&fs.ModeSymlink != 0:
			links = append(links, n)
		}
	}
	return files, links, nil
}

// unchanged reports whether file name already holds spec s byte for byte
// as the CDI library would write it (JSON, which is cheap to produce and to
// compare). An identical file with the wrong mode gets its mode fixed.
// Only a regular file can be unchanged: a symbolic link is not followed
// (neither its target read nor chmodded) and, like a FIFO or device, is
// replaced by the spec.
func (w *Writer) unchanged(name string, s *cdispec.Spec) (bool, error) {
	path := filepath.Join(w.dir, name)
	f, err := openNoFollow(path)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ELOOP) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read CDI spec %q: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("stat CDI spec %q: %w", path, err)
	}
	want, err := json.Marshal(s)
	if err != nil {
		return false, fmt.Errorf("encode CDI spec of kind %q: %w", s.Kind, err)
	}
	if !fi.Mode().IsRegular() || fi.Size() != int64(len(want)) {
		return false, nil
	}
	have := make([]byte, len(want)+1)
	n, err := io.ReadFull(f, have)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return false, fmt.Errorf("read CDI spec %q: %w", path, err)
	}
	if !bytes.Equal(have[:n], want) {
		return false, nil
	}
	if fi.Mode().Perm() != specMode {
		if err := f.Chmod(specMode); err != nil {
			return false, fmt.Errorf("make CDI spec %q readable: %w", path, err)
		}
		w.log.Info("made CDI spec readable", zap.String("path", path), zap.Stringer("was", fi.Mode().Perm()))
	}
	return true, nil
}

// Files lists the spec files the writer owns, sorted; for tests and status.
func (w *Writer) Files() ([]string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	out, _, err := w.ownFiles()
	slices.Sort(out)
	return out, err
}

// PlanSyncer writes the spec of every pool of a plan that has devices and
// removes ours of the others: the plugin's SpecSyncer.
type PlanSyncer struct {
	W    *Writer
	Root sysfs.Root
}

// Sync implements the plugin's SpecSyncer. Pools with api: dra get no
// pool-wide spec: the DRA driver writes one spec per prepared claim.
func (s PlanSyncer) Sync(plan *pool.Plan, h *sysfs.Host) error {
	pools := make([]pool.Pool, 0, len(plan.Pools))
	for _, p := range plan.Pools {
		if p.Config == nil || p.Config.API != config.APIDRA {
			pools = append(pools, p)
		}
	}
	specs, err := SpecsFor(pools, h, s.Root)
	if err != nil {
		return err
	}
	_, err = s.W.Sync(specs)
	return err
}
