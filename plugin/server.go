package plugin

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/sriov-cdi/sriov-cdi/cdi"
	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/deviceinfo"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/plugin/metrics"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// Preparer makes units ready before Allocate returns (vfio binding). It
// returns how to undo what it changed (nil when it changed nothing), which
// Allocate calls when it fails after preparing: a failed Allocate leaves
// the host as it found it.
type Preparer interface {
	Prepare(ctx context.Context, pc *config.Pool, units []pool.Unit) (undo func(context.Context) error, err error)
}

// noPrepare is the null Preparer: kernel pools and tests.
type noPrepare struct{}

func (noPrepare) Prepare(context.Context, *config.Pool, []pool.Unit) (func(context.Context) error, error) {
	return nil, nil
}

// poolServer is the DevicePluginServer of one pool.
type poolServer struct {
	pluginapi.UnimplementedDevicePluginServer

	resource string
	log      *zap.Logger
	prepare  Preparer
	devRoot  string
	metrics  *metrics.Metrics
	devinfo  *deviceinfo.Writer // nil: no device-info files
	// refresh re-reads the given functions and rewrites CDI specs; called
	// after Prepare changed drivers, before Allocate answers.
	refresh func(ctx context.Context, addrs []sysfs.Address) error

	mu       sync.Mutex
	pool     *pool.Pool             // current plan of this pool
	cfg      *config.Pool           // current config of this pool
	version  uint64                 // bumps on every change of the advertised list
	changed  chan struct{}          // closed and replaced on every change
	inFlight map[sysfs.Address]bool // IDs inside a running Allocate
	stopped  bool
	// vhost: the directories of a vhost-user pool, made for vhostCfg
	// (vhostDirsFor).
	vhost    vhostDirs
	vhostCfg *config.VhostUser
}

var _ pluginapi.DevicePluginServer = (*poolServer)(nil)

func newPoolServer(p *pool.Pool, devRoot string, prep Preparer, mt *metrics.Metrics, log *zap.Logger) *poolServer {
	if prep == nil {
		prep = noPrepare{}
	}
	return &poolServer{
		resource: p.Resource, log: log.With(zap.String("pool", p.Name), zap.String("resource", p.Resource)),
		prepare: prep, devRoot: devRoot, metrics: mt, pool: p, cfg: p.Config,
		changed: make(chan struct{}), inFlight: map[sysfs.Address]bool{},
	}
}

// update replaces the plan of the pool and wakes ListAndWatch streams when
// the advertised list changed. It reports whether it did.
func (s *poolServer) update(p *pool.Pool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg = p.Config
	old := s.pool
	s.pool = p
	if slices.EqualFunc(apiDevices(old), apiDevices(p), devicesEqual) {
		return false
	}
	s.version++
	close(s.changed)
	s.changed = make(chan struct{})
	return true
}

// stop makes every ListAndWatch stream send an empty list and return.
func (s *poolServer) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.stopped = true
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *poolServer) snapshot() (*pool.Pool, *config.Pool, <-chan struct{}, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pool, s.cfg, s.changed, s.stopped
}

// GetDevicePluginOptions implements pluginapi.DevicePluginServer.
func (s *poolServer) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: true}, nil
}

// ListAndWatch sends the device list now and after every change; unhealthy
// devices are listed as Unhealthy, never hidden. When the pool stops it
// sends an empty list and ends the stream.
func (s *poolServer) ListAndWatch(_ *pluginapi.Empty, stream pluginapi.DevicePlugin_ListAndWatchServer) error {
	for {
		p, _, changed, stopped := s.snapshot()
		devs := apiDevices(p)
		if stopped {
			devs = nil
		}
		if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: devs}); err != nil {
			return err
		}
		s.log.Debug("sent device list", zap.Int("devices", len(devs)), zap.Int("unhealthy", countUnhealthy(devs)))
		if stopped {
			return nil
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		}
	}
}

