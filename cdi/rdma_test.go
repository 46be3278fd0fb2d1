package cdi

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

var (
	rdmaVhostOn = &config.Pool{Mode: config.ModeKernel, RDMA: true, VhostNet: true}
	roceUnit    = pool.Unit{ID: "0000:3b:00.2", Members: []sysfs.Address{"0000:3b:00.2"}, Netdevs: []string{"ens2f0v0"},
		RDMA: []sysfs.RDMADevice{{Name: "mlx5_2", Nodes: []string{"uverbs2", "umad2", "issm2"}}}}
)

func TestSpecForRDMAVhostNet(t *testing.T) {
	mode := os.FileMode(0o666)
	tunPinned := &cdispec.DeviceNode{Path: "/dev/net/tun", Type: "c", Major: 10, Minor: 200, FileMode: &mode}
	vhostPinned := &cdispec.DeviceNode{Path: "/dev/vhost-net", Type: "c", Major: 10, Minor: 238, FileMode: &mode}
	tests := []struct {
		name string
		pool pool.Pool
		host *sysfs.Host
		root sysfs.Root
		want []cdispec.ContainerEdits // per device
	}{
		{
			name: "rdma and vhostNet, every node on the host: read at injection",
			pool: pool.Pool{Name: "roce", Resource: "sriov-cdi.io/roce", Mode: config.ModeKernel, Config: rdmaVhostOn, Units: []pool.Unit{roceUnit}},
			host: &sysfs.Host{RDMACM: true, VhostNetNode: true, TunNode: true},
			root: sysfs.HostRoot(),
			want: []cdispec.ContainerEdits{{
				Env: []string{"PCIDEVICE_SRIOV-CDI_IO_ROCE_0000_3B_00_2=0000:3b:00.2", "SRIOV_CDI_NETDEV_SRIOV_CDI_IO_ROCE_0000_3B_00_2=ens2f0v0", "SRIOV_CDI_RDMA_SRIOV_CDI_IO_ROCE_0000_3B_00_2=mlx5_2"},
				DeviceNodes: []*cdispec.DeviceNode{
					{Path: "/dev/infiniband/uverbs2"}, {Path: "/dev/infiniband/umad2"}, {Path: "/dev/infiniband/issm2"}, {Path: "/dev/infiniband/rdma_cm"},
					{Path: "/dev/vhost-net"}, {Path: "/dev/net/tun"},
				},
			}},
		},
		{
			name: "no rdma_cm, vhost-net and tun not on the host (pinned), host /dev elsewhere",
			pool: pool.Pool{Name: "roce", Resource: "sriov-cdi.io/roce", Mode: config.ModeKernel, Config: rdmaVhostOn, Units: []pool.Unit{roceUnit}},
			host: &sysfs.Host{},
			root: sysfs.Root{Sys: "/host/sys", Dev: "/host/dev"},
			want: []cdispec.ContainerEdits{{
				Env: []string{"PCIDEVICE_SRIOV-CDI_IO_ROCE_0000_3B_00_2=0000:3b:00.2", "SRIOV_CDI_NETDEV_SRIOV_CDI_IO_ROCE_0000_3B_00_2=ens2f0v0", "SRIOV_CDI_RDMA_SRIOV_CDI_IO_ROCE_0000_3B_00_2=mlx5_2"},
				DeviceNodes: []*cdispec.DeviceNode{
					{Path: "/dev/infiniband/uverbs2", HostPath: "/host/dev/infiniband/uverbs2"}, {Path: "/dev/infiniband/umad2", HostPath: "/host/dev/infiniband/umad2"},
					{Path: "/dev/infiniband/issm2", HostPath: "/host/dev/infiniband/issm2"},
					vhostPinned, tunPinned,
				},
			}},
		},
		{
			name: "rdma unit without an RDMA device (unhealthy): no RDMA nodes, not even rdma_cm",
			pool: pool.Pool{Name: "roce", Resource: "sriov-cdi.io/roce", Mode: config.ModeKernel, Config: &config.Pool{RDMA: true}, Units: []pool.Unit{{ID: "0000:3b:00.3"}}},
			host: &sysfs.Host{RDMACM: true},
			root: sysfs.HostRoot(),
			want: []cdispec.ContainerEdits{{Env: []string{"PCIDEVICE_SRIOV-CDI_IO_ROCE_0000_3B_00_3=0000:3b:00.3"}}},
		},
		{
			name: "RDMA devices of a pool without rdma are not injected",
			pool: pool.Pool{Name: "roce", Resource: "sriov-cdi.io/roce", Mode: config.ModeKernel, Units: []pool.Unit{roceUnit}},
			host: &sysfs.Host{RDMACM: true},
			root: sysfs.HostRoot(),
			want: []cdispec.ContainerEdits{{Env: []string{"PCIDEVICE_SRIOV-CDI_IO_ROCE_0000_3B_00_2=0000:3b:00.2", "SRIOV_CDI_NETDEV_SRIOV_CDI_IO_ROCE_0000_3B_00_2=ens2f0v0"}}},
		},
		{
			name: "vfio with vhostNet (DPDK's virtio-user exception path)",
			pool: pool.Pool{Name: "dpdk", Resource: "sriov-cdi.io/dpdk", Mode: config.ModeVFIO, Config: &config.Pool{Mode: config.ModeVFIO, VhostNet: true},
				Units: []pool.Unit{{ID: "0000:3b:02.0", Members: []sysfs.Address{"0000:3b:02.0"}, Group: "41"}}},
			host: &sysfs.Host{VhostNetNode: true, TunNode: true},
			root: sysfs.HostRoot(),
			want: []cdispec.ContainerEdits{{
				Env:         []string{"PCIDEVICE_SRIOV-CDI_IO_DPDK_0000_3B_02_0=0000:3b:02.0"},
				DeviceNodes: []*cdispec.DeviceNode{{Path: "/dev/vfio/41"}, {Path: "/dev/vhost-net"}, {Path: "/dev/net/tun"}},
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := SpecFor(&tt.pool, tt.host, tt.root)
			if err != nil {
				t.Fatal(err)
			}
			var got []cdispec.ContainerEdits
			for _, d := range spec.Devices {
				got = append(got, d.ContainerEdits)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("device edits (-want +got)\n%s", diff)
			}
			if err := Validate(spec); err != nil {
				t.Errorf("Validate() = %v", err)
			}
		})
	}
}

// TestInjectRDMAVhostNet injects, with the CDI library, one device of an
// rdma+vhostNet pool and one of a vhostNet pool into one container: the
// RDMA nodes of that VF and rdma_cm land with the numbers of the host's
// nodes (real character devices made here), vhost-net once, and tun with
// its pinned numbers since this host /dev has none.
func TestInjectRDMAVhostNet(t *testing.T) {
	dev := filepath.Join(t.TempDir(), "dev")
	nodes := map[string]uint64{
		"infiniband/uverbs2": unix.Mkdev(231, 194), "infiniband/umad2": unix.Mkdev(231, 2), "infiniband/issm2": unix.Mkdev(231, 66),
		"infiniband/uverbs3": unix.Mkdev(231, 195), "infiniband/rdma_cm": unix.Mkdev(10, 122), "vhost-net": unix.Mkdev(10, 238),
	}
	for p, d := range nodes {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dev, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mknod(filepath.Join(dev, p), unix.S_IFCHR|0o666, int(d)); err != nil {
			t.Skipf("mknod %s: %v (needs root)", p, err)
		}
	}
	root := sysfs.Root{Sys: "/nonexistent", Dev: dev}
	h := &sysfs.Host{RDMACM: true, VhostNetNode: true} // no /dev/net/tun
	pools := []pool.Pool{
		{Name: "roce", Resource: "sriov-cdi.io/roce", Mode: config.ModeKernel, Config: rdmaVhostOn, Units: []pool.Unit{
			roceUnit,
			{ID: "0000:3b:00.3", Members: []sysfs.Address{"0000:3b:00.3"}, RDMA: []sysfs.RDMADevice{{Name: "mlx5_3", Nodes: []string{"uverbs3"}}}},
		}},
		{Name: "net", Resource: "sriov-cdi.io/net", Mode: config.ModeKernel, Config: &config.Pool{VhostNet: true}, Units: []pool.Unit{
			{ID: "0000:5e:00.1", Members: []sysfs.Address{"0000:5e:00.1"}},
		}},
	}
	specs, err := SpecsFor(pools, h, root)
	if err != nil {
		t.Fatal(err)
	}
	cache := cacheOf(t, t.TempDir(), specs)
	oci := baseSpec(nil)
	if _, err := cache.InjectDevices(oci, "sriov-cdi.io/roce=0000:3b:00.2", "sriov-cdi.io/net=0000:5e:00.1"); err != nil {
		t.Fatal(err)
	}
	type node struct {
		Path         string
		Type         string
		Major, Minor int64
	}
	var got []node
	for _, d := range oci.Linux.Devices {
		got = append(got, node{d.Path, d.Type, d.Major, d.Minor})
	}
	want := []node{
		{"/dev/infiniband/uverbs2", "c", 231, 194}, {"/dev/infiniband/umad2", "c", 231, 2}, {"/dev/infiniband/issm2", "c", 231, 66},
		{"/dev/infiniband/rdma_cm", "c", 10, 122}, {"/dev/vhost-net", "c", 10, 238}, {"/dev/net/tun", "c", 10, 200},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("container device nodes (-want +got)\n%s", diff)
	}
	allowed := map[string]bool{}
	for _, r := range oci.Linux.Resources.Devices {
		if r.Allow && r.Major != nil && r.Minor != nil {
			allowed[strings.Join([]string{r.Type, strconv.FormatInt(*r.Major, 10), strconv.FormatInt(*r.Minor, 10)}, ":")] = true
		}
	}
	for _, n := range want {
		if !allowed[strings.Join([]string{n.Type, strconv.FormatInt(n.Major, 10), strconv.FormatInt(n.Minor, 10)}, ":")] {
			t.Errorf("no cgroup rule allows %s (%s %d:%d)", n.Path, n.Type, n.Major, n.Minor)
		}
	}
	if !slices.Contains(oci.Process.Env, "SRIOV_CDI_RDMA_SRIOV_CDI_IO_ROCE_0000_3B_00_2=mlx5_2") {
		t.Errorf("env lacks the RDMA device: %v", oci.Process.Env)
	}
	for _, d := range oci.Linux.Devices {
		if d.Path == "/dev/infiniband/uverbs3" {
			t.Error("the other VF's uverbs3 was injected")
		}
	}
}
