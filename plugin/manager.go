package plugin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/sriov-cdi/sriov-cdi/core/binding"
	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/deviceinfo"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/plugin/metrics"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// SpecSyncer writes the CDI specs of a plan; the Manager calls it before a
// device is advertised and whenever the plan changes.
type SpecSyncer interface {
	Sync(plan *pool.Plan, h *sysfs.Host) error
}

// DRAPublisher is the DRA front door as the Manager sees it: it receives
// every new plan (and the host it was built from) and publishes the pools
// with api: dra, which the Manager never serves as device plugin
// endpoints. Publish is called with the plan lock held and must not block.
type DRAPublisher interface {
	Publish(plan *pool.Plan, h *sysfs.Host)
	// Ready reports whether the DRA driver is registered with kubelet and
	// its slices are published.
	Ready() bool
}

// Options configure a Manager.
type Options struct {
	ConfigPath      string     // pool configuration file, watched for changes
	Root            sysfs.Root // where sysfs and /dev are
	DevicePluginDir string     // kubelet's device plugin directory
	// RescanInterval is the safety-net rescan period (sysfs changes made by
	// the kernel produce no fsnotify events). Default 5s. While uevents and
	// NetEvents both flow, a tick whose sysfs.Fingerprint is unchanged
	// reads nothing more; one tick in fullRescanEvery scans in full.
	RescanInterval time.Duration
	// Debounce coalesces bursts of events into one rescan. Default 20ms.
	Debounce time.Duration
	// Uevents listens to kernel uevents and, with NetEvents, to network
	// events; needs the host network namespace.
	Uevents bool
	// NetEvents reports link, address and default-route changes by netdev
	// name (sysfs.LiveNet): the function owning the netdev is read again
	// at once instead of at the next rescan. nil: rescans only.
	NetEvents   NetWatcher
	ScanOptions []sysfs.ScanOption
	Specs       SpecSyncer       // nil: no CDI specs written
	Prepare     Preparer         // nil: nothing prepared (kernel pools only)
	Metrics     *metrics.Metrics // nil: a private registry nobody scrapes
	// DeviceInfo writes Multus device-info files for allocated network
	// VFs; nil: none written.
	DeviceInfo *deviceinfo.Writer
	// PodResources, with DeviceInfo, removes the device-info files of
	// devices kubelet no longer lists as assigned; nil: files go only when
	// their device leaves the pool.
	PodResources PodLister
	// OnRegistered is called after every successful registration with
	// kubelet (at start and when kubelet restarted): the vfio release
	// watcher starts its settle time again (binding.Watcher.KubeletRestarted).
	OnRegistered func()
	// Release says when kubelet has released a device (device-info
	// files); zero fields take DefaultReleaseTiming.
	Release ReleaseTiming
	// Holdings tells which functions sriov-cdi bound and for which pool,
	// so that a unit stays in its pool while binding changes what the
	// selectors read (driver, netdevs); nil: none (no vfio binding).
	Holdings Holdings
	// DRA publishes the pools with api: dra; nil: a config with such pools
	// is refused at start (and their pools are not served after a reload).
	DRA DRAPublisher
	Log *zap.Logger
}

// Holdings is the part of the binding manager the planner reads.
type Holdings interface {
	Held() pool.Held
}

// Manager runs one endpoint per pool and keeps them in step with the host,
// the config file and kubelet.
type Manager struct {
	opts Options
	log  *zap.Logger

	cfg      *config.Config
	cfgBytes []byte

	planMu sync.Mutex // serialises replans (loop, reload, Allocate)

	mu        sync.Mutex
	endpoints map[string]*managed // by resource
	lastWarn  []sysfs.Warning
	refusals  map[sysfs.Address]string // last logged refusal reason per function
	specPlan  *pool.Plan               // the plan whose specs were written last
	specSkips int                      // replans since, with specs left alone

	kick chan trigger
	// startupFailed: units of bindAt: startup pools whose binding failed,
	// not retried until the config changes (Allocate still tries).
	startupFailed map[sysfs.Address]bool
	host          *sysfs.Host      // last scan; owned by the Run goroutine
	plan          *pool.Plan       // the plan of host; guarded by planMu
	linkUp        pool.LinkHistory // netdevs seen up; guarded by planMu
	alive         atomic.Int64     // unix nanos of the last loop turn
	registrations atomic.Int64
	releases      releases // device-info release decisions

	// A rescan tick with both event sources listening and the host's
	// fingerprint unchanged since the last full scan reads nothing more;
	// every fullRescanEvery-th tick scans anyway.
	ueventsUp, netEventsUp atomic.Bool
	fingerprint            uint64 // at the last scan or refresh, 0: none; guarded by planMu
	// refreshedDuringScan: functions refreshed while a full scan reads
	// (nil when none runs); guarded by planMu.
	refreshedDuringScan map[sysfs.Address]bool
	quietTicks          int // ticks skipped since the last full scan; guarded by planMu
}