// GetPreferredAllocation implements pluginapi.DevicePluginServer.
func (s *poolServer) GetPreferredAllocation(_ context.Context, req *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	p, cfg, _, _ := s.snapshot()
	resp := &pluginapi.PreferredAllocationResponse{}
	for _, cr := range req.GetContainerRequests() {
		var avail []pool.Candidate
		for _, id := range cr.GetAvailableDeviceIDs() {
			if u := p.Unit(sysfs.Address(id)); u != nil {
				avail = append(avail, pool.Candidate{ID: u.ID, NUMANode: u.NUMANode, PF: u.PF})
			}
		}
		must := make([]sysfs.Address, 0, len(cr.GetMustIncludeDeviceIDs()))
		for _, id := range cr.GetMustIncludeDeviceIDs() {
			must = append(must, sysfs.Address(id))
		}
		ids := pool.Prefer(avail, must, int(cr.GetAllocationSize()), cfg.AllocationPolicy)
		out := make([]string, len(ids))
		for i, id := range ids {
			out[i] = string(id)
		}
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerPreferredAllocationResponse{DeviceIDs: out})
	}
	return resp, nil
}

// Allocate checks every requested ID (known, healthy, not inside another
// running Allocate), prepares the units (vfio binding) and answers per
// container with CDI devices, env and, when configured, device nodes and
// CDI annotations. It never returns a partial answer.
func (s *poolServer) Allocate(ctx context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	start := time.Now()
	p, cfg, _, _ := s.snapshot()
	resp, err := s.allocate(ctx, p, cfg, req)
	result := "ok"
	if err != nil {
		result = "error"
	}
	s.metrics.Allocations.WithLabelValues(p.Name, result).Inc()
	s.metrics.AllocateSeconds.WithLabelValues(p.Name).Observe(time.Since(start).Seconds())
	return resp, err
}

func (s *poolServer) allocate(ctx context.Context, p *pool.Pool, cfg *config.Pool, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	var all []pool.Unit
	per := make([][]pool.Unit, len(req.GetContainerRequests()))
	named := map[string]bool{}
	for i, cr := range req.GetContainerRequests() {
		for _, id := range cr.GetDevicesIds() {
			u := p.Unit(sysfs.Address(id))
			switch {
			case named[id]:
				return nil, status.Errorf(codes.InvalidArgument, "allocate %s: device %q is named twice in one Allocate request; a device goes to one container", s.resource, id)
			case u == nil:
				return nil, status.Errorf(codes.InvalidArgument, "allocate %s: unknown device %q (not advertised by this pool)", s.resource, id)
			case !u.Healthy:
				return nil, status.Errorf(codes.FailedPrecondition, "allocate %s: device %q is unhealthy: %s", s.resource, id, u.Reason)
			}
			named[id] = true
			per[i] = append(per[i], *u)
			all = append(all, *u)
		}
	}
	if err := s.claim(all); err != nil {
		return nil, err
	}
	defer s.release(all)
	if cfg.Mode == config.ModeVhostUser {
		return s.allocateVhostUser(cfg, per, all)
	}

	undo, err := s.prepare.Prepare(ctx, cfg, all)
	if err != nil {
		s.log.Error("allocate failed", zap.Strings("devices", unitIDs(all)), zap.Error(err))
		return nil, status.Errorf(codes.Internal, "allocate %s: %v", s.resource, err)
	}
	var addrs []sysfs.Address
	for _, u := range all {
		addrs = append(addrs, u.Members...)
	}
	// fail undoes the preparation of a request that cannot be answered.
	fail := func(err error) error {
		s.log.Error("allocate failed after preparing devices", zap.Strings("devices", unitIDs(all)), zap.Error(err))
		if undo != nil {
			uctx := context.WithoutCancel(ctx)
			if uerr := undo(uctx); uerr != nil {
				s.log.Error("roll back of a failed allocate failed; `sriov-cdi restore` finishes it", zap.Strings("devices", unitIDs(all)), zap.Error(uerr))
				err = fmt.Errorf("%w; roll back: %w", err, uerr)
			} else {
				s.log.Info("failed allocate rolled back", zap.Strings("devices", unitIDs(all)))
			}
			if s.refresh != nil {
				_ = s.refresh(uctx, addrs) // best effort: the periodic rescan follows anyway
			}
		}
		return status.Errorf(codes.Internal, "allocate %s: %v", s.resource, err)
	}
	if cfg.Mode == config.ModeVFIO && s.refresh != nil {
		// Drivers changed: the next list and the CDI specs must show it
		// before the runtime injects the devices.
		if err := s.refresh(ctx, addrs); err != nil {
			return nil, fail(err)
		}
		// Never answer with a CDI name the specs no longer define.
		if p, _, _, _ := s.snapshot(); p != nil {
			for _, u := range all {
				if p.Unit(u.ID) == nil {
					return nil, fail(fmt.Errorf("device %q left the pool while it was prepared (see the log for the reason)", u.ID))
				}
			}
		}
	}
	if s.devinfo != nil {
		// Auxiliary for Multus: a failure is logged, not fatal.
		if err := s.devinfo.Write(s.resource, all, deviceinfo.Options{RDMA: cfg.RDMA && cfg.Mode == config.ModeKernel, VhostNet: cfg.VhostNet}); err != nil {
			s.log.Warn("device-info files not written", zap.Strings("devices", unitIDs(all)), zap.Error(err))
		}
	}
	resp := &pluginapi.AllocateResponse{}
	for i, units := range per {
		cresp, err := containerResponse(s.resource, cfg, units, s.devRoot, i)
		if err != nil {
			return nil, fail(err)
		}
		resp.ContainerResponses = append(resp.ContainerResponses, cresp)
	}
	s.log.Info("allocated", zap.Strings("devices", unitIDs(all)))
	return resp, nil
}

