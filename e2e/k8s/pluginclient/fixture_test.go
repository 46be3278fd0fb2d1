package pluginclient

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// extractSnapshot unpacks the sysfs snapshot into dir (dir/sys, dir/dev, ...).
// The snapshot's /dev/vfio entries are empty files; when the test may mknod
// (root), they become the character devices dev-vfio.txt describes, as on
// the host the snapshot was taken on.
func extractSnapshot(t *testing.T, dir string) {
	t.Helper()
	if err := untar(snapshot, dir); err != nil {
		t.Fatalf("unpack snapshot: %v", err)
	}
	if err := makeDevNodes(dir); err != nil {
		t.Logf("/dev/vfio entries stay regular files: %v", err)
	}
}

// makeDevNodes replaces dir/dev/vfio/* by the character devices listed in
// dir/dev-vfio.txt ("name major:minor mode" per line).
func makeDevNodes(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "dev-vfio.txt"))
	if err != nil {
		return err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var name string
		var major, minor uint32
		var mode uint32
		if _, err := fmt.Sscanf(line, "%s %d:%d %o", &name, &major, &minor, &mode); err != nil {
			return fmt.Errorf("parse dev-vfio.txt line %q: %w", line, err)
		}
		p := filepath.Join(dir, "dev", "vfio", name)
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := unix.Mknod(p, unix.S_IFCHR|mode, int(unix.Mkdev(major, minor))); err != nil {
			// Put the empty file back so the tree stays as shipped.
			_ = os.WriteFile(p, nil, fs.FileMode(mode))
			return fmt.Errorf("mknod %q: %w", p, err)
		}
	}
	return nil
}

func untar(archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("read %q: %w", archive, err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %q: %w", archive, err)
		}
		name := filepath.Clean(h.Name)
		if name == "." {
			continue
		}
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("entry %q escapes the archive root", h.Name)
		}
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, p); err != nil {
				return err
			}
		case tar.TypeReg:
			w, err := os.OpenFile(p, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, fs.FileMode(h.Mode).Perm())
			if err != nil {
				return err
			}
			_, err = io.Copy(w, tr)
			if cerr := w.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("entry %q: unsupported type %q", h.Name, h.Typeflag)
		}
	}
}

// removedLink is a symlink that removeDevice deleted, to be put back.
type removedLink struct{ path, target string }

// vanishedDevice is a PCI device taken out of the tree the way the kernel
// does it (device directory gone, every link to it gone).
type vanishedDevice struct {
	dir, parked string
	links       []removedLink
}

// removeDevice makes the PCI device addr disappear from the sysfs tree under
// sysRoot: its directory under /sys/devices moves out of the tree and every
// symlink that pointed into it is deleted (bus/pci/devices, drivers/*,
// iommu_groups/*/devices, the PF's virtfnN, class links). restore undoes it.
func removeDevice(t *testing.T, sysRoot, addr, parkDir string) *vanishedDevice {
	t.Helper()
	busLink := filepath.Join(sysRoot, "bus", "pci", "devices", addr)
	dir, err := filepath.EvalSymlinks(busLink)
	if err != nil {
		t.Fatalf("resolve %q: %v", busLink, err)
	}
	v := &vanishedDevice{dir: dir, parked: filepath.Join(parkDir, addr)}
	err = filepath.WalkDir(sysRoot, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink == 0 {
			return nil
		}
		if strings.HasPrefix(p, dir+string(filepath.Separator)) {
			return nil // inside the device directory itself: moves with it
		}
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		abs := target
		if !filepath.IsAbs(abs) {
			abs = filepath.Join(filepath.Dir(p), target)
		}
		resolved, err := filepath.EvalSymlinks(abs)
		if err != nil {
			return nil // already dangling: not ours
		}
		if resolved == dir || strings.HasPrefix(resolved, dir+string(filepath.Separator)) {
			v.links = append(v.links, removedLink{path: p, target: target})
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %q: %v", sysRoot, err)
	}
	for _, l := range v.links {
		if err := os.Remove(l.path); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(dir, v.parked); err != nil {
		t.Fatal(err)
	}
	return v
}

// restore puts a device removed by removeDevice back.
func (v *vanishedDevice) restore(t *testing.T) {
	t.Helper()
	if err := os.Rename(v.parked, v.dir); err != nil {
		t.Fatal(err)
	}
	for _, l := range v.links {
		if err := os.Symlink(l.target, l.path); err != nil {
			t.Fatal(err)
		}
	}
}

// writeAttr writes a sysfs attribute in the fixture tree.
func writeAttr(t *testing.T, path, value string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(value+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}
