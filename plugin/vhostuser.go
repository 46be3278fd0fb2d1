package plugin

import (
	"context"
	"reflect"
	"strings"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/sriov-cdi/sriov-cdi/cdi"
	"github.com/sriov-cdi/sriov-cdi/core/binding"
	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/core/vhostuser"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// vhostDirs is what the plugin uses of a vhost-user pool's directories
// (core/vhostuser.Dirs); the key is the slot ID.
type vhostDirs interface {
	Check() error
	PrepareFresh(key string) (vhostuser.Allocation, error)
	Release(key string) error
	ReleaseUnchangedSince(key string, t time.Time) (bool, error)
	ChangedAt(key string) (time.Time, bool, error)
	Reconcile(keep func(key string) bool) ([]string, error)
}

var _ vhostDirs = (*vhostuser.Dirs)(nil)

// vhostDirsFor returns the directories of the server's vhost-user pool
// with config cfg, made anew when the pool's vhostUser block changed.
func (s *poolServer) vhostDirsFor(cfg *config.Pool) (vhostDirs, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.vhost != nil && reflect.DeepEqual(s.vhostCfg, cfg.VhostUser) {
		return s.vhost, nil
	}
	d, err := vhostuser.ForPool(s.resource, cfg, s.log)
	if err != nil {
		return nil, err
	}
	c := *cfg.VhostUser
	s.vhost, s.vhostCfg = d, &c
	return d, nil
}

// allocateVhostUser answers an Allocate of a vhost-user pool: each slot
// gets a fresh directory (whatever an earlier pod left in it goes; kubelet
// allocates a slot no container holds), its device-info file, and each
// container its CDI devices — whose spec, written when the pool was
// planned, already mounts that directory (see cdi's vhostUserSpec) — and
// VhostUserEnv with its sockets. A failure removes the directories this
// request made.
func (s *poolServer) allocateVhostUser(cfg *config.Pool, per [][]pool.Unit, all []pool.Unit) (*pluginapi.AllocateResponse, error) {
	dirs, err := s.vhostDirsFor(cfg)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "allocate %s: %v", s.resource, err)
	}
	allocs := make(map[sysfs.Address]vhostuser.Allocation, len(all))
	for _, u := range all {
		a, err := dirs.PrepareFresh(string(u.ID))
		if err != nil {
			for id := range allocs {
				if rerr := dirs.Release(string(id)); rerr != nil {
					s.log.Error("remove the vhost-user directory of a failed allocate", zap.String("device", string(id)), zap.Error(rerr))
				}
			}
			s.log.Error("allocate failed", zap.Strings("devices", unitIDs(all)), zap.Error(err))
			return nil, status.Errorf(codes.FailedPrecondition, "allocate %s: %v", s.resource, err)
		}
		allocs[u.ID] = a
	}
	if s.devinfo != nil {
		for _, u := range all {
			// Auxiliary for CNIs and KubeVirt: a failure is logged, not fatal.
			if err := s.devinfo.WriteInfo(s.resource, u.ID, allocs[u.ID].DeviceInfo); err != nil {
				s.log.Warn("device-info file not written", zap.String("device", string(u.ID)), zap.Error(err))
			}
		}
	}
	resp := &pluginapi.AllocateResponse{}
	for i, units := range per {
		r := &pluginapi.ContainerAllocateResponse{}
		var socks, names []string
		for _, u := range units {
			name := cdi.QualifiedName(s.resource, u.ID)
			names = append(names, name)
			r.CdiDevices = append(r.CdiDevices, &pluginapi.CDIDevice{Name: name})
			socks = append(socks, allocs[u.ID].ContainerSocket)
		}
		if len(units) > 0 {
			r.Envs = map[string]string{config.VhostUserEnv(s.resource): strings.Join(socks, ",")}
		}
		if cfg.CDIAnnotations && len(units) > 0 {
			key, value, err := cdiAnnotation(cfg.Name, i, units, names)
			if err != nil {
				return nil, status.Errorf(codes.Internal, "allocate %s: %v", s.resource, err)
			}
			r.Annotations = map[string]string{key: value}
		}
		resp.ContainerResponses = append(resp.ContainerResponses, r)
	}
	for _, u := range all {
		s.log.Info("allocated", zap.String("device", string(u.ID)), zap.String("path", allocs[u.ID].HostDir))
	}
	return resp, nil
}

// vhostDirsOf returns the directories of e's pool when it is a vhost-user
// pool, else nil.
func vhostDirsOf(e *managed) vhostDirs {
	_, cfg, _, _ := e.srv.snapshot()
	if cfg == nil || cfg.Mode != config.ModeVhostUser || cfg.VhostUser == nil {
		return nil
	}
	d, err := e.srv.vhostDirsFor(cfg)
	if err != nil {
		return nil
	}
	return d
}

// reconcileVhostUser runs at start, before any pool registers: it says
// when a vhost-user pool's base directory is unusable (Allocate would
// fail), and removes the directories of slots the pool no longer has (its
// count went down) unless kubelet lists them as assigned. Directories of
// the pool's slots are left to the release poll, which removes those
// kubelet no longer holds under the release rule (a kubelet that is
// restarting too answers incompletely).
func (m *Manager) reconcileVhostUser(ctx context.Context) {
	var assigned map[string]map[sysfs.Address]bool
	asked := false
	for _, e := range m.snapshotEndpoints() {
		dirs := vhostDirsOf(e)
		if dirs == nil {
			continue
		}
		p, _, _, _ := e.srv.snapshot()
		log := m.log.With(zap.String("pool", p.Name), zap.String("resource", e.ep.resource))
		if err := dirs.Check(); err != nil {
			log.Error("vhost-user pool cannot prepare slots; Allocate fails until this is fixed", zap.Error(err))
			continue
		}
		if !asked {
			asked = true
			if m.opts.PodResources != nil {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				resp, err := m.opts.PodResources.List(cctx, &podresourcesv1.ListPodResourcesRequest{})
				cancel()
				if err == nil {
					assigned = binding.AssignedDevices(resp)
				} else {
					log.Info("kubelet's PodResources API did not answer; directories of slots beyond the pool's count are kept", zap.Error(err))
				}
			}
		}
		removed, err := dirs.Reconcile(func(key string) bool {
			return p.Unit(sysfs.Address(key)) != nil || assigned == nil || assigned[e.ep.resource][sysfs.Address(key)]
		})
		for _, k := range removed {
			log.Info("vhost-user directory of a slot the pool no longer has removed", zap.String("device", k))
		}
		if err != nil {
			log.Warn("reconcile vhost-user directories", zap.Error(err))
		}
	}
}
