package deviceinfo

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

func TestWritePruneRemove(t *testing.T) {
	w := Writer{Dir: filepath.Join(t.TempDir(), "dp")}
	units := []pool.Unit{
		{ID: "0000:3b:02.0", PF: "0000:3b:00.0", Class: "020000"},
		{ID: "0000:3b:02.1", PF: "0000:3b:00.0", Class: "020000"},
		{ID: "0000:01:00.1", PF: "0000:01:00.0", Class: "010802"}, // NVMe VF: no file
	}
	if err := w.Write("example.com/vf", units, Options{}); err != nil {
		t.Fatal(err)
	}
	if err := w.Write("example.com/vf-other", units[:1], Options{}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(w.Dir, "example.com-vf-0000:3b:02.0-device.json"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(`{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:3b:02.0","pf-pci-address":"0000:3b:00.0"}}`, string(b)); diff != "" {
		t.Errorf("content (-want +got)\n%s", diff)
	}
	if err := w.Prune(map[string]map[sysfs.Address]bool{"example.com/vf": {"0000:3b:02.1": true}}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"example.com-vf-0000:3b:02.1-device.json", "example.com-vf-other-0000:3b:02.0-device.json"}, files(t, w.Dir)); diff != "" {
		t.Errorf("after prune (-want +got)\n%s", diff)
	}
	if err := w.Remove("example.com/vf", "0000:3b:02.1", "0000:3b:02.7"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"example.com-vf-other-0000:3b:02.0-device.json"}, files(t, w.Dir)); diff != "" {
		t.Errorf("after remove (-want +got)\n%s", diff)
	}
}

// TestForRDMAVhostNet: rdma-device and vhost-net as the device-info spec
// 1.1.0 names them, only when the pool injects them.
func TestForRDMAVhostNet(t *testing.T) {
	u := pool.Unit{ID: "0000:3b:00.2", PF: "0000:3b:00.0", Class: "020000", RDMA: []sysfs.RDMADevice{{Name: "mlx5_2", Nodes: []string{"uverbs2"}}}}
	tests := []struct {
		o    Options
		want PCI
	}{
		{Options{}, PCI{PCIAddress: "0000:3b:00.2", PFPCIAddress: "0000:3b:00.0"}},
		{Options{RDMA: true}, PCI{PCIAddress: "0000:3b:00.2", RDMADevice: "mlx5_2", PFPCIAddress: "0000:3b:00.0"}},
		{Options{VhostNet: true}, PCI{PCIAddress: "0000:3b:00.2", VhostNet: "/dev/vhost-net", PFPCIAddress: "0000:3b:00.0"}},
	}
	for _, tt := range tests {
		info, ok := For(u, tt.o)
		if !ok {
			t.Fatalf("For(%+v): no file", tt.o)
		}
		if diff := cmp.Diff(tt.want, *info.PCI); diff != "" {
			t.Errorf("For(%+v) (-want +got)\n%s", tt.o, diff)
		}
	}
	w := Writer{Dir: t.TempDir()}
	if err := w.Write("example.com/roce", []pool.Unit{u}, Options{RDMA: true, VhostNet: true}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(w.Dir, FileName("example.com/roce", u.ID)))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:3b:00.2","vhost-net":"/dev/vhost-net","rdma-device":"mlx5_2","pf-pci-address":"0000:3b:00.0"}}`
	if diff := cmp.Diff(want, string(b)); diff != "" {
		t.Errorf("file (-want +got)\n%s", diff)
	}
}

func files(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

func TestRewriteOfSameContentDoesNotWrite(t *testing.T) {
	w := Writer{Dir: t.TempDir()}
	u := []pool.Unit{{ID: "0000:3b:02.0", PF: "0000:3b:00.0", Class: "020000"}}
	if err := w.Write("example.com/vf", u, Options{}); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(w.Dir, FileName("example.com/vf", "0000:3b:02.0"))
	before, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write("example.com/vf", u, Options{}); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) || !before.ModTime().Equal(after.ModTime()) {
		t.Error("unchanged content was written again")
	}
	u[0].PF = "0000:3b:00.1" // changed content is written
	if err := w.Write("example.com/vf", u, Options{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); !strings.Contains(string(b), "0000:3b:00.1") {
		t.Errorf("changed content not written: %s", b)
	}
}
