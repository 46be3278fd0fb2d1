package binding

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// ErrNotVFIO is returned (wrapped) when a change is asked for a pool that
// is not in vfio mode. Nothing is written.
var ErrNotVFIO = errors.New("only vfio pools change drivers")

// ErrRefused is returned (wrapped) when an interlock refuses a change.
// Nothing is written.
var ErrRefused = errors.New("refused")

// ErrReadOnly is returned by a Manager made with ReadOnly when asked to
// change something.
var ErrReadOnly = errors.New("read-only binding manager (dry run)")

// Manager prepares and restores devices of vfio pools. Operations are
// serialised; within one, the units of a request are bound in parallel.
type Manager struct {
	root   sysfs.Root
	binder *sysfs.Binder
	log    *zap.Logger
	opts   options

	sem   chan struct{} // one operation at a time; a channel so waits can end with a context
	state *stateFile
	// unusable: the state file could not be loaded at start (with
	// DegradeOnBadStateFile); every operation fails with it.
	unusable error
}

type options struct {
	writer     sysfs.AttrWriter
	timeout    time.Duration
	poll       time.Duration
	netUsage   func() sysfs.NetUsage
	blockUsage func() sysfs.BlockUsage
	fault      *string
	exit       func(int)
	stderr     io.Writer
	readOnly   bool
	now        func() time.Time
	observe    func(op string, d time.Duration, err error)
	ctx        context.Context
	degrade    bool
	procRoot   *string
}

// WithProcRoot sets where the release watcher looks for processes holding
// /dev/vfio/<group> open before it restores a released unit ("" = no
// check). Default: /proc when the root is the host's, none otherwise.
func WithProcRoot(dir string) Option { return func(o *options) { o.procRoot = &dir } }

// DegradeOnBadStateFile makes NewManager return a Manager even when the
// state file is unusable (ErrStateFile: truncated, corrupt, invalid): it
// logs the reason once, writes nothing, and fails every operation with
// the reason (Unusable), so that a plugin keeps serving its kernel pools
// (which never write driver attributes) while its vfio pools refuse.
// Without it NewManager fails, as the operator commands want.
func DegradeOnBadStateFile() Option { return func(o *options) { o.degrade = true } }

// WithContext bounds NewManager's wait for the state lock (held by another
// sriov-cdi process) and its reconciliation: once ctx ends (Ctrl-C),
// NewManager returns ctx's error and writes nothing. Default: no bound.
func WithContext(ctx context.Context) Option { return func(o *options) { o.ctx = ctx } }

// WithObserver is told of every unit bound or unbound (op "bind",
// "unbind") and every function restored (op "restore"), with its latency
// and outcome: the plugin's metrics.
func WithObserver(f func(op string, d time.Duration, err error)) Option {
	return func(o *options) { o.observe = f }
}

// Option configures a Manager.
type Option func(*options)

// WithWriter replaces the real sysfs writer (tests: sysfstest.Kernel).
func WithWriter(w sysfs.AttrWriter) Option { return func(o *options) { o.writer = w } }

// WithTimeout bounds each write and each wait for the kernel (default 10 s).
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithPollInterval sets how often read-back polls sysfs (default 5 ms).
func WithPollInterval(d time.Duration) Option { return func(o *options) { o.poll = d } }

// WithNetUsage says how to learn which netdevs the host uses; called once
// per operation and must answer from the host as it is now, never from a
// cache (sysfs.LiveNet.Fresh: one rtnetlink dump). Default: a
// sysfs.LiveNet when the root is the host's (/sys), none otherwise (a
// fixture has no live network).
func WithNetUsage(f func() sysfs.NetUsage) Option { return func(o *options) { o.netUsage = f } }

// WithBlockUsage says how to learn which block devices the host uses;
// called once per operation. Default: sysfs.LiveBlockUsage on /proc when
// the root is the host's, none otherwise.
func WithBlockUsage(f func() sysfs.BlockUsage) Option { return func(o *options) { o.blockUsage = f } }

// WithFault sets the fault hook spec (see FaultEnv) instead of reading the
// environment; "" disables it.
func WithFault(spec string) Option { return func(o *options) { o.fault = &spec } }

