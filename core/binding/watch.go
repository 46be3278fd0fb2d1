package binding

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// DefaultPodResourcesSocket is kubelet's PodResources endpoint.
const DefaultPodResourcesSocket = "/var/lib/kubelet/pod-resources/kubelet.sock"

// PodLister is the part of kubelet's PodResources API the watcher uses.
type PodLister interface {
	List(ctx context.Context, in *podresourcesv1.ListPodResourcesRequest, opts ...grpc.CallOption) (*podresourcesv1.ListPodResourcesResponse, error)
}

var _ PodLister = (podresourcesv1.PodResourcesListerClient)(nil)

// DialPodResources connects to kubelet's PodResources socket (a unix
// socket path). The connection is lazy: kubelet need not be up yet.
func DialPodResources(socket string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("connect to kubelet PodResources at %q: %w", socket, err)
	}
	return conn, nil
}

// Watcher releases prepared devices that no pod holds any more. The device
// plugin API has no "deallocate", so it polls kubelet's PodResources List
// and calls Manager.Release for units that were assigned and are not now.
// A unit prepared by Allocate but never seen assigned becomes a candidate
// after the grace period (the pod never started); units bound by an
// operator only after a pod has used them, and units bound at startup
// (bindAt: startup) never: their Allocate does not bind again. Only pools
// with restoreOnRelease are affected.
//
// A candidate is released only on evidence that survives a kubelet
// restart (ReleaseRule, decided by a ReleaseTracker): absent from several
// consecutive answers over a minimum time, nothing counted within the
// settle time after kubelet restarted (a failed List, a re-created
// PodResources socket with WithPodResourcesSocket, or KubeletRestarted from
// the plugin when it registers again). And never while a process
// holds its /dev/vfio/<group> open (QEMU, DPDK), when the Manager has a
// proc root (WithProcRoot) to tell.
type Watcher struct {
	m        *Manager
	lister   PodLister
	log      *zap.Logger
	interval time.Duration
	grace    time.Duration
	now      func() time.Time

	socket  string     // kubelet's PodResources socket, "" = not watched
	mu      sync.Mutex // guards the fields below
	tracker *ReleaseTracker[sysfs.Address]
	inUse   map[sysfs.Address]int // units kept because a process holds their group, for logging once
	sockID  fileID                // the socket file last seen; a new one means kubelet restarted
}

// fileID tells one incarnation of a file from the next.
type fileID struct {
	dev, ino uint64
	ctime    int64
}

func statID(path string) (fileID, bool) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fileID{}, false
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino, ctime: st.Ctim.Nano()}, true
}

// WatcherOption configures a Watcher.
type WatcherOption func(*watcherOptions)

type watcherOptions struct {
	rule   ReleaseRule
	socket string
}

// WithPodResourcesSocket makes the watcher stat kubelet's PodResources
// socket at every poll: a new socket file (kubelet re-creates it when it
// starts) counts as a kubelet restart even if no List failed and no
// registration was reported.
func WithPodResourcesSocket(path string) WatcherOption {
	return func(o *watcherOptions) { o.socket = path }
}

// WithReleaseRule replaces DefaultReleaseRule.
func WithReleaseRule(r ReleaseRule) WatcherOption {
	return func(o *watcherOptions) { o.rule = r }
}

// NewWatcher returns a watcher polling every interval (default 10 s) with
// the given grace period (default 2 min) for never-assigned units. Its
// clock is the Manager's.
func NewWatcher(m *Manager, lister PodLister, log *zap.Logger, interval, grace time.Duration, opts ...WatcherOption) *Watcher {
	if interval <= 0 {
		interval = 10 * time.Second
	}
	if grace <= 0 {
		grace = 2 * time.Minute
	}
	if log == nil {
		log = zap.NewNop()
	}
	o := watcherOptions{rule: DefaultReleaseRule()}
	for _, f := range opts {
		f(&o)
	}
	now := m.opts.now
	w := &Watcher{m: m, lister: lister, log: log, interval: interval, grace: grace, now: now, socket: o.socket,
		tracker: NewReleaseTracker[sysfs.Address](o.rule, now()), inUse: map[sysfs.Address]int{}}
	if w.socket != "" {
		w.sockID, _ = statID(w.socket)
	}
	return w
}

// KubeletRestarted tells the watcher that kubelet (re)started now — the
// plugin calls it whenever a pool registers — so that the incomplete
// answers of a starting kubelet release nothing. Safe to call from any
// goroutine.
func (w *Watcher) KubeletRestarted() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.tracker.KubeletRestarted(w.now())
}