// claim marks units as being allocated; a unit already inside another
// running Allocate is refused: kubelet must never hand one device to two
// containers.
func (s *poolServer) claim(units []pool.Unit) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[sysfs.Address]bool{}
	for _, u := range units {
		if s.inFlight[u.ID] || seen[u.ID] {
			return status.Errorf(codes.FailedPrecondition, "allocate %s: device %q is already being allocated to another container", s.resource, u.ID)
		}
		seen[u.ID] = true
	}
	for id := range seen {
		s.inFlight[id] = true
	}
	return nil
}

func (s *poolServer) release(units []pool.Unit) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range units {
		delete(s.inFlight, u.ID)
	}
}

// PreStartContainer implements pluginapi.DevicePluginServer; not required.
func (s *poolServer) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

// containerResponse builds one container's answer. Variable names carry the
// resource, so answers of two pools for one container never overwrite each
// other.
func containerResponse(resource string, cfg *config.Pool, units []pool.Unit, devRoot string, idx int) (*pluginapi.ContainerAllocateResponse, error) {
	r := &pluginapi.ContainerAllocateResponse{}
	var addrs []sysfs.Address
	var cdiNames []string
	groups := map[string]bool{}
	for _, u := range units {
		name := cdi.QualifiedName(resource, u.ID)
		cdiNames = append(cdiNames, name)
		r.CdiDevices = append(r.CdiDevices, &pluginapi.CDIDevice{Name: name})
		addrs = append(addrs, u.Members...)
		if u.Group != "" {
			groups[u.Group] = true
		}
	}
	// Every function handed out, in the formats the SR-IOV device plugin
	// (Kata's agent remaps it) and KubeVirt use.
	r.Envs = cdi.AllocateEnv(resource, addrs)
	if cfg.DeviceNodes && cfg.Mode == config.ModeVFIO {
		r.Devices = append(r.Devices, &pluginapi.DeviceSpec{ContainerPath: "/dev/vfio/vfio", HostPath: devRoot + "/vfio/vfio", Permissions: "rw"})
		gs := make([]string, 0, len(groups))
		for g := range groups {
			gs = append(gs, g)
		}
		sort.Strings(gs)
		for _, g := range gs {
			r.Devices = append(r.Devices, &pluginapi.DeviceSpec{ContainerPath: "/dev/vfio/" + g, HostPath: devRoot + "/vfio/" + g, Permissions: "rw"})
		}
	}
	if cfg.Mode == config.ModeKernel && cfg.RDMA {
		// The CDI devices set the same variables; here for runtimes without CDI.
		for _, u := range units {
			if len(u.RDMA) > 0 {
				r.Envs[cdi.RDMAEnv(resource, u.ID)] = rdmaNames(u.RDMA)
			}
		}
	}
	if cfg.DeviceNodes {
		r.Devices = append(r.Devices, extraDeviceSpecs(cfg, units, devRoot)...)
	}
	if cfg.CDIAnnotations {
		key, value, err := cdiAnnotation(cfg.Name, idx, units, cdiNames)
		if err != nil {
			return nil, err
		}
		r.Annotations = map[string]string{key: value}
	}
	return r, nil
}