// ReadOnly makes a Manager that never writes: no reconciliation, no state
// file changes, no driver writes. For --dry-run.
func ReadOnly() Option { return func(o *options) { o.readOnly = true } }

// NewManager loads the state file at statePath (DefaultStatePath if "")
// and, unless ReadOnly, reconciles it: an interrupted bind is rolled back,
// an interrupted restore completed, so no function is left driverless that
// had a driver. It fails when the state file is unreadable or when
// reconciliation could not finish (the records stay for the next try).
func NewManager(root sysfs.Root, statePath string, log *zap.Logger, opts ...Option) (*Manager, error) {
	o := options{timeout: 10 * time.Second, poll: 5 * time.Millisecond, exit: os.Exit, stderr: os.Stderr, now: time.Now}
	for _, f := range opts {
		f(&o)
	}
	if statePath == "" {
		statePath = DefaultStatePath
	}
	if log == nil {
		log = zap.NewNop()
	}
	host := root.Sys == sysfs.HostRoot().Sys
	if o.netUsage == nil {
		o.netUsage = func() sysfs.NetUsage { return nil }
		if host {
			o.netUsage = sysfs.NewLiveNet().Fresh
		}
	}
	if o.blockUsage == nil {
		o.blockUsage = func() sysfs.BlockUsage { return nil }
		if host {
			o.blockUsage = func() sysfs.BlockUsage { return sysfs.NewLiveBlockUsage(root, "/proc") }
		}
	}
	if o.procRoot == nil {
		proc := ""
		if host {
			proc = "/proc"
		}
		o.procRoot = &proc
	}
	spec := os.Getenv(FaultEnv)
	if o.fault != nil {
		spec = *o.fault
	}
	fault, err := parseFault(spec)
	if err != nil {
		return nil, err
	}
	bopts := []sysfs.BinderOption{sysfs.WithTimeout(o.timeout), sysfs.WithPollInterval(o.poll)}
	if o.writer != nil {
		bopts = append(bopts, sysfs.WithWriter(o.writer))
	}
	if o.readOnly {
		bopts = append(bopts, sysfs.WithWriter(refuseWriter{}))
	}
	if fault != nil {
		fault.exit, fault.stderr = o.exit, o.stderr
		bopts = append(bopts, sysfs.WithAfterWrite(fault.afterWriteEvent))
		log.Warn("fault hook armed", zap.String("fault", spec))
	}
	st, err := loadState(statePath)
	if err != nil && o.degrade && errors.Is(err, ErrStateFile) {
		log.Error("state file unusable: vfio pools refuse every Allocate, kernel pools serve, nothing is restored on release",
			zap.String("path", statePath), zap.Error(err),
			zap.String("fix", fmt.Sprintf("inspect and repair or remove %s, run `sriov-cdi restore --all` after repair, then restart the plugin", statePath)))
		m := &Manager{root: root, binder: sysfs.NewBinder(root, bopts...), log: log, opts: o, sem: make(chan struct{}, 1),
			state: &stateFile{path: statePath, data: stateData{Version: stateVersion}}, unusable: err}
		return m, nil
	}
	if err != nil {
		return nil, err
	}
	m := &Manager{root: root, binder: sysfs.NewBinder(root, bopts...), log: log, opts: o, state: st, sem: make(chan struct{}, 1)}
	if !o.readOnly {
		ctx := o.ctx
		if ctx == nil {
			ctx = context.Background()
		}
		if err := m.reconcile(ctx); err != nil {
			return nil, err
		}
	}
	return m, nil
}

type refuseWriter struct{}

// Unusable returns why every operation fails (the state file could not be
// loaded at start, see DegradeOnBadStateFile), or nil.
func (m *Manager) Unusable() error { return m.unusable }

func (refuseWriter) WriteAttr(path, _ string) error {
	return fmt.Errorf("write %q: %w", path, ErrReadOnly)
}

// Records returns the functions whose driver sriov-cdi changed, sorted.
func (m *Manager) Records() []Record {
	done, err := m.begin(context.Background(), false)
	if err != nil {
		return nil
	}
	defer done()
	return m.state.records()
}