// fullRescanEvery: with events flowing, one tick in this many still scans
// everything (what changes without any event: driver_override, autoprobe).
const fullRescanEvery = 12

// trigger asks for a rescan of one function, of the function owning a
// netdev, or of everything (addr and netdev "").
type trigger struct {
	reason string
	addr   sysfs.Address
	netdev string
}

type managed struct {
	ep  *endpoint
	srv *poolServer
}

// NewManager loads and validates the config; an invalid config is an error
// here (at start) and only a log line later (on reload).
func NewManager(opts Options) (*Manager, error) {
	if opts.RescanInterval <= 0 {
		opts.RescanInterval = 5 * time.Second
	}
	if opts.Debounce <= 0 {
		opts.Debounce = 20 * time.Millisecond
	}
	opts.Release = opts.Release.WithDefaults()
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.Prepare == nil {
		opts.Prepare = noPrepare{}
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	b, err := os.ReadFile(opts.ConfigPath)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := config.Parse(opts.ConfigPath, b)
	if err != nil {
		return nil, err
	}
	if opts.DRA == nil && cfg.DRAPools() {
		return nil, fmt.Errorf("config %q has pools with api: dra, but the DRA driver is not running (it needs the API server: --kubeconfig or in-cluster, and --node-name)", opts.ConfigPath)
	}
	return &Manager{opts: opts, log: opts.Log, cfg: cfg, cfgBytes: b, endpoints: map[string]*managed{}, kick: make(chan trigger, 1024),
		releases: releases{rule: opts.Release.Rule}}, nil
}

// Trigger asks for a full rescan soon (coalesced with other requests).
func (m *Manager) Trigger(reason string) { m.TriggerDevice(reason, "") }

// TriggerDevice asks for the function at addr (and its PF) to be read
// again soon; "" means everything. A kernel uevent naming a function
// costs a few reads instead of a full scan.
func (m *Manager) TriggerDevice(reason string, addr sysfs.Address) {
	select {
	case m.kick <- trigger{reason: reason, addr: addr}:
	default:
		// The queue is full: a full rescan is already due and covers it.
	}
}

// Ready reports whether every pool is registered with kubelet.
func (m *Manager) Ready() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.endpoints) == 0 && m.opts.DRA == nil {
		return false
	}
	for _, e := range m.endpoints {
		if !e.ep.isRegistered() {
			return false
		}
	}
	return m.opts.DRA == nil || m.opts.DRA.Ready()
}

// Alive reports whether the main loop turned within the last two rescan
// periods.
func (m *Manager) Alive() bool {
	return time.Since(time.Unix(0, m.alive.Load())) < 2*m.opts.RescanInterval+time.Second
}

// Registrations counts successful Register calls (for metrics and tests).
func (m *Manager) Registrations() int64 { return m.registrations.Load() }