// Run polls until ctx ends. A failed poll (kubelet restarting) is logged
// and releases nothing.
func (w *Watcher) Run(ctx context.Context) error {
	if err := w.m.Unusable(); err != nil {
		w.log.Warn("release watcher off: the state file is unusable, nothing is restored on release", zap.Error(err))
		return nil
	}
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		if err := w.Poll(ctx); err != nil && ctx.Err() == nil {
			w.log.Warn("release watcher: poll failed; nothing released this round", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// AssignedDevices returns, per resource name, the device IDs a
// PodResources List answer shows assigned to some container. IDs that are
// neither PCI addresses nor vhost-user slot IDs (another plugin's) are
// left out.
func AssignedDevices(resp *podresourcesv1.ListPodResourcesResponse) map[string]map[sysfs.Address]bool {
	out := map[string]map[sysfs.Address]bool{}
	for _, p := range resp.GetPodResources() {
		for _, c := range p.GetContainers() {
			for _, d := range c.GetDevices() {
				for _, id := range d.GetDeviceIds() {
					a, err := sysfs.ParseAddress(id)
					if _, slot := config.ParseVhostUserSlotID(id); slot {
						a, err = sysfs.Address(id), nil // a vhost-user slot, not a PCI function
					}
					if err != nil {
						continue
					}
					if out[d.GetResourceName()] == nil {
						out[d.GetResourceName()] = map[sysfs.Address]bool{}
					}
					out[d.GetResourceName()][a] = true
				}
			}
		}
	}
	return out
}

// Poll lists the devices kubelet has assigned and releases the prepared
// units that the release rule says are released and no process uses.
func (w *Watcher) Poll(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, w.interval)
	defer cancel()
	asked := w.now()
	w.checkSocket(asked)
	resp, err := w.lister.List(cctx, &podresourcesv1.ListPodResourcesRequest{})
	if err != nil {
		w.mu.Lock()
		w.tracker.ListFailed()
		w.mu.Unlock()
		return fmt.Errorf("list pod resources: %w", err)
	}
	assigned := map[sysfs.Address]bool{}
	for _, ids := range AssignedDevices(resp) {
		maps.Copy(assigned, ids)
	}
	candidates, err := w.m.observe(ctx, assigned, w.grace)
	if err != nil {
		return err
	}
	w.mu.Lock()
	release := w.tracker.Observe(asked, assigned, candidates, w.now())
	w.mu.Unlock()
	release, err = w.notInUse(release)
	if err != nil {
		return err
	}
	for _, id := range release {
		group, pool := w.m.unitInfo(id)
		w.log.Info("unit released by kubelet; restoring", zap.String("device", string(id)), zap.String("group", group), zap.String("pool", pool), zap.String("step", "release"))
	}
	// Called even with nothing released: it also retries restores that an
	// earlier failure left.
	return w.m.Release(ctx, release)
}

// checkSocket counts a new PodResources socket file as a kubelet restart.
func (w *Watcher) checkSocket(now time.Time) {
	if w.socket == "" {
		return
	}
	id, ok := statID(w.socket)
	if !ok {
		return // kubelet down: the List fails and counts
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if id != w.sockID {
		if w.sockID != (fileID{}) {
			w.log.Info("kubelet's PodResources socket was re-created; kubelet restarted: releases wait for it to settle", zap.String("socket", w.socket))
		}
		w.sockID = id
		w.tracker.KubeletRestarted(now)
	}
}

// notInUse drops the units whose vfio nodes (/dev/vfio/<group>, the
// iommufd cdevs) a process holds open. The proc scan runs only when
// something is about to be released; when the proc root cannot be read
// nothing is released (it cannot be told).
func (w *Watcher) notInUse(units []sysfs.Address) ([]sysfs.Address, error) {
	proc := *w.m.opts.procRoot
	if proc == "" || len(units) == 0 {
		return units, nil
	}
	groups, pools := make([]string, len(units)), make([]string, len(units))
	nodes := make([][]string, len(units))
	var all []string
	for i, u := range units {
		groups[i], pools[i] = w.m.unitInfo(u)
		nodes[i] = w.m.vfioNodes(u, groups[i])
		all = append(all, nodes[i]...)
	}
	held, err := NodesInUse(proc, all)
	if err != nil {
		return nil, fmt.Errorf("check whether a process uses the released devices (nothing released): %w", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []sysfs.Address
	next := map[sysfs.Address]int{}
	for i, u := range units {
		node, pid := "", 0
		for _, n := range nodes[i] {
			if p, ok := held[n]; ok {
				node, pid = n, p
				break
			}
		}
		if pid == 0 {
			out = append(out, u)
			continue
		}
		if w.inUse[u] != pid {
			w.log.Warn("unit released by kubelet but a process holds its vfio node open; not restoring while it does", zap.String("device", string(u)), zap.String("group", groups[i]), zap.String("pool", pools[i]), zap.String("node", node), zap.Int("pid", pid))
		}
		next[u] = pid
	}
	w.inUse = next
	return out, nil
}

// observe marks the prepared units seen assigned and returns the units to
// release: restoreOnRelease records in phase done that are not assigned
// and either were seen assigned before or came from Allocate longer than
// grace ago.
func (m *Manager) observe(ctx context.Context, assigned map[sysfs.Address]bool, grace time.Duration) ([]sysfs.Address, error) {
	done, err := m.begin(ctx, true)
	if err != nil {
		return nil, err
	}
	defer done()
	dirty := false
	var release []sysfs.Address
	now := m.opts.now()
	for _, r := range m.state.data.Devices {
		if r.Phase != PhaseDone || !r.RestoreOnRelease || r.Origin == OriginStartup || r.Origin == OriginDRA {
			// startup-bound units stay bound: Allocate would not bind them
			// again; DRA units are released by NodeUnprepareResources.
			continue
		}
		switch {
		case assigned[r.Unit]:
			if !r.SeenAssigned {
				r.SeenAssigned, dirty = true, true
			}
		case r.SeenAssigned, r.Origin == OriginAllocate && now.Sub(r.Since) > grace:
			if len(release) == 0 || release[len(release)-1] != r.Unit {
				release = append(release, r.Unit)
			}
		}
	}
	if dirty && !m.opts.readOnly {
		if err := m.state.save(); err != nil {
			return nil, err
		}
	}
	return release, nil
}

// unitInfo returns a unit's IOMMU group now (sysfs), or as recorded when
// it was bound, and its pool; "" when not known.
func (m *Manager) unitInfo(unit sysfs.Address) (group, pool string) {
	for _, r := range m.Records() {
		if r.Unit == unit {
			group, pool = r.Group, r.Pool
			break
		}
	}
	if t, err := os.Readlink(filepath.Join(m.root.PCIDevicePath(unit), "iommu_group")); err == nil {
		group = filepath.Base(t)
	}
	return group, pool
}
