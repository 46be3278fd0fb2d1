package plugin

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/sriov-cdi/sriov-cdi/core/binding"
	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/deviceinfo"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// PodLister is the part of kubelet's PodResources API the plugin uses (the
// release watcher of vfio bindings uses the same).
type PodLister = binding.PodLister

// ReleaseTiming says when a device counts as released by kubelet: the
// PodResources poll period, the grace a new file (or binding) has before
// kubelet must list it as assigned (Allocate writes before kubelet records
// the assignment), and the evidence rule. Zero fields take the defaults
// (DefaultReleaseTiming); shorter values are for labs.
type ReleaseTiming struct {
	Poll  time.Duration
	Grace time.Duration
	Rule  binding.ReleaseRule
}

// DefaultReleaseTiming: a 10 s poll, a 2 minute grace and
// binding.DefaultReleaseRule.
func DefaultReleaseTiming() ReleaseTiming {
	return ReleaseTiming{Poll: 10 * time.Second, Grace: 2 * time.Minute, Rule: binding.DefaultReleaseRule()}
}

// WithDefaults fills zero fields from DefaultReleaseTiming.
func (t ReleaseTiming) WithDefaults() ReleaseTiming {
	d := DefaultReleaseTiming()
	if t.Poll <= 0 {
		t.Poll = d.Poll
	}
	if t.Grace <= 0 {
		t.Grace = d.Grace
	}
	t.Rule = t.Rule.WithDefaults()
	return t
}

// devInfoKey names one device-info file: a device of a resource.
type devInfoKey struct {
	resource string
	id       sysfs.Address
}

// releases decides, with the same rule as the vfio release watcher
// (binding.ReleaseTracker), which devices kubelet released. Created at
// the first poll or registration; a registration (kubelet restarted)
// starts its settle time again.
type releases struct {
	mu      sync.Mutex
	rule    binding.ReleaseRule
	tracker *binding.ReleaseTracker[devInfoKey]
}

func (r *releases) get(now time.Time) *binding.ReleaseTracker[devInfoKey] {
	if r.tracker == nil {
		r.tracker = binding.NewReleaseTracker[devInfoKey](r.rule, now)
	}
	return r.tracker
}

// kubeletRestarted is told of every successful registration.
func (r *releases) kubeletRestarted(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.get(now).KubeletRestarted(now)
}

// releaseDeviceInfo removes the device-info files of devices no container
// holds any more, as kubelet's PodResources API reports them. It runs until
// ctx ends; a failed poll removes nothing.
func (m *Manager) releaseDeviceInfo(ctx context.Context, lister PodLister, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := m.pollReleases(ctx, lister, time.Now); err != nil {
			m.log.Debug("device-info release poll failed; nothing removed", zap.Error(err))
		}
	}
}

// pollReleases lists assigned devices and removes the files of devices the
// release rule says kubelet released. Candidates are the devices of every
// pool not listed as assigned whose file is older than the release grace.
func (m *Manager) pollReleases(ctx context.Context, lister PodLister, clock func() time.Time) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	asked := clock()
	resp, err := lister.List(cctx, &podresourcesv1.ListPodResourcesRequest{})
	if err != nil {
		m.releases.mu.Lock()
		m.releases.get(asked).ListFailed()
		m.releases.mu.Unlock()
		return err
	}
	assigned := binding.AssignedDevices(resp)
	w := m.opts.DeviceInfo
	now := clock()
	var cands []devInfoKey
	held := map[devInfoKey]bool{}
	pools := map[string]string{}    // resource -> pool name, for logs
	vhost := map[string]vhostDirs{} // resource -> directories of a vhost-user pool
	for _, e := range m.snapshotEndpoints() {
		res := e.ep.resource
		p, cfg, _, _ := e.srv.snapshot()
		pools[res] = p.Name
		var dirs vhostDirs
		if cfg != nil && cfg.Mode == config.ModeVhostUser {
			if dirs = vhostDirsOf(e); dirs == nil {
				continue
			}
			vhost[res] = dirs
		}
		for _, u := range p.Units {
			k := devInfoKey{res, u.ID}
			if assigned[res][u.ID] {
				held[k] = true
				continue
			}
			if at, ok := allocatedAt(w, dirs, res, u.ID); ok && now.Sub(at) > m.opts.Release.Grace {
				cands = append(cands, k)
			}
		}
	}
	m.releases.mu.Lock()
	released := m.releases.get(asked).Observe(asked, held, cands, now)
	m.releases.mu.Unlock()
	byRes := map[string][]sysfs.Address{}
	var order []string
	for _, k := range released {
		if byRes[k.resource] == nil {
			order = append(order, k.resource)
		}
		byRes[k.resource] = append(byRes[k.resource], k.id)
	}
	for _, res := range order {
		ids := byRes[res]
		if dirs := vhost[res]; dirs != nil {
			ids = m.releaseVhostUser(dirs, pools[res], res, ids, asked)
		}
		if w == nil || len(ids) == 0 {
			continue
		}
		if err := w.Remove(res, ids...); err != nil {
			m.log.Warn("remove device-info files of released devices", zap.String("pool", pools[res]), zap.String("resource", res), zap.Error(err))
			continue
		}
		for _, id := range ids {
			m.log.Info("device released; device-info file removed", zap.String("device", string(id)), zap.String("pool", pools[res]), zap.String("resource", res))
		}
	}
	return nil
}

// allocatedAt is when a device was last handed out, as far as the files
// tell: a vhost-user slot's directory (its last change), else its
// device-info file. false: no trace of an allocation.
func allocatedAt(w *deviceinfo.Writer, dirs vhostDirs, res string, id sysfs.Address) (time.Time, bool) {
	if dirs != nil {
		at, ok, err := dirs.ChangedAt(string(id))
		return at, ok && err == nil
	}
	if w == nil {
		return time.Time{}, false
	}
	st, err := os.Stat(filepath.Join(w.Dir, deviceinfo.FileName(res, id)))
	if err != nil {
		return time.Time{}, false
	}
	return st.ModTime(), true
}

// releaseVhostUser removes the directories of released slots, except one
// an Allocate made again after the answer that showed the slot free was
// asked, and returns the slots whose directory went (their device-info
// files go too).
func (m *Manager) releaseVhostUser(dirs vhostDirs, poolName, res string, ids []sysfs.Address, asked time.Time) []sysfs.Address {
	var out []sysfs.Address
	for _, id := range ids {
		removed, err := dirs.ReleaseUnchangedSince(string(id), asked)
		switch {
		case err != nil:
			m.log.Warn("remove the vhost-user directory of a released slot", zap.String("device", string(id)), zap.String("pool", poolName), zap.String("resource", res), zap.Error(err))
		case removed:
			m.log.Info("slot released; vhost-user directory removed", zap.String("device", string(id)), zap.String("pool", poolName), zap.String("resource", res))
			out = append(out, id)
		default:
			m.log.Info("slot allocated again since kubelet released it; directory kept", zap.String("device", string(id)), zap.String("pool", poolName), zap.String("resource", res))
		}
	}
	return out
}