// Change is one function's planned or performed driver change.
type Change struct {
	Device sysfs.Address `json:"device"`
	Unit   sysfs.Address `json:"unit"`
	Pool   string        `json:"pool"`
	Group  string        `json:"group"`
	From   sysfs.State   `json:"from"`
	To     sysfs.State   `json:"to"`
}

func (c Change) String() string {
	return fmt.Sprintf("%s (group %s, unit %s): %s -> %s", c.Device, dash(c.Group), c.Unit, c.From, c.To)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Prepare binds every endpoint function of each unit's IOMMU group to
// vfio-pci and waits for /dev/vfio/<group>. It first refuses any pool not
// in vfio mode — the one place that keeps kernel pools from ever writing
// a driver attribute. Then it reads the units' groups again and re-checks
// the interlocks on every group member; if any unit is refused, nothing is
// written. Original drivers are recorded in the state file before the
// first write. Units are bound in parallel; on any failure every function
// this call touched is rolled back to its original driver and the error
// names the device and the step.
//
// The origin of the change (for the release watcher) is OriginAllocate,
// or OriginStartup for a pool with bindAt: startup.
func (m *Manager) Prepare(ctx context.Context, pc *config.Pool, units []pool.Unit) error {
	return m.change(ctx, pc, units, sysfs.VFIODriver, "")
}

// PrepareByOperator is Prepare for the bind command: the release watcher
// restores such units only after a pod has used them.
func (m *Manager) PrepareByOperator(ctx context.Context, pc *config.Pool, units []pool.Unit) error {
	return m.change(ctx, pc, units, sysfs.VFIODriver, OriginOperator)
}

// Unbind detaches every endpoint function of each unit's group from its
// driver and leaves it driverless, with the same interlocks, state
// records and rollback as Prepare (the unbind command).
func (m *Manager) Unbind(ctx context.Context, pc *config.Pool, units []pool.Unit) error {
	return m.change(ctx, pc, units, "", OriginOperator)
}

// PlanPrepare returns what Prepare would change, after the same checks,
// without writing anything.
func (m *Manager) PlanPrepare(pc *config.Pool, units []pool.Unit) ([]Change, error) {
	return m.planChange(pc, units, sysfs.VFIODriver)
}

// PlanUnbind is PlanPrepare for Unbind.
func (m *Manager) PlanUnbind(pc *config.Pool, units []pool.Unit) ([]Change, error) {
	return m.planChange(pc, units, "")
}

func (m *Manager) planChange(pc *config.Pool, units []pool.Unit, target string) ([]Change, error) {
	if err := checkMode(pc); err != nil {
		return nil, err
	}
	done, err := m.begin(context.Background(), false)
	if err != nil {
		return nil, err
	}
	defer done()
	plans, err := m.check(pc, units, target)
	if err != nil {
		return nil, err
	}
	return changesOf(plans, pc), nil
}

func checkMode(pc *config.Pool) error {
	if pc == nil {
		return fmt.Errorf("no pool given: %w", ErrNotVFIO)
	}
	if pc.Mode != config.ModeVFIO {
		return fmt.Errorf("pool %q is in %q mode and never writes a driver attribute: %w (set mode: vfio to bind)", pc.Name, pc.Mode, ErrNotVFIO)
	}
	return nil
}

// memberPlan is one function of a unit and what to do with it.
type memberPlan struct {
	addr   sysfs.Address
	cur    sysfs.State
	change bool
}

type unitPlan struct {
	unit    pool.Unit
	group   string // the group now (not the planned number)
	target  string // the driver to bind, "" to unbind
	members []memberPlan
}

func changesOf(plans []unitPlan, pc *config.Pool) []Change {
	var out []Change
	for _, up := range plans {
		for _, mp := range up.members {
			if mp.change {
				out = append(out, Change{Device: mp.addr, Unit: up.unit.ID, Pool: pc.Name, Group: up.group, From: mp.cur, To: targetState(up.target)})
			}
		}
	}
	return out
}

func targetState(target string) sysfs.State {
	if target == "" {
		return sysfs.State{}
	}
	return sysfs.State{Driver: target, Override: target}
}

func (m *Manager) change(ctx context.Context, pc *config.Pool, units []pool.Unit, target string, origin Origin) error {
	if err := checkMode(pc); err != nil {
		return err
	}
	if m.opts.readOnly {
		return ErrReadOnly
	}
	if len(units) == 0 {
		return nil
	}
	if origin == "" {
		origin = OriginAllocate
		if pc.BindAt == config.BindAtStartup {
			origin = OriginStartup
		}
	}
	done, err := m.begin(ctx, true)
	if err != nil {
		return err
	}
	defer done()
	m.settleLeftovers(ctx)

	plans, err := m.check(pc, units, target)
	if err != nil {
		return err
	}
	kind := stepName(target)
	// Record every original state before the first write.
	now := m.opts.now()
	var touched []sysfs.Address
	for _, up := range plans {
		for _, mp := range up.members {
			if !mp.change {
				continue
			}
			orig := mp.cur
			if old := m.state.get(mp.addr); old != nil {
				orig = old.Original // changed before: keep the first original
			}
			m.state.put(&Record{Address: mp.addr, Unit: up.unit.ID, Pool: pc.Name, Group: up.group, Original: orig, Target: target,
				Phase: PhaseChanging, Origin: origin, RestoreOnRelease: pc.RestoreOnRelease, Since: now})
			touched = append(touched, mp.addr)
		}
	}
	if len(touched) > 0 {
		m.state.data.Op = &Op{Kind: kind, Devices: touched, Started: now, PID: os.Getpid()}
		if err := m.state.save(); err != nil {
			m.forget(touched)
			return fmt.Errorf("%s pool %q: record original drivers before writing: %w", kind, pc.Name, err)
		}
	}

	errs := make([]error, len(plans))
	var wg sync.WaitGroup
	for i, up := range plans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = m.applyUnit(ctx, pc, up, target)
		}()
	}
	wg.Wait()
	failed := errors.Join(errs...)

	if failed != nil {
		rb := m.rollback(touched)
		return errors.Join(fmt.Errorf("%s pool %q: %w", kind, pc.Name, failed), rb)
	}
	for _, a := range touched {
		if r := m.state.get(a); r != nil {
			r.Phase = PhaseDone
		}
	}
	m.state.data.Op = nil
	if len(touched) > 0 {
		if err := m.state.save(); err != nil {
			// The devices are bound and the file still says "changing":
			// a restart would roll them back, so fail the request too.
			rb := m.rollback(touched)
			return errors.Join(fmt.Errorf("%s pool %q: record the result: %w", kind, pc.Name, err), rb)
		}
	}
	return nil
}

