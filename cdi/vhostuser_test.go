package cdi

import (
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	rspec "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// A vhost-user pool's spec, written by the Writer and read by the CDI
// library, injects each slot's directory as a bind mount and its socket
// variable; two slots in one container get two directories.
func TestVhostUserSpecInjects(t *testing.T) {
	cfg, err := config.Parse("c.yaml", []byte(`
resourcePrefix: example.com
pools: [{name: vhu, mode: vhost-user, vhostUser: {count: 3, baseDir: /run/vhu, containerPath: /var/run/vhost, socketName: sock, numaNode: 0}}]
`))
	if err != nil {
		t.Fatal(err)
	}
	plan := pool.Build(cfg, &sysfs.Host{})
	specs, err := SpecsFor(plan.Pools, &sysfs.Host{}, sysfs.Root{})
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) != 1 || specs[0].Kind != "example.com/vhu" || len(specs[0].Devices) != 3 {
		t.Fatalf("specs: %+v", specs)
	}
	cache := cacheOf(t, filepath.Join(t.TempDir(), "cdi"), specs)
	if diff := cmp.Diff([]string{"example.com/vhu=slot-0", "example.com/vhu=slot-1", "example.com/vhu=slot-2"}, cache.ListDevices()); diff != "" {
		t.Errorf("devices (-want +got):\n%s", diff)
	}
	oci := &rspec.Spec{Process: &rspec.Process{}, Linux: &rspec.Linux{}}
	if _, err := cache.InjectDevices(oci, "example.com/vhu=slot-2", "example.com/vhu=slot-0"); err != nil {
		t.Fatal(err)
	}
	opts := []string{"rbind", "rw", "nosuid", "nodev", "noexec"}
	wantMounts := []rspec.Mount{
		{Source: "/run/vhu/sriov-cdi.vhu.slot-2", Destination: "/var/run/vhost/slot-2", Type: "bind", Options: opts},
		{Source: "/run/vhu/sriov-cdi.vhu.slot-0", Destination: "/var/run/vhost/slot-0", Type: "bind", Options: opts},
	}
	if diff := cmp.Diff(wantMounts, oci.Mounts); diff != "" {
		t.Errorf("mounts (-want +got):\n%s", diff)
	}
	wantEnv := []string{"SRIOV_CDI_VHOSTUSER_EXAMPLE_COM_VHU_SLOT_2=/var/run/vhost/slot-2/sock", "SRIOV_CDI_VHOSTUSER_EXAMPLE_COM_VHU_SLOT_0=/var/run/vhost/slot-0/sock"}
	if diff := cmp.Diff(wantEnv, oci.Process.Env, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
	if len(oci.Linux.Devices) != 0 {
		t.Errorf("a vhost-user slot injected device nodes: %+v", oci.Linux.Devices)
	}
}
