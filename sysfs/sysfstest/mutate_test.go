package sysfstest_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/sriov-cdi/sriov-cdi/sysfs"
	"github.com/sriov-cdi/sriov-cdi/sysfs/sysfstest"
)

// TestNetdevsFollowTheDriver: the fake must be as harsh as a real kernel —
// a VF's netdev vanishes when its network driver lets go (vfio-pci binding
// included) and comes back when a network driver binds again.
func TestNetdevsFollowTheDriver(t *testing.T) {
	dir := t.TempDir()
	b := sysfstest.SRIOVNICHost(dir, 1, 2)
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	root := sysfs.Root{Sys: b.Sys(), Dev: b.Dev()}
	const vf = "0000:01:00.1"
	netdevs := func() []string {
		t.Helper()
		h, err := sysfs.Scan(root)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, n := range h.Device(vf).Netdevs {
			out = append(out, n.Name)
		}
		return out
	}
	classLink := func() bool {
		_, err := os.Stat(filepath.Join(b.Sys(), "class/net/ens0f0v0"))
		return err == nil
	}
	if got := netdevs(); len(got) != 1 || !classLink() {
		t.Fatalf("fixture: netdevs %v, class/net link %v", got, classLink())
	}
	for _, step := range []struct {
		driver string
		want   int
	}{{"", 0}, {"vfio-pci", 0}, {"", 0}, {"iavf", 1}, {"vfio-pci", 0}, {"iavf", 1}} {
		if err := sysfstest.SetDriver(dir, vf, step.driver); err != nil {
			t.Fatal(err)
		}
		if got := netdevs(); len(got) != step.want || classLink() != (step.want == 1) {
			t.Fatalf("after binding %q: netdevs %v, class/net link %v; want %d", step.driver, got, classLink(), step.want)
		}
	}
}
