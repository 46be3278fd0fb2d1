package sysfs_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/sriov-cdi/sriov-cdi/sysfs"
	"github.com/sriov-cdi/sriov-cdi/sysfs/sysfstest"
)

// TestRefreshMatchesScan changes a tree the ways uevents announce and
// checks that refreshing only the announced functions gives the same host
// as a full scan, without touching the previous snapshot.
func TestRefreshMatchesScan(t *testing.T) {
	dir := t.TempDir()
	b := sysfstest.SRIOVNICHost(dir, 2, 4)
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	root := sysfs.Root{Sys: b.Sys(), Dev: b.Dev()}
	scan := func() *sysfs.Host {
		h, err := sysfs.Scan(root)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	prev := scan()
	before := scan()
	steps := []struct {
		name   string
		change func() error
		addrs  []sysfs.Address
	}{
		{"driver unbound", func() error { return sysfstest.SetDriver(dir, "0000:01:00.2", "") }, []sysfs.Address{"0000:01:00.2"}},
		{"bound to vfio-pci", func() error { return sysfstest.SetDriver(dir, "0000:01:00.3", "vfio-pci") }, []sysfs.Address{"0000:01:00.3"}},
		// remove uevents name the VFs that went away; their PF is re-read.
		{"VFs removed", func() error { return sysfstest.SetNumVFs(dir, "0000:02:00.0", 1) }, []sysfs.Address{"0000:02:00.2", "0000:02:00.3", "0000:02:00.4"}},
	}
	for _, st := range steps {
		if err := st.change(); err != nil {
			t.Fatal(err)
		}
		got := sysfs.Refresh(root, prev, st.addrs)
		want := scan()
		if diff := cmp.Diff(want, got, cmpopts.IgnoreUnexported(sysfs.Host{}), cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("%s: Refresh differs from Scan (-scan +refresh)\n%s", st.name, diff)
		}
		prev = got
	}
	// The first snapshot was never modified.
	if diff := cmp.Diff(before, scan(), cmpopts.IgnoreUnexported(sysfs.Host{})); diff == "" {
		t.Fatal("the tree did not change?")
	}
	if d := before.Device("0000:01:00.2"); d.Driver != "iavf" {
		t.Errorf("previous snapshot modified: %+v", d)
	}
}