// Run serves until ctx ends, then sends every stream an empty list and
// removes the sockets.
func (m *Manager) Run(ctx context.Context) error {
	m.alive.Store(time.Now().UnixNano())
	if err := os.MkdirAll(m.opts.DevicePluginDir, 0o750); err != nil {
		return fmt.Errorf("create device plugin directory: %w", err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("start file watcher: %w", err)
	}
	defer w.Close()
	if err := w.Add(m.opts.DevicePluginDir); err != nil {
		return fmt.Errorf("watch %q: %w", m.opts.DevicePluginDir, err)
	}
	// ConfigMaps swap a ..data symlink: watch the directory, not the file.
	cfgDir := filepath.Dir(m.opts.ConfigPath)
	if err := w.Add(cfgDir); err != nil {
		return fmt.Errorf("watch config directory %q: %w", cfgDir, err)
	}
	vfioDir := filepath.Join(m.opts.Root.Dev, "vfio")
	if err := w.Add(vfioDir); err != nil {
		m.log.Info("not watching /dev/vfio; relying on rescans", zap.String("path", vfioDir), zap.Error(err))
	}
	if m.opts.Uevents {
		if src, err := openUevents(); err != nil {
			m.log.Warn("kernel uevents unavailable; relying on rescans", zap.Error(err))
		} else {
			m.ueventsUp.Store(true)
			go func() {
				defer m.ueventsUp.Store(false)
				if err := src.run(ctx, m.TriggerDevice); err != nil {
					m.log.Warn("uevent listener stopped; relying on rescans", zap.Error(err))
				}
			}()
		}
		if m.opts.NetEvents != nil {
			m.netEventsUp.Store(true)
			go func() {
				defer m.netEventsUp.Store(false)
				if err := m.opts.NetEvents.Watch(ctx, m.triggerNetdev); err != nil {
					m.log.Warn("network event listener stopped; relying on rescans", zap.Error(err))
				}
			}()
		}
	}
	defer m.shutdown()

	if err := m.replan(ctx, nil); err != nil {
		return err
	}
	m.reconcileVhostUser(ctx)
	if m.opts.PodResources != nil { // device-info files, vhost-user directories
		go m.releaseDeviceInfo(ctx, m.opts.PodResources, m.opts.Release.Poll)
	}
	m.bindStartupPools(ctx)
	m.registerAll(ctx)

	ticker := time.NewTicker(m.opts.RescanInterval)
	defer ticker.Stop()
	var debounce <-chan time.Time
	pending := map[sysfs.Address]bool{} // nil: full rescan due
	for {
		m.alive.Store(time.Now().UnixNano())
		select {
		case <-ctx.Done():
			return nil
		case ev := <-w.Events:
			switch {
			case ev.Name == filepath.Join(m.opts.DevicePluginDir, KubeletSocketName) && ev.Has(fsnotify.Create):
				m.log.Info("kubelet socket created; re-registering every pool")
				m.restartAll(ctx)
			case filepath.Dir(ev.Name) == filepath.Clean(cfgDir):
				m.reload(ctx)
			case filepath.Dir(ev.Name) == filepath.Clean(vfioDir):
				m.Trigger("/dev/vfio changed: " + ev.Name)
			}
		case err := <-w.Errors:
			m.log.Warn("file watcher error; relying on rescans", zap.Error(err))
		case t := <-m.kick:
			if t.netdev != "" {
				if t.addr = m.netdevOwner(t.netdev); t.addr == "" {
					continue // not a netdev of a PCI function we know
				}
			}
			m.log.Debug("rescan requested", zap.String("reason", t.reason), zap.String("device", string(t.addr)))
			switch {
			case t.addr == "":
				pending = nil
			case pending != nil:
				pending[t.addr] = true
			}
			if debounce == nil {
				debounce = time.After(m.opts.Debounce)
			}
		case <-debounce:
			debounce = nil
			if len(m.kick) == cap(m.kick) {
				pending = nil // requests were dropped
			}
			m.replanLogged(ctx, pending)
			pending = map[sysfs.Address]bool{}
			m.bindStartupPools(ctx)
		case <-ticker.C:
			if !m.quietTick() {
				m.replanLogged(ctx, nil)
			}
			m.bindStartupPools(ctx)
			m.registerMissing(ctx)
		}
	}
}

// triggerNetdev asks for the function owning netdev to be read again
// ("" : everything).
func (m *Manager) triggerNetdev(netdev string) {
	if netdev == "" {
		m.Trigger("network events lost")
		return
	}
	select {
	case m.kick <- trigger{reason: "network event on " + netdev, netdev: netdev}:
	default:
	}
}

// netdevOwner returns the function of the last scan that has netdev, or "".
func (m *Manager) netdevOwner(netdev string) sysfs.Address {
	m.planMu.Lock()
	h := m.host
	m.planMu.Unlock()
	if h == nil {
		return ""
	}
	for _, d := range h.Devices {
		for _, n := range d.Netdevs {
			if n.Name == netdev {
				return d.Address
			}
		}
	}
	return ""
}

// quietTick reports whether a periodic rescan can be skipped: uevents and
// network events are both being received (a change would have triggered
// a refresh), the host's fingerprint (functions, drivers, /dev/vfio) is
// the one of the last full scan, and fewer than fullRescanEvery ticks were
// skipped in a row. It costs a few directory listings.
func (m *Manager) quietTick() bool {
	if !m.ueventsUp.Load() || !m.netEventsUp.Load() {
		return false
	}
	fp, err := sysfs.Fingerprint(m.opts.Root)
	m.planMu.Lock()
	defer m.planMu.Unlock()
	if err != nil || fp != m.fingerprint || m.quietTicks+1 >= fullRescanEvery {
		return false
	}
	m.quietTicks++
	m.opts.Metrics.Rescans.WithLabelValues("skipped").Inc()
	return true
}

func (m *Manager) replanLogged(ctx context.Context, only map[sysfs.Address]bool) {
	if err := m.replan(ctx, only); err != nil {
		m.log.Error("rescan failed; keeping the last device lists", zap.Error(err))
	}
}

// replan reads the host (all of it when only is nil, else those functions
// on top of the last scan), plans the pools, writes CDI specs, then
// updates, starts or stops endpoints. Specs are written before any device
// is advertised.
func (m *Manager) replan(ctx context.Context, only map[sysfs.Address]bool) error {
	var scanned *sysfs.Host
	var fp uint64
	var fpErr error
	m.planMu.Lock()
	full := only == nil || m.host == nil
	if full {
		m.refreshedDuringScan = map[sysfs.Address]bool{}
	}
	m.planMu.Unlock()
	if full {
		// A full scan reads without the lock, so that a refresh (a uevent,
		// an Allocate) never waits for it; the functions refreshed
		// meanwhile are read again on top of it below.
		m.opts.Metrics.Rescans.WithLabelValues("full").Inc()
		// Taken before the scan: a change racing the scan moves it again.
		fp, fpErr = sysfs.Fingerprint(m.opts.Root)
		var err error
		scanned, err = sysfs.Scan(m.opts.Root, m.opts.ScanOptions...)
		if err != nil {
			m.planMu.Lock()
			m.refreshedDuringScan = nil
			m.planMu.Unlock()
			return err
		}
	}
	m.planMu.Lock()
	defer m.planMu.Unlock()
	var h *sysfs.Host
	switch {
	case scanned != nil:
		h = scanned
		if again := slices.Collect(maps.Keys(m.refreshedDuringScan)); len(again) > 0 {
			h = sysfs.Refresh(m.opts.Root, h, again, m.opts.ScanOptions...)
		}
		m.refreshedDuringScan = nil
		m.fingerprint, m.quietTicks = 0, 0
		if fpErr == nil {
			m.fingerprint = fp
		}
	default:
		addrs := make([]sysfs.Address, 0, len(only))
		for a := range only {
			addrs = append(addrs, a)
			if m.refreshedDuringScan != nil {
				m.refreshedDuringScan[a] = true
			}
		}
		// An event-driven refresh moves the fingerprint on too, so that
		// the next tick stays quiet: only a change whose event was lost
		// without an overflow escapes it, until the next full scan.
		fp, fpErr := sysfs.Fingerprint(m.opts.Root)
		h = sysfs.Refresh(m.opts.Root, m.host, addrs, m.opts.ScanOptions...)
		m.opts.Metrics.Rescans.WithLabelValues("refresh").Inc()
		if fpErr == nil && m.fingerprint != 0 {
			m.fingerprint = fp
		}
	}
	m.host = h
	if !slices.Equal(h.Warnings, m.lastWarn) {
		for _, w := range h.Warnings {
			m.log.Warn("sysfs anomaly", zap.String("device", string(w.Device)), zap.String("detail", w.Message))
		}
		m.lastWarn = h.Warnings
	}
	var held pool.Held
	if m.opts.Holdings != nil {
		held = m.opts.Holdings.Held()
	}
	plan := pool.Build(m.cfg, h, pool.WithHeld(held), pool.WithLinkHistory(m.linkUp))
	m.linkUp = m.linkUp.SeenUp(h)
	m.plan = plan
	m.recordPlan(plan)
	m.logRefusals(plan)
	if m.opts.Specs != nil && m.specsDue(plan) {
		if err := m.opts.Specs.Sync(plan, h); err != nil {
			return fmt.Errorf("write CDI specs: %w", err)
		}
		m.specPlan, m.specSkips = plan, 0
	}
	m.pruneDeviceInfo(plan)
	if m.opts.DRA != nil {
		m.opts.DRA.Publish(plan, h)
	} else if m.cfg.DRAPools() {
		m.log.Error("pools with api: dra are not served: the DRA driver did not start with this process (restart the plugin with --node-name and API server access)")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	want := map[string]bool{}
	for i := range plan.Pools {
		p := &plan.Pools[i]
		if p.Config != nil && p.Config.API == config.APIDRA {
			continue // the DRA front door publishes it
		}
		want[p.Resource] = true
		if e, ok := m.endpoints[p.Resource]; ok {
			if e.srv.update(p) {
				m.log.Info("device list changed", zap.String("pool", p.Name), zap.Int("devices", len(p.Units)), zap.Int("unhealthy", unhealthyUnits(p)))
			}
			continue
		}
		srv := newPoolServer(p, m.opts.Root.Dev, m.opts.Prepare, m.opts.Metrics, m.log)
		srv.devinfo = m.opts.DeviceInfo
		srv.refresh = m.refreshNow
		ep := newEndpoint(m.opts.DevicePluginDir, p.Resource, srv, &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: true}, m.log.With(zap.String("pool", p.Name)))
		if err := ep.serve(); err != nil {
			return err
		}
		m.endpoints[p.Resource] = &managed{ep: ep, srv: srv}
		m.log.Info("pool serving", zap.String("pool", p.Name), zap.String("resource", p.Resource), zap.String("socket", ep.socketPath()), zap.Int("devices", len(p.Units)))
	}
	for res, e := range m.endpoints {
		if !want[res] {
			e.srv.stop()
			e.ep.stop()
			delete(m.endpoints, res)
			m.log.Info("pool removed", zap.String("resource", res))
		}
	}
	return nil
}

// reload re-reads the config after a change in its directory. An invalid
// config is logged and the running one kept.
func (m *Manager) reload(ctx context.Context) {
	b, err := os.ReadFile(m.opts.ConfigPath)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) { // a ConfigMap swap can hide it briefly
			m.log.Error("config reload: keeping the running config", zap.Error(err))
		}
		return
	}
	if bytes.Equal(b, m.cfgBytes) {
		return
	}
	cfg, err := config.Parse(m.opts.ConfigPath, b)
	if err != nil {
		m.log.Error("config reload rejected; keeping the running config", zap.Error(err))
		m.cfgBytes = b // do not log the same bad file again
		return
	}
	if reflect.DeepEqual(cfg.Pools, m.cfg.Pools) && cfg.ResourcePrefix == m.cfg.ResourcePrefix {
		m.cfgBytes = b
		return
	}
	m.planMu.Lock()
	m.cfg, m.cfgBytes = cfg, b
	m.startupFailed = nil
	m.planMu.Unlock()
	m.log.Info("config reloaded", zap.String("config", m.opts.ConfigPath), zap.Int("pools", len(cfg.Pools)))
	m.replanLogged(ctx, nil)
	m.registerMissing(ctx)
}