// forget drops records that were never acted on.
func (m *Manager) forget(addrs []sysfs.Address) {
	for _, a := range addrs {
		m.state.drop(a)
	}
	m.state.data.Op = nil
}

func (m *Manager) applyUnit(ctx context.Context, pc *config.Pool, up unitPlan, target string) (err error) {
	if obs := m.opts.observe; obs != nil {
		start, op := time.Now(), "bind"
		if target == "" {
			op = "unbind"
		}
		defer func() { obs(op, time.Since(start), err) }()
	}
	for _, mp := range up.members {
		if !mp.change {
			continue
		}
		var err error
		if target == "" {
			err = m.binder.Unbind(ctx, mp.addr)
		} else {
			err = m.binder.Bind(ctx, mp.addr, target)
		}
		if err != nil {
			return fmt.Errorf("unit %s (group %s): %w", up.unit.ID, up.group, err)
		}
		m.log.Info("driver changed", fields(mp.addr, up.group, dash(target), sysfs.Step(stepName(target)), zap.String("pool", pc.Name), zap.String("from", mp.cur.String()))...)
	}
	if target == sysfs.VFIODriver {
		if err := m.binder.WaitVFIOGroup(ctx, up.unit.ID, up.group); err != nil {
			return fmt.Errorf("unit %s (group %s): %w", up.unit.ID, up.group, err)
		}
	}
	return nil
}

func fields(a sysfs.Address, group, driver string, step sysfs.Step, extra ...zap.Field) []zap.Field {
	f := []zap.Field{zap.String("device", string(a)), zap.String("group", group), zap.String("driver", driver)}
	if step != "" {
		f = append(f, zap.String("step", string(step)))
	}
	return append(f, extra...)
}

