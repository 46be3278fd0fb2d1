package sysfs_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/sriov-cdi/sriov-cdi/sysfs"
	"github.com/sriov-cdi/sriov-cdi/sysfs/sysfstest"
)

// TestFingerprint: the fingerprint stays put while nothing changes and
// moves with each change a kernel event announces.
func TestFingerprint(t *testing.T) {
	dir := t.TempDir()
	b := sysfstest.SRIOVNICHost(dir, 1, 4)
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	root := sysfs.Root{Sys: b.Sys(), Dev: b.Dev()}
	fp := func() uint64 {
		t.Helper()
		f, err := sysfs.Fingerprint(root)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	last := fp()
	if again := fp(); again != last {
		t.Fatal("fingerprint of an unchanged tree moved")
	}
	for _, step := range []struct {
		name   string
		change func() error
	}{
		{"driver unbound", func() error { return sysfstest.SetDriver(dir, "0000:01:00.2", "") }},
		{"bound to vfio-pci", func() error { return sysfstest.SetDriver(dir, "0000:01:00.2", "vfio-pci") }},
		{"vfio node created", func() error { return os.WriteFile(filepath.Join(b.Dev(), "vfio", "99"), nil, 0o600) }},
		{"VFs removed", func() error { return sysfstest.SetNumVFs(dir, "0000:01:00.0", 2) }},
	} {
		if err := step.change(); err != nil {
			t.Fatal(err)
		}
		now := fp()
		if now == last {
			t.Errorf("%s: fingerprint did not move", step.name)
		}
		last = now
	}
	if _, err := sysfs.Fingerprint(sysfs.Root{Sys: filepath.Join(dir, "nope"), Dev: b.Dev()}); err == nil {
		t.Error("missing tree: no error")
	}
}