// extraDeviceSpecs are the RDMA (kernel pools) and vhost-net nodes of
// units as plain device specs, the same nodes their CDI devices add, for
// runtimes without CDI; each node once. rdma_cm goes with RDMA devices when
// the host has it.
func extraDeviceSpecs(cfg *config.Pool, units []pool.Unit, devRoot string) []*pluginapi.DeviceSpec {
	var out []*pluginapi.DeviceSpec
	add := func(p string) {
		out = append(out, &pluginapi.DeviceSpec{ContainerPath: "/dev/" + p, HostPath: devRoot + "/" + p, Permissions: "rw"})
	}
	if cfg.Mode == config.ModeKernel && cfg.RDMA {
		found := false
		for _, u := range units {
			for _, r := range u.RDMA {
				for _, n := range r.Nodes {
					add(sysfs.RDMADevDir + "/" + n)
					found = true
				}
			}
		}
		if _, err := os.Stat(devRoot + "/" + sysfs.RDMADevDir + "/" + sysfs.RDMACMNode); found && err == nil {
			add(sysfs.RDMADevDir + "/" + sysfs.RDMACMNode)
		}
	}
	if cfg.VhostNet && len(units) > 0 {
		add("vhost-net")
		add("net/tun")
	}
	return out
}

func rdmaNames(rs []sysfs.RDMADevice) string {
	names := make([]string, len(rs))
	for i, r := range rs {
		names[i] = r.Name
	}
	return strings.Join(names, ",")
}

// cdiAnnotation returns a cdi.k8s.io/* annotation unique per pool and
// container: the key carries the pool and the first device (':' is not
// allowed in keys).
func cdiAnnotation(poolName string, idx int, units []pool.Unit, names []string) (string, string, error) {
	if len(units) == 0 {
		return "", "", fmt.Errorf("no devices for annotation")
	}
	id := strings.NewReplacer(":", "-").Replace(string(units[0].ID))
	return "cdi.k8s.io/sriov-cdi_" + poolName + "_" + id, strings.Join(names, ","), nil
}

func apiDevices(p *pool.Pool) []*pluginapi.Device {
	if p == nil {
		return nil
	}
	out := make([]*pluginapi.Device, 0, len(p.Units))
	for _, u := range p.Units {
		d := &pluginapi.Device{ID: string(u.ID), Health: pluginapi.Healthy}
		if !u.Healthy {
			d.Health = pluginapi.Unhealthy
		}
		if u.NUMANode >= 0 {
			d.Topology = &pluginapi.TopologyInfo{Nodes: []*pluginapi.NUMANode{{ID: int64(u.NUMANode)}}}
		}
		out = append(out, d)
	}
	return out
}

func devicesEqual(a, b *pluginapi.Device) bool {
	return a.ID == b.ID && a.Health == b.Health && numaOf(a) == numaOf(b)
}

func numaOf(d *pluginapi.Device) int64 {
	if d.Topology == nil || len(d.Topology.Nodes) == 0 {
		return -1
	}
	return d.Topology.Nodes[0].ID
}

func countUnhealthy(devs []*pluginapi.Device) int {
	n := 0
	for _, d := range devs {
		if d.Health != pluginapi.Healthy {
			n++
		}
	}
	return n
}

func unitIDs(units []pool.Unit) []string {
	out := make([]string, len(units))
	for i, u := range units {
		out[i] = string(u.ID)
	}
	return out
}