// rollback returns every function in addrs to its recorded original state,
// in parallel, with a fresh context (the request's may be what failed).
// Functions it cannot restore keep their record, in phase restoring, for
// the next start or `restore`.
func (m *Manager) rollback(addrs []sysfs.Address) error {
	ctx := context.Background()
	for _, a := range addrs {
		if r := m.state.get(a); r != nil {
			r.Phase = PhaseRestoring
		}
	}
	m.state.data.Op = &Op{Kind: "rollback", Devices: addrs, Started: m.opts.now(), PID: os.Getpid()}
	_ = m.state.save() // best effort: the records already say what to undo
	err := m.restoreRecords(ctx, addrs, "rollback")
	if err != nil {
		return fmt.Errorf("roll back: %w", err)
	}
	return nil
}

// restoreRecords restores the recorded functions in parallel, drops the
// records of those restored (or vanished) and saves the state. Called
// with mu held.
func (m *Manager) restoreRecords(ctx context.Context, addrs []sysfs.Address, why string) error {
	errs := make([]error, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		r := m.state.get(a)
		if r == nil {
			continue
		}
		rec := *r
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			err := m.binder.Restore(ctx, a, rec.Original)
			if obs := m.opts.observe; obs != nil {
				obs("restore", time.Since(start), err)
			}
			switch {
			case err == nil:
				m.log.Info("driver restored", fields(a, rec.Group, dash(rec.Original.Driver), sysfs.Step(why), zap.String("pool", rec.Pool))...)
			case errors.Is(err, sysfs.ErrVanished):
				m.log.Warn("device vanished; record dropped", fields(a, rec.Group, dash(rec.Original.Driver), sysfs.Step(why), zap.String("pool", rec.Pool))...)
				err = nil
			default:
				errs[i] = fmt.Errorf("restore %s to %s: %w", a, rec.Original, err)
			}
		}()
	}
	wg.Wait()
	for i, a := range addrs {
		if errs[i] == nil {
			m.state.drop(a)
		}
	}
	m.state.data.Op = nil
	if err := m.state.save(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// check reads the units' functions again — each, every function now in
// its IOMMU group, their PFs and netdevs, nothing else on the host — with
// host network use dumped now, and applies every interlock to every
// member of every unit's current IOMMU group. It returns what to change,
// or an error naming every refused unit.
func (m *Manager) check(pc *config.Pool, units []pool.Unit, target string) ([]unitPlan, error) {
	var sopts []sysfs.ScanOption
	if n := m.opts.netUsage(); n != nil {
		sopts = append(sopts, sysfs.WithNetUsage(func() sysfs.NetUsage { return n }))
	}
	var addrs []sysfs.Address
	for _, u := range units {
		addrs = append(addrs, u.ID)
		addrs = append(addrs, u.Members...)
	}
	h, err := sysfs.ReadGroups(m.root, addrs, sopts...)
	if err != nil {
		return nil, fmt.Errorf("read the units again before binding: %w", err)
	}
	block := m.opts.blockUsage()
	var plans []unitPlan
	var errs []error
	seen := map[sysfs.Address]sysfs.Address{}
	for _, u := range units {
		up, err := m.checkUnit(h, block, pc, u, target)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, mp := range up.members {
			if other, dup := seen[mp.addr]; dup {
				errs = append(errs, fmt.Errorf("unit %s: %s is also a member of unit %s in the same request: %w", u.ID, mp.addr, other, ErrRefused))
			}
			seen[mp.addr] = u.ID
		}
		plans = append(plans, up)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("pool %q: %w", pc.Name, errors.Join(errs...))
	}
	return plans, nil
}

// bridgeDrivers may own a bridge in a group handed to vfio: they do not
// use the device for DMA (the kernel's driver_managed_dma), so the group
// stays viable.
var bridgeDrivers = []string{"", "pcieport", "pci-stub", sysfs.VFIODriver}

func (m *Manager) checkUnit(h *sysfs.Host, block sysfs.BlockUsage, pc *config.Pool, u pool.Unit, target string) (unitPlan, error) {
	refuse := func(format string, args ...any) (unitPlan, error) {
		return unitPlan{}, fmt.Errorf("unit %s: %s: %w", u.ID, fmt.Sprintf(format, args...), ErrRefused)
	}
	d := h.Device(u.ID)
	if d == nil {
		return refuse("no such PCI function on the host (vanished?)")
	}
	g := d.IOMMUGroup
	if g == "" {
		return refuse("no IOMMU group: enable the IOMMU to use vfio")
	}
	var now []sysfs.Address
	up := unitPlan{unit: u, group: g, target: target}
	for _, a := range h.Groups[g] {
		md := h.Device(a)
		if md.IsBridge() {
			if !slices.Contains(bridgeDrivers, md.Driver) {
				return refuse("group %s would not be viable: bridge or host controller %s is bound to %s (vfio accepts only pcieport, pci-stub or no driver there)", g, a, md.Driver)
			}
			continue
		}
		now = append(now, a)
		if md.IsPFWithVFs() {
			return refuse("group %s holds %s, a PF with %d VFs enabled; unbinding it would take its VFs away", g, a, md.SRIOV.NumVFs)
		}
		for _, n := range md.Netdevs {
			if n.HostUse != "" {
				return refuse("group %s holds %s whose netdev %s %s (operstate %s); the host uses it", g, a, n.Name, n.HostUse, n.OperState)
			}
		}
		if strings.HasPrefix(md.Class, "01") && block != nil {
			if use := block.BlockHostUse(a); use != "" {
				return refuse("group %s holds storage controller %s: %s", g, a, use)
			}
		}
		if md.Driver != "" && md.Driver != target && md.Driver != sysfs.VFIODriver && !slices.Contains(pc.AllowUnbindFrom, md.Driver) {
			return refuse("group %s: %s is bound to %s, which pool %q may not unbind (allowUnbindFrom: %v)", g, a, md.Driver, pc.Name, pc.AllowUnbindFrom)
		}
		if r := m.state.get(a); r != nil && r.Phase == PhaseDone && (r.Unit != u.ID || r.Pool != pc.Name) {
			return refuse("%s was already changed for unit %s of pool %q", a, r.Unit, r.Pool)
		}
		cur := sysfs.State{Driver: md.Driver, Override: md.DriverOverride}
		up.members = append(up.members, memberPlan{addr: a, cur: cur, change: cur != targetState(target)})
	}
	sort.Slice(now, func(i, j int) bool { return now[i] < now[j] })
	if len(u.Members) > 0 && !slices.Equal(now, u.Members) {
		return refuse("IOMMU group %s now holds %v, the pool planned %v; the host changed (group numbers move when VFs are re-created): rescan", g, now, u.Members)
	}
	return up, nil
}

// Release is told that the units ids are no longer assigned to any pod.
// Functions of those units whose pool has restoreOnRelease go back to
// their original driver; the others stay bound for the next pod. It also
// retries restores an earlier failure left (the watcher calls it
// periodically).
func (m *Manager) Release(ctx context.Context, ids []sysfs.Address) error {
	if m.opts.readOnly {
		return ErrReadOnly
	}
	done, err := m.begin(ctx, true)
	if err != nil {
		return err
	}
	defer done()
	m.settleLeftovers(ctx)
	var addrs []sysfs.Address
	for _, r := range m.state.data.Devices {
		if r.Phase == PhaseDone && r.RestoreOnRelease && slices.Contains(ids, r.Unit) {
			addrs = append(addrs, r.Address)
		}
	}
	return m.restoreLocked(ctx, addrs, "release")
}

// Restore returns functions to their recorded original drivers. Each
// address may name a function or a unit (all its functions). An address
// with no record is an error naming it: sriov-cdi did not change it.
func (m *Manager) Restore(ctx context.Context, addrs []sysfs.Address) error {
	if m.opts.readOnly {
		return ErrReadOnly
	}
	done, err := m.begin(ctx, true)
	if err != nil {
		return err
	}
	defer done()
	sel, err := m.selectRecords(addrs)
	if err != nil {
		return err
	}
	return m.restoreLocked(ctx, sel, "restore")
}

// RestoreAll returns every recorded function to its original driver.
func (m *Manager) RestoreAll(ctx context.Context) error {
	if m.opts.readOnly {
		return ErrReadOnly
	}
	done, err := m.begin(ctx, true)
	if err != nil {
		return err
	}
	defer done()
	var all []sysfs.Address
	for _, r := range m.state.data.Devices {
		all = append(all, r.Address)
	}
	return m.restoreLocked(ctx, all, "restore")
}

// PlanRestore returns what Restore (or RestoreAll, when addrs is nil)
// would change.
func (m *Manager) PlanRestore(addrs []sysfs.Address) ([]Change, error) {
	done, err := m.begin(context.Background(), false)
	if err != nil {
		return nil, err
	}
	defer done()
	var sel []sysfs.Address
	if addrs == nil {
		for _, r := range m.state.data.Devices {
			sel = append(sel, r.Address)
		}
	} else {
		var err error
		if sel, err = m.selectRecords(addrs); err != nil {
			return nil, err
		}
	}
	var out []Change
	for _, a := range sel {
		r := m.state.get(a)
		cur, err := m.binder.Read(a)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", a, err)
		}
		if cur != r.Original {
			out = append(out, Change{Device: a, Unit: r.Unit, Pool: r.Pool, Group: r.Group, From: cur, To: r.Original})
		}
	}
	return out, nil
}