func (m *Manager) registerAll(ctx context.Context) {
	m.eachEndpoint(func(e *managed) { m.register(ctx, e) })
}

func (m *Manager) registerMissing(ctx context.Context) {
	m.eachEndpoint(func(e *managed) {
		if !e.ep.isRegistered() {
			m.register(ctx, e)
		}
	})
}

// eachEndpoint runs f for every endpoint in parallel and waits: kubelet
// dials each plugin back during Register, so one at a time would add the
// round trips up.
func (m *Manager) eachEndpoint(f func(*managed)) {
	var wg sync.WaitGroup
	for _, e := range m.snapshotEndpoints() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(e)
		}()
	}
	wg.Wait()
}

func (m *Manager) register(ctx context.Context, e *managed) {
	if err := e.ep.register(ctx); err != nil {
		lvl := zap.DebugLevel // once per pool per outage, not at every rescan
		if e.ep.failedRegistering() {
			lvl = zap.WarnLevel
		}
		m.log.Log(lvl, "registration failed; will retry when kubelet's socket appears", zap.String("resource", e.ep.resource), zap.Error(err))
		return
	}
	m.registrations.Add(1)
	m.releases.kubeletRestarted(time.Now())
	if f := m.opts.OnRegistered; f != nil {
		f()
	}
	m.opts.Metrics.Registrations.WithLabelValues(e.ep.resource).Inc()
	m.log.Info("registered with kubelet", zap.String("resource", e.ep.resource))
}

