package plugin

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// TestContainerResponseRDMAVhostNet: an rdma+vhostNet kernel pool answers
// with the RDMA variable, and with deviceNodes (runtimes without CDI) with
// the RDMA nodes of the VF, rdma_cm where the host has it, vhost-net and
// tun, each once.
func TestContainerResponseRDMAVhostNet(t *testing.T) {
	dev := t.TempDir()
	units := []pool.Unit{
		{ID: "0000:3b:00.2", Members: []sysfs.Address{"0000:3b:00.2"}, RDMA: []sysfs.RDMADevice{{Name: "mlx5_2", Nodes: []string{"uverbs2", "umad2", "issm2"}}}},
		{ID: "0000:3b:00.3", Members: []sysfs.Address{"0000:3b:00.3"}, RDMA: []sysfs.RDMADevice{{Name: "mlx5_3", Nodes: []string{"uverbs3"}}}},
	}
	cfg := &config.Pool{Name: "roce", Mode: config.ModeKernel, RDMA: true, VhostNet: true, DeviceNodes: true}
	spec := func(p string) *pluginapi.DeviceSpec {
		return &pluginapi.DeviceSpec{ContainerPath: "/dev/" + p, HostPath: dev + "/" + p, Permissions: "rw"}
	}
	for _, withCM := range []bool{false, true} {
		if withCM {
			if err := os.MkdirAll(filepath.Join(dev, "infiniband"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dev, "infiniband", "rdma_cm"), nil, 0o666); err != nil {
				t.Fatal(err)
			}
		}
		r, err := containerResponse("sriov-cdi.io/roce", cfg, units, dev, 0)
		if err != nil {
			t.Fatal(err)
		}
		want := []*pluginapi.DeviceSpec{spec("infiniband/uverbs2"), spec("infiniband/umad2"), spec("infiniband/issm2"), spec("infiniband/uverbs3")}
		if withCM {
			want = append(want, spec("infiniband/rdma_cm"))
		}
		want = append(want, spec("vhost-net"), spec("net/tun"))
		if diff := cmp.Diff(want, r.Devices, cmp.Comparer(func(a, b *pluginapi.DeviceSpec) bool {
			return a.ContainerPath == b.ContainerPath && a.HostPath == b.HostPath && a.Permissions == b.Permissions
		})); diff != "" {
			t.Errorf("rdma_cm %v: devices (-want +got)\n%s", withCM, diff)
		}
		for k, v := range map[string]string{"SRIOV_CDI_RDMA_SRIOV_CDI_IO_ROCE_0000_3B_00_2": "mlx5_2", "SRIOV_CDI_RDMA_SRIOV_CDI_IO_ROCE_0000_3B_00_3": "mlx5_3"} {
			if r.Envs[k] != v {
				t.Errorf("env %s = %q, want %q", k, r.Envs[k], v)
			}
		}
	}
	// Without deviceNodes the CDI devices carry the nodes: none here.
	cfg.DeviceNodes = false
	r, err := containerResponse("sriov-cdi.io/roce", cfg, units, dev, 0)
	if err != nil || len(r.Devices) != 0 {
		t.Errorf("without deviceNodes: devices %v, err %v", r.Devices, err)
	}
}