func (m *Manager) selectRecords(addrs []sysfs.Address) ([]sysfs.Address, error) {
	var sel []sysfs.Address
	var errs []error
	for _, a := range addrs {
		found := false
		for _, r := range m.state.data.Devices {
			if r.Address == a || r.Unit == a {
				if !slices.Contains(sel, r.Address) {
					sel = append(sel, r.Address)
				}
				found = true
			}
		}
		if !found {
			errs = append(errs, fmt.Errorf("%s: not in state file %q: sriov-cdi has not changed its driver", a, m.state.path))
		}
	}
	return sel, errors.Join(errs...)
}

func (m *Manager) restoreLocked(ctx context.Context, addrs []sysfs.Address, why string) error {
	if len(addrs) == 0 {
		return nil
	}
	for _, a := range addrs {
		m.state.get(a).Phase = PhaseRestoring
	}
	m.state.data.Op = &Op{Kind: why, Devices: addrs, Started: m.opts.now(), PID: os.Getpid()}
	if err := m.state.save(); err != nil {
		return fmt.Errorf("%s: %w", why, err)
	}
	return m.restoreRecords(ctx, addrs, why)
}

// reconcile settles the state file left by a previous process.
func (m *Manager) reconcile(ctx context.Context) error {
	done, err := m.begin(ctx, true)
	if err != nil {
		return err
	}
	defer done()
	if len(m.state.data.Devices) == 0 && m.state.data.Op == nil {
		return nil
	}
	if op := m.state.data.Op; op != nil {
		m.log.Warn("interrupted operation found", zap.String("op", op.Kind), zap.Int("pid", op.PID), zap.Time("started", op.Started), zap.Int("devices", len(op.Devices)))
	}
	var undo []sysfs.Address
	for _, r := range slices.Clone(m.state.data.Devices) {
		cur, err := m.binder.Read(r.Address)
		if errors.Is(err, sysfs.ErrVanished) {
			m.log.Warn("device vanished; record dropped", fields(r.Address, r.Group, dash(r.Original.Driver), "reconcile", zap.String("pool", r.Pool))...)
			m.state.drop(r.Address)
			continue
		}
		if err != nil {
			return fmt.Errorf("reconcile state file %q: read %s: %w", m.state.path, r.Address, err)
		}
		switch r.Phase {
		case PhaseDone:
			want := targetState(r.Target)
			switch {
			case cur == want:
			case cur.Driver == "" && r.Original.Driver != "":
				// Something unbound it since; never leave it driverless.
				m.log.Warn("prepared device found driverless; restoring", fields(r.Address, r.Group, dash(r.Original.Driver), "reconcile", zap.String("pool", r.Pool))...)
				undo = append(undo, r.Address)
			default:
				m.log.Warn("prepared device changed by someone else; record kept", fields(r.Address, r.Group, dash(cur.Driver), "reconcile", zap.String("pool", r.Pool), zap.String("want", want.String()))...)
			}
		default: // changing: roll back; restoring: complete
			m.log.Info("reconciling interrupted change", fields(r.Address, r.Group, dash(cur.Driver), "reconcile", zap.String("pool", r.Pool), zap.String("phase", string(r.Phase)))...)
			undo = append(undo, r.Address)
		}
	}
	m.state.data.Op = nil
	if len(undo) == 0 {
		return m.state.save()
	}
	if err := m.restoreLocked(ctx, undo, "reconcile"); err != nil {
		return fmt.Errorf("reconcile state file %q: %w", m.state.path, err)
	}
	return nil
}