// restartAll re-creates every socket (kubelet deleted them when it
// started) and registers again.
func (m *Manager) restartAll(ctx context.Context) {
	m.eachEndpoint(func(e *managed) {
		if err := e.ep.serve(); err != nil {
			m.log.Error("restart device plugin server", zap.String("resource", e.ep.resource), zap.Error(err))
			return
		}
		m.register(ctx, e)
	})
}

func (m *Manager) snapshotEndpoints() []*managed {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*managed, 0, len(m.endpoints))
	for _, e := range m.endpoints {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b *managed) int {
		if a.ep.resource < b.ep.resource {
			return -1
		}
		return 1
	})
	return out
}

func (m *Manager) shutdown() {
	m.retireFiles()
	m.mu.Lock()
	defer m.mu.Unlock()
	for res, e := range m.endpoints {
		e.srv.stop()
		e.ep.stop()
		delete(m.endpoints, res)
	}
	m.log.Info("stopped; every pool sent an empty list and removed its socket")
}

// retireFiles, on the way out (helm uninstall, a rolling update, a node
// drain), leaves in the CDI specs and device-info files only the devices
// kubelet still lists as assigned: a container of a running pod may
// restart and needs its device's spec, nothing else does (a new pod needs
// Allocate, hence a plugin, which writes them again). Without an answer
// from kubelet it cannot tell, and leaves everything as it is.
func (m *Manager) retireFiles() {
	if m.opts.PodResources == nil || (m.opts.Specs == nil && m.opts.DeviceInfo == nil) {
		return
	}
	m.planMu.Lock()
	defer m.planMu.Unlock()
	if m.plan == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	resp, err := m.opts.PodResources.List(ctx, &podresourcesv1.ListPodResourcesRequest{})
	if err != nil {
		m.log.Warn("stopping without an answer from kubelet's PodResources API; CDI specs and device-info files left as they are", zap.Error(err))
		return
	}
	assigned := binding.AssignedDevices(resp)
	kept := &pool.Plan{Pools: make([]pool.Pool, len(m.plan.Pools))}
	keep := map[string]map[sysfs.Address]bool{}
	n := 0
	for i, p := range m.plan.Pools {
		kp := p
		kp.Units = nil
		keep[p.Resource] = map[sysfs.Address]bool{}
		for _, u := range p.Units {
			if assigned[p.Resource][u.ID] {
				kp.Units = append(kp.Units, u)
				keep[p.Resource][u.ID] = true
				n++
			}
		}
		kept.Pools[i] = kp
	}
	if m.opts.Specs != nil {
		if err := m.opts.Specs.Sync(kept, m.host); err != nil {
			m.log.Warn("stopping: CDI specs not trimmed to the assigned devices", zap.Error(err))
		}
	}
	if m.opts.DeviceInfo != nil {
		if err := m.opts.DeviceInfo.Prune(keep); err != nil {
			m.log.Warn("stopping: device-info files not trimmed to the assigned devices", zap.Error(err))
		}
	}
	m.log.Info("stopping: CDI specs and device-info files kept only for devices kubelet lists as assigned", zap.Int("devices", n))
}

