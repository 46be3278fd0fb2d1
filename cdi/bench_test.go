package cdi

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
	"github.com/sriov-cdi/sriov-cdi/sysfs/sysfstest"
)

// bigHost is 8 PFs x 128 VFs (1,024 VFs, each in its own IOMMU group) and
// one vfio pool per PF: 8 specs of 128 devices.
func bigHost(b *testing.B) ([]pool.Pool, *sysfs.Host) {
	b.Helper()
	dir := b.TempDir()
	tree := sysfstest.SRIOVNICHost(dir, 8, 128)
	if err := tree.Write(); err != nil {
		b.Fatal(err)
	}
	h, err := sysfs.Scan(sysfs.Root{Sys: tree.Sys(), Dev: tree.Dev()})
	if err != nil {
		b.Fatal(err)
	}
	var y strings.Builder
	y.WriteString("pools:\n")
	for i := range 8 {
		fmt.Fprintf(&y, "- name: pf%d\n  mode: vfio\n  selectors: {rootDevices: [\"0000:%02x:00.0\"]}\n", i, i+1)
	}
	cfg, err := config.Parse("bench", []byte(y.String()))
	if err != nil {
		b.Fatal(err)
	}
	plan := pool.Build(cfg, h)
	n := 0
	for _, p := range plan.Pools {
		n += len(p.Units)
	}
	if n != 1024 {
		b.Fatalf("%d units, want 1024", n)
	}
	return plan.Pools, h
}

// BenchmarkGenerateAndWrite1024 builds the specs of 1,024 devices and
// writes them into an empty directory.
func BenchmarkGenerateAndWrite1024(b *testing.B) {
	pools, h := bigHost(b)
	dir := b.TempDir()
	w, err := NewWriter(dir, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		files, _ := filepath.Glob(filepath.Join(dir, SpecFilePrefix+"*"))
		for _, f := range files {
			os.Remove(f)
		}
		b.StartTimer()
		specs, err := SpecsFor(pools, h, sysfs.HostRoot())
		if err != nil {
			b.Fatal(err)
		}
		if changed, err := w.Sync(specs); err != nil || !changed {
			b.Fatalf("Sync() = %v, %v", changed, err)
		}
	}
}

// BenchmarkSyncNoChange1024 rebuilds the same 1,024-device specs and syncs
// them over identical files: no file may be written.
func BenchmarkSyncNoChange1024(b *testing.B) {
	pools, h := bigHost(b)
	dir := b.TempDir()
	w, err := NewWriter(dir, nil)
	if err != nil {
		b.Fatal(err)
	}
	specs, _ := SpecsFor(pools, h, sysfs.HostRoot())
	if _, err := w.Sync(specs); err != nil {
		b.Fatal(err)
	}
	before := inodes(b, dir)
	b.ReportAllocs()
	for b.Loop() {
		specs, err := SpecsFor(pools, h, sysfs.HostRoot())
		if err != nil {
			b.Fatal(err)
		}
		if changed, err := w.Sync(specs); err != nil || changed {
			b.Fatalf("Sync() = %v, %v; want no change", changed, err)
		}
	}
	if after := inodes(b, dir); fmt.Sprint(before) != fmt.Sprint(after) {
		b.Fatalf("files were rewritten: %v -> %v", before, after)
	}
}

// BenchmarkSpecsFor1024 is the pure part alone.
func BenchmarkSpecsFor1024(b *testing.B) {
	pools, h := bigHost(b)
	b.ReportAllocs()
	var specs []*cdispec.Spec
	for b.Loop() {
		specs, _ = SpecsFor(pools, h, sysfs.HostRoot())
	}
	_ = specs
}

func inodes(b *testing.B, dir string) map[string]string {
	b.Helper()
	out := map[string]string{}
	files, _ := filepath.Glob(filepath.Join(dir, SpecFilePrefix+"*"))
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			b.Fatal(err)
		}
		out[filepath.Base(f)] = fmt.Sprint(fi.Sys().(*syscall.Stat_t).Ino, fi.ModTime().UnixNano())
	}
	return out
}