// settleLeftovers finishes what an earlier failed operation of this
// process left (a rollback that met a hung write that has since returned):
// records not in phase done are restored. Failures are logged and the
// records kept; the operation that called it goes on. Called with the
// operation begun.
func (m *Manager) settleLeftovers(ctx context.Context) {
	pending := m.binder.Pending()
	var undo []sysfs.Address
	for _, r := range m.state.data.Devices {
		if _, busy := pending[r.Address]; r.Phase != PhaseDone && !busy {
			undo = append(undo, r.Address)
		}
	}
	if len(undo) == 0 {
		return
	}
	if err := m.restoreLocked(ctx, undo, "retry-restore"); err != nil {
		m.log.Warn("earlier failed change still not restored; record kept", zap.Error(err))
	}
}

// begin serialises an operation: within the process, and for writers also
// across processes (the plugin and the bind/unbind/restore commands share
// the state file). It re-reads the state file, which another process may
// have changed. Both waits end with ctx: a cancelled operation gets ctx's
// error (wrapped) and must write nothing. The returned func ends the
// operation.
func (m *Manager) begin(ctx context.Context, write bool) (func(), error) {
	if m.unusable != nil {
		return nil, fmt.Errorf("vfio binding is off: %w", m.unusable)
	}
	select {
	case m.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for another binding operation: %w", ctx.Err())
	}
	unlock := func() { <-m.sem }
	if err := ctx.Err(); err != nil {
		unlock()
		return nil, fmt.Errorf("wait for another binding operation: %w", err)
	}
	release := func() {}
	if write && !m.opts.readOnly {
		r, err := m.state.lock(ctx)
		if err != nil {
			unlock()
			return nil, err
		}
		release = r
	}
	if err := m.state.reload(); err != nil {
		release()
		unlock()
		return nil, err
	}
	return func() { release(); unlock() }, nil
}