// bindStartupPools binds the units of vfio pools with bindAt: startup that
// are not bound yet (at start, and when new units appear), with the same
// interlocks as Allocate.
func (m *Manager) bindStartupPools(ctx context.Context) {
	m.planMu.Lock()
	h, plan := m.host, m.plan // the last replan's plan: no second Build
	m.planMu.Unlock()
	if h == nil {
		return
	}
	if m.startupFailed == nil {
		m.startupFailed = map[sysfs.Address]bool{}
	}
	for i := range plan.Pools {
		p := &plan.Pools[i]
		if p.Mode != config.ModeVFIO || p.Config.BindAt != config.BindAtStartup {
			continue
		}
		var todo []pool.Unit
		var addrs []sysfs.Address
		for _, u := range p.Units {
			if !m.startupFailed[u.ID] && !allBound(h, u) {
				todo = append(todo, u)
				addrs = append(addrs, u.Members...)
			}
		}
		if len(todo) == 0 {
			continue
		}
		if _, err := m.opts.Prepare.Prepare(ctx, p.Config, todo); err != nil {
			for _, u := range todo {
				m.startupFailed[u.ID] = true
			}
			m.log.Error("binding at startup failed; Allocate will try again", zap.String("pool", p.Name), zap.Strings("devices", unitIDs(todo)), zap.Error(err))
		} else {
			m.log.Info("bound at startup", zap.String("pool", p.Name), zap.Strings("devices", unitIDs(todo)))
		}
		if err := m.refreshNow(ctx, addrs); err != nil {
			m.log.Error("rescan after binding at startup", zap.Error(err))
		}
	}
}

