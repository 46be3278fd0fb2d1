package sysfs_test

import (
	"os"
	"path/filepath"
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

// TestReadGroups reads a unit's group (two VFs without ACS between them
// and the root port above them), their PF and nothing else, even with an
// unrelated function broken.
func TestReadGroups(t *testing.T) {
	dir := t.TempDir()
	b := sysfstest.New(dir)
	b.Add(sysfstest.Function{Addr: "0000:00:01.0", Vendor: "8086", Device: "2030", Class: "060400", Driver: "pcieport", NUMA: 0, Group: "5"})
	b.AddPF(sysfstest.Function{Addr: "0000:3b:00.0", Vendor: "8086", Device: "1572", Driver: "i40e", NUMA: 0, Group: "2", Parent: "0000:00:01.0",
		Netdevs: []sysfstest.Netdev{{Name: "ens1f0", OperState: "up", Carrier: true}}},
		sysfstest.Function{Addr: "0000:3b:02.0", Vendor: "8086", Device: "154c", Driver: "iavf", NUMA: 0, Group: "5"},
		sysfstest.Function{Addr: "0000:3b:02.1", Vendor: "8086", Device: "154c", Driver: "iavf", NUMA: 0, Group: "5"},
		sysfstest.Function{Addr: "0000:3b:02.2", Vendor: "8086", Device: "154c", Driver: "iavf", NUMA: 0, Group: "6"},
		sysfstest.Function{Addr: "0000:3b:02.3", Vendor: "8086", Device: "154c", Driver: "iavf", NUMA: 0, Group: "7"},
	)
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	root := sysfs.Root{Sys: b.Sys(), Dev: b.Dev()}
	// 0000:3b:02.3 vanishes badly: its bus link dangles.
	if err := os.RemoveAll(filepath.Join(b.Sys(), "devices", "pci0000:00", "0000:00:01.0", "0000:3b:02.3")); err != nil {
		t.Fatal(err)
	}
	asked := map[string]bool{}
	h, err := sysfs.ReadGroups(root, []sysfs.Address{"0000:3b:02.0"}, sysfs.WithNetUsage(func() sysfs.NetUsage { return recordNet(asked) }))
	if err != nil {
		t.Fatal(err)
	}
	var got []sysfs.Address
	for _, d := range h.Devices {
		got = append(got, d.Address)
	}
	if diff := cmp.Diff([]sysfs.Address{"0000:00:01.0", "0000:3b:00.0", "0000:3b:02.0", "0000:3b:02.1"}, got); diff != "" {
		t.Errorf("functions read (-want +got)\n%s", diff)
	}
	if diff := cmp.Diff([]sysfs.Address{"0000:00:01.0", "0000:3b:02.0", "0000:3b:02.1"}, h.Groups["5"]); diff != "" {
		t.Errorf("group 5 (-want +got)\n%s", diff)
	}
	if len(h.Warnings) != 0 {
		t.Errorf("warnings about functions not asked for: %v", h.Warnings)
	}
	if d := h.Device("0000:3b:02.1"); d.VFIndex != 1 || d.NUMANode != 0 {
		t.Errorf("VF index and NUMA node not taken from the PF: %+v", d)
	}
	if diff := cmp.Diff(map[string]bool{"ens1f0": true}, asked); diff != "" {
		t.Errorf("netdevs asked about (-want +got)\n%s", diff)
	}
	// A group whose member list cannot be read fails the read.
	if err := os.RemoveAll(filepath.Join(b.Sys(), "kernel", "iommu_groups", "5", "devices")); err != nil {
		t.Fatal(err)
	}
	if _, err := sysfs.ReadGroups(root, []sysfs.Address{"0000:3b:02.0"}); err == nil {
		t.Error("unreadable group member list: no error")
	}
}

type recordNet map[string]bool

func (r recordNet) HostUse(n string) string { r[n] = true; return "" }