// stepName names a whole change in logs: "bind" or "unbind".
func stepName(target string) string {
	if target == "" {
		return "unbind"
	}
	return "bind"
}

// ForAllocate adapts a Manager to a caller that calls Prepare for every
// pool, kernel pools included (the plugin's Allocate): a kernel pool needs
// no preparation and gets nil without reaching the Manager, which would
// refuse it; any other pool goes to Manager.Prepare, which still refuses
// every mode but vfio. Nothing is ever written for a kernel pool.
type ForAllocate struct{ M *Manager }

// Prepare implements the plugin's Preparer. The returned undo restores
// exactly the functions this call bound — not those bound before it (by an
// earlier Allocate, at startup or by an operator) — for an Allocate that
// fails after binding; it is nil when nothing was bound.
func (f ForAllocate) Prepare(ctx context.Context, pc *config.Pool, units []pool.Unit) (func(context.Context) error, error) {
	if pc != nil && pc.Mode == config.ModeKernel {
		return nil, nil
	}
	before := map[sysfs.Address]bool{}
	for _, r := range f.M.Records() {
		before[r.Address] = true
	}
	if err := f.M.Prepare(ctx, pc, units); err != nil {
		return nil, err
	}
	var bound []sysfs.Address
	for _, r := range f.M.Records() {
		if !before[r.Address] && slices.ContainsFunc(units, func(u pool.Unit) bool { return r.Unit == u.ID }) {
			bound = append(bound, r.Address)
		}
	}
	if len(bound) == 0 {
		return nil, nil
	}
	return func(ctx context.Context) error { return f.M.Restore(ctx, bound) }, nil
}