func allBound(h *sysfs.Host, u pool.Unit) bool {
	for _, a := range u.Members {
		if d := h.Device(a); d == nil || d.Driver != "vfio-pci" {
			return false
		}
	}
	return true
}

// refreshNow re-reads addrs and replans at once (not debounced): Allocate
// calls it after binding so that specs and lists match the host before it
// answers.
func (m *Manager) refreshNow(ctx context.Context, addrs []sysfs.Address) error {
	only := make(map[sysfs.Address]bool, len(addrs))
	for _, a := range addrs {
		only[a] = true
	}
	return m.replan(ctx, only)
}

// pruneDeviceInfo removes device-info files of devices no pool advertises
// any more.
func (m *Manager) pruneDeviceInfo(plan *pool.Plan) {
	if m.opts.DeviceInfo == nil {
		return
	}
	keep := map[string]map[sysfs.Address]bool{}
	for i := range plan.Pools {
		p := &plan.Pools[i]
		keep[p.Resource] = map[sysfs.Address]bool{}
		for _, u := range p.Units {
			keep[p.Resource][u.ID] = true
		}
	}
	m.mu.Lock()
	for res := range m.endpoints {
		if _, ok := keep[res]; !ok {
			keep[res] = nil // a pool going away: all its files
		}
	}
	m.mu.Unlock()
	if err := m.opts.DeviceInfo.Prune(keep); err != nil {
		m.log.Warn("prune device-info files", zap.Error(err))
	}
}

// specsDue reports whether the CDI specs must be rebuilt: the plan changed
// (units, groups, pools), a pool injects iommufd nodes (which follow
// binding), or a dozen replans went by (a spec file deleted by hand comes
// back within a minute). Rebuilding unchanged specs is where most of a
// rescan's garbage came from.
func (m *Manager) specsDue(plan *pool.Plan) bool {
	const resyncEvery = 12
	if m.specPlan == nil || m.specSkips >= resyncEvery || len(plan.Pools) != len(m.specPlan.Pools) {
		return true
	}
	for i := range plan.Pools {
		a, b := &plan.Pools[i], &m.specPlan.Pools[i]
		if a.Resource != b.Resource || a.Mode != b.Mode || a.Config.IOMMUFD || !reflect.DeepEqual(a.Units, b.Units) {
			return true
		}
	}
	m.specSkips++
	return false
}

// logRefusals logs each function a pool's selectors matched but that the
// pool refuses (the reason discover prints), once per change.
func (m *Manager) logRefusals(plan *pool.Plan) {
	now := map[sysfs.Address]string{}
	for _, r := range plan.Unselected {
		if r.Pool == "" {
			continue
		}
		now[r.Address] = r.Pool + ": " + r.Reason
		if m.refusals[r.Address] != now[r.Address] {
			lvl := zap.WarnLevel
			if d := m.host.Device(r.Address); d != nil && d.IsPFWithVFs() {
				lvl = zap.InfoLevel // by design: its VFs are the candidates
			}
			m.log.Log(lvl, "device refused", zap.String("device", string(r.Address)), zap.String("pool", r.Pool), zap.String("reason", r.Reason))
		}
	}
	m.refusals = now
}

// recordPlan publishes device and refusal counts per pool.
func (m *Manager) recordPlan(plan *pool.Plan) {
	mt := m.opts.Metrics
	mt.Devices.Reset()
	mt.Refused.Reset()
	for i := range plan.Pools {
		p := &plan.Pools[i]
		bad := unhealthyUnits(p)
		mt.Devices.WithLabelValues(p.Name, "healthy").Set(float64(len(p.Units) - bad))
		mt.Devices.WithLabelValues(p.Name, "unhealthy").Set(float64(bad))
		mt.Refused.WithLabelValues(p.Name).Set(0)
	}
	for _, r := range plan.Unselected {
		if r.Pool != "" {
			mt.Refused.WithLabelValues(r.Pool).Inc()
		}
	}
}

// Metrics returns the metrics the manager records.
func (m *Manager) Metrics() *metrics.Metrics { return m.opts.Metrics }

func unhealthyUnits(p *pool.Pool) int {
	n := 0
	for _, u := range p.Units {
		if !u.Healthy {
			n++
		}
	}
	return n
}
