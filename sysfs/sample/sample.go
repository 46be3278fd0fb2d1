// Package sample bundles a sysfs snapshot taken from a real 6.1 kernel
// (QEMU q35 with an emulated Intel IOMMU and two SR-IOV NVMe controllers)
// and a pool configuration for it, so `sriov-cdi discover --sample` and the
// tests can run without hardware. The snapshot's scenario: PF 0000:01:00.0
// (nvme) with 4 driverless VFs, one of which (0000:01:00.2, group 8) is
// bound to vfio-pci; PF 0000:02:00.0 (nvme) with 2 VFs bound to nvme; each
// function in its own IOMMU group except the ICH9 functions 00:1f.* (group 4).
package sample

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

//go:embed nvme-sriov-acs.tar.gz
var snapshot []byte

//go:embed config.yaml
var config []byte

// Config returns the pool configuration written for the snapshot.
func Config() []byte { return bytes.Clone(config) }

// Extract unpacks the snapshot into dir and returns its root (dir/sys,
// dir/dev). /dev/vfio entries are regular files in the snapshot.
func Extract(dir string) (sysfs.Root, error) {
	if err := untar(bytes.NewReader(snapshot), dir); err != nil {
		return sysfs.Root{}, fmt.Errorf("extract sample sysfs tree into %q: %w", dir, err)
	}
	return sysfs.Root{Sys: filepath.Join(dir, "sys"), Dev: filepath.Join(dir, "dev")}, nil
}

// Scan extracts the snapshot into dir and scans it.
func Scan(dir string) (*sysfs.Host, sysfs.Root, error) {
	root, err := Extract(dir)
	if err != nil {
		return nil, root, err
	}
	h, err := sysfs.Scan(root)
	return h, root, err
}

func untar(r io.Reader, dir string) error {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(h.Name)
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("archive entry %q escapes the target directory", h.Name)
		}
		p := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeSymlink:
			if filepath.IsAbs(h.Linkname) {
				return fmt.Errorf("archive symlink %q has an absolute target %q", h.Name, h.Linkname)
			}
			if err = os.MkdirAll(filepath.Dir(p), 0o755); err == nil {
				err = os.Symlink(h.Linkname, p)
			}
		case tar.TypeReg:
			if err = os.MkdirAll(filepath.Dir(p), 0o755); err == nil {
				// Keep the kernel's mode but let the owner write: tests
				// mutate the tree.
				err = writeFile(p, tr, h.FileInfo().Mode().Perm()|0o200)
			}
		}
		if err != nil {
			return err
		}
	}
}

func writeFile(p string, r io.Reader, mode os.FileMode) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
