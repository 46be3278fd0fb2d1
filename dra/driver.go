package dra

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	metadatav1beta1 "k8s.io/dynamic-resource-allocation/api/metadata/v1beta1"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/dynamic-resource-allocation/resourceslice"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/sriov-cdi/sriov-cdi/cdi"
	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/deviceinfo"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/core/vhostuser"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// Binder binds the units of a vfio pool for a claim and restores them
// (binding.ForClaim).
type Binder interface {
	// Bind returns the functions it moved to vfio-pci (nil for kernel
	// pools).
	Bind(ctx context.Context, pc *config.Pool, units []pool.Unit) ([]sysfs.Address, error)
	Restore(ctx context.Context, addrs []sysfs.Address) error
}

// claimedLister is a Binder that records its changes (binding.ForClaim):
// the functions it bound for claims and should restore with them.
type claimedLister interface {
	Claimed() []sysfs.Address
}

// noBinder is the null Binder: kernel pools only.
type noBinder struct{}

func (noBinder) Bind(_ context.Context, pc *config.Pool, _ []pool.Unit) ([]sysfs.Address, error) {
	if pc != nil && pc.Mode == config.ModeVFIO {
		return nil, errors.New("vfio binding is off in this process (no binding manager)")
	}
	return nil, nil
}
func (noBinder) Restore(context.Context, []sysfs.Address) error { return nil }

// Options configure a Driver.
type Options struct {
	// DriverName is the DRA driver (the config's resourcePrefix).
	DriverName string
	NodeName   string
	Client     kubernetes.Interface
	// PluginDir holds dra.sock, the checkpoint and metadata files; default
	// /var/lib/kubelet/plugins/<driver>. RegistryDir is kubelet's plugin
	// registry; default /var/lib/kubelet/plugins_registry.
	PluginDir, RegistryDir string
	CDIDir                 string     // per-claim CDI specs; default /var/run/cdi
	Root                   sysfs.Root // where /dev is, for spec host paths
	Binder                 Binder     // nil: kernel pools only
	// DeviceInfo writes a device-info file (type vhost-user) for each
	// prepared vhost-user slot; nil: none.
	DeviceInfo *deviceinfo.Writer
	// Taints publishes unhealthy devices as tainted (DRADeviceTaints).
	Taints bool
	// Metadata writes KEP-5304 device metadata files (pciBusID etc.) and
	// injects them (the cluster's DRADeviceMetadata gate decides whether
	// kubelet and the runtime pass them on).
	Metadata bool
	// Refresh asks the planner to read these functions again (after a
	// driver change); nil: none.
	Refresh func(reason string, addr sysfs.Address)
	// Fatal is called for an error the helper cannot recover from; the
	// process should stop. nil: logged only.
	Fatal func(error)
	// HealthResend is how often WatchHealthStatus repeats an unchanged
	// report (kubelet forgets after 30 s); default 20 s.
	HealthResend time.Duration
	Log          *zap.Logger

	// syncDelay is the resourceslice controller's (default
	// resourceslice.DefaultSyncDelay); tests shorten it.
	syncDelay time.Duration

	// helperOptions are added to the helper's (tests: sockets elsewhere).
	helperOptions []kubeletplugin.Option
}

// Driver is the DRA kubelet plugin: it publishes the dra pools of each
// plan and prepares claims. It implements kubeletplugin.DRAPlugin and the
// plugin Manager's DRAPublisher.
type Driver struct {
	o      Options
	log    *zap.Logger
	helper *kubeletplugin.Helper
	cpPath string
	// kick wakes the publisher (publisher.go) after Publish; stopPub
	// stops it and pubDone is closed when it has.
	kick    chan struct{}
	stopPub context.CancelFunc
	pubDone chan struct{}

	mu   sync.Mutex // plan, host, in, seq, want, pubSeq, health
	plan *pool.Plan
	host *sysfs.Host
	// in is the inputs of the newest resources, seq counts their changes
	// (0: none yet); want is those resources until the ResourceSlice
	// controller has taken them (it keeps a copy; 4,096 devices are
	// ~20 MB). pubSeq is the number the controller took (when it
	// equals seq, the controller holds the resources of in).
	in      Inputs
	seq     uint64
	want    *resourceslice.DriverResources
	pubSeq  uint64
	health  []kubeletplugin.DeviceHealth
	changed chan struct{} // closed and replaced when health changes

	cpMu     sync.Mutex // the checkpoint file; held across a prepare
	prepared atomic.Pointer[Checkpoint]
	// vhostReconciled: the vhost-user pools (name and base directory)
	// whose directories were reconciled with the checkpoint; cpMu.
	vhostReconciled map[string]bool
	ready           atomic.Bool
}

var _ kubeletplugin.DRAPlugin = (*Driver)(nil)

// Start loads the checkpoint, starts the helper (registration with
// kubelet, the DRA gRPC service, resource health) and the publisher,
// whose ResourceSlice controller starts meanwhile; slices are published
// from the first Publish on. Stop it with Stop.
func Start(ctx context.Context, o Options) (*Driver, error) {
	d, err := newDriver(o)
	if err != nil {
		return nil, err
	}
	// kubelet makes its plugins and registry directories, not the driver's
	// own <plugins>/<driver>: the helper listens there (dra.sock) and fails
	// on a fresh node without it.
	if err := os.MkdirAll(d.o.PluginDir, 0o750); err != nil {
		return nil, fmt.Errorf("DRA driver %q: create its plugin directory: %w", o.DriverName, err)
	}
	opts := []kubeletplugin.Option{
		kubeletplugin.DriverName(o.DriverName),
		kubeletplugin.NodeName(o.NodeName),
		kubeletplugin.KubeClient(o.Client),
		kubeletplugin.PluginDataDirectoryPath(d.o.PluginDir),
		kubeletplugin.RegistrarDirectoryPath(d.o.RegistryDir),
		kubeletplugin.GRPCVerbosity(-1),
	}
	if o.Metadata {
		opts = append(opts, kubeletplugin.EnableDeviceMetadata(true, []schema.GroupVersion{metadatav1beta1.SchemeGroupVersion}),
			kubeletplugin.CDIDirectory(d.o.CDIDir))
	}
	opts = append(opts, o.helperOptions...)
	// Before kubelet can call: functions bound for a claim that no
	// checkpointed claim holds go back to their original driver.
	d.restoreUnclaimed(ctx)
	h, err := kubeletplugin.Start(ctx, d, opts...)
	if err != nil {
		return nil, fmt.Errorf("start DRA kubelet plugin %q: %w", o.DriverName, err)
	}
	d.helper = h
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d.stopPub, d.pubDone = cancel, make(chan struct{})
	p := &publisher{
		driverName: o.DriverName, nodeName: o.NodeName, client: o.Client, log: d.log,
		onError: d.HandleError, onPublished: d.setPublished, want: d.wanted, kick: d.kick, syncDelay: d.o.syncDelay,
	}
	go func() {
		defer close(d.pubDone)
		p.run(pctx)
	}()
	d.log.Info("DRA driver started", zap.String("driver", o.DriverName), zap.String("node", o.NodeName),
		zap.String("pluginDir", d.o.PluginDir), zap.String("registryDir", d.o.RegistryDir), zap.Bool("taints", o.Taints), zap.Bool("metadata", o.Metadata))
	return d, nil
}

func newDriver(o Options) (*Driver, error) {
	if o.DriverName == "" || o.NodeName == "" {
		return nil, errors.New("DRA driver: the driver name and the node name (--node-name or NODE_NAME) are required")
	}
	if o.PluginDir == "" {
		o.PluginDir = filepath.Join(kubeletplugin.KubeletPluginsDir, o.DriverName)
	}
	if o.RegistryDir == "" {
		o.RegistryDir = kubeletplugin.KubeletRegistryDir
	}
	if o.CDIDir == "" {
		o.CDIDir = cdi.DefaultDir
	}
	if o.Binder == nil {
		o.Binder = noBinder{}
	}
	if o.HealthResend <= 0 {
		o.HealthResend = 20 * time.Second
	}
	if o.syncDelay <= 0 {
		o.syncDelay = resourceslice.DefaultSyncDelay
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	d := &Driver{o: o, log: o.Log, cpPath: filepath.Join(o.PluginDir, CheckpointFile), changed: make(chan struct{}),
		vhostReconciled: map[string]bool{}, kick: make(chan struct{}, 1)}
	cp, err := loadCheckpoint(d.cpPath)
	if err != nil {
		return nil, err
	}
	d.prepared.Store(cp)
	return d, nil
}

// restoreUnclaimed restores the functions the Binder bound for claims
// (with restoreOnRelease) that no claim in the checkpoint holds: a process
// stopped after the bind and before the checkpoint was saved, and kubelet
// prepares again (binding anew) or never unprepares that claim.
func (d *Driver) restoreUnclaimed(ctx context.Context) {
	cl, ok := d.o.Binder.(claimedLister)
	if !ok {
		return
	}
	held := map[sysfs.Address]bool{}
	for _, pc := range d.prepared.Load().Claims {
		for _, pd := range pc.Devices {
			for _, a := range pd.Bound {
				held[a] = true
			}
		}
	}
	var orphans []sysfs.Address
	for _, a := range cl.Claimed() {
		if !held[a] {
			orphans = append(orphans, a)
		}
	}
	if len(orphans) == 0 {
		return
	}
	names := make([]string, len(orphans))
	for i, a := range orphans {
		names[i] = string(a)
	}
	if err := d.o.Binder.Restore(ctx, orphans); err != nil {
		d.log.Error("restore functions bound for a claim no checkpoint holds", zap.Strings("devices", names), zap.Error(err))
		return
	}
	d.log.Info("restored functions bound for a claim no checkpoint holds (the last process stopped between bind and checkpoint)", zap.Strings("devices", names))
	d.refresh("unclaimed binding restored", orphans)
}

// Stop stops the helper and the publisher: kubelet sees the plugin go;
// slices stay (the next process updates them, a node removal deletes
// them).
func (d *Driver) Stop() {
	d.helper.Stop()
	if d.stopPub != nil {
		d.stopPub()
		<-d.pubDone
	}
}

// Publish implements the Manager's DRAPublisher: it hands the dra pools
// of plan to the publisher when they differ from the newest it has, and
// updates the health reports. It never blocks on the API server.
func (d *Driver) Publish(plan *pool.Plan, h *sysfs.Host) {
	d.reconcileVhostUser(plan)
	extra := groupChanged(d.prepared.Load(), plan)
	in := InputsOf(plan, h, PublishOptions{Driver: d.o.DriverName, Taints: d.o.Taints, Unhealthy: extra})
	health := HealthOf(plan, extra, time.Now())
	d.mu.Lock()
	d.plan, d.host = plan, h
	same := d.seq > 0 && d.in.Equal(in)
	if !same {
		res := in.Resources()
		d.in, d.want = in, &res
		d.seq++
	}
	if !healthEqual(d.health, health) {
		d.health = health
		close(d.changed)
		d.changed = make(chan struct{})
	}
	d.mu.Unlock()
	if !same {
		select {
		case d.kick <- struct{}{}:
		default: // the publisher is woken already and reads the newest
		}
	}
}

// wanted is the newest resources and their number; nil once the
// controller took them (or before the first Publish).
func (d *Driver) wanted() (*resourceslice.DriverResources, uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.want, d.seq
}

// setPublished records that the ResourceSlice controller took resources
// number seq; ours go unless newer came meanwhile.
func (d *Driver) setPublished(res *resourceslice.DriverResources, seq uint64) {
	d.mu.Lock()
	if d.seq == seq {
		d.want = nil
	}
	d.pubSeq = seq
	d.mu.Unlock()
	n := 0
	for _, p := range res.Pools {
		n += len(p.Slices)
	}
	d.ready.Store(true)
	d.log.Info("ResourceSlices updated", zap.Int("pools", len(res.Pools)), zap.Int("slices", n))
}

// Ready implements the Manager's DRAPublisher: registered with kubelet
// and slices handed to the controller.
func (d *Driver) Ready() bool {
	if !d.ready.Load() || d.helper == nil {
		return false
	}
	st := d.helper.RegistrationStatus()
	return st != nil && st.PluginRegistered
}

func (d *Driver) snapshot() (*pool.Plan, *sysfs.Host) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.plan, d.host
}

// PrepareResourceClaims implements kubeletplugin.DRAPlugin.
func (d *Driver) PrepareResourceClaims(ctx context.Context, claims []*resourceapi.ResourceClaim) (map[types.UID]kubeletplugin.PrepareResult, error) {
	d.cpMu.Lock()
	defer d.cpMu.Unlock()
	out := make(map[types.UID]kubeletplugin.PrepareResult, len(claims))
	for _, c := range claims {
		devs, err := d.prepare(ctx, c)
		if err != nil {
			d.log.Error("prepare claim failed", zap.String("claim", c.Namespace+"/"+c.Name), zap.String("uid", string(c.UID)), zap.Error(err))
		}
		out[c.UID] = kubeletplugin.PrepareResult{Devices: devs, Err: err}
	}
	return out, nil
}

// prepare prepares one claim; the checkpoint lock is held. A claim already
// in the checkpoint gets its recorded answer (kubelet retries after a
// restart). On failure nothing it changed stays changed.
func (d *Driver) prepare(ctx context.Context, c *resourceapi.ResourceClaim) ([]kubeletplugin.Device, error) {
	cp := d.prepared.Load()
	uid := string(c.UID)
	if pc, ok := cp.Claims[uid]; ok {
		return d.answer(pc), nil
	}
	plan, h := d.snapshot()
	if plan == nil {
		return nil, errors.New("no device plan yet (the plugin is starting); kubelet retries")
	}
	devs, err := claimUnits(c, d.o.DriverName, plan, groupChanged(cp, plan))
	if err != nil {
		return nil, err
	}
	if err := conflicts(cp, uid, devs); err != nil {
		return nil, fmt.Errorf("claim %s/%s: %w", c.Namespace, c.Name, err)
	}
	pc := &PreparedClaim{Namespace: c.Namespace, Name: c.Name}
	var undo []sysfs.Address  // functions bound by this call
	var vhost []vhostPrepared // vhost-user slots prepared by this call
	fail := func(err error) ([]kubeletplugin.Device, error) {
		d.releaseVhostUser(vhost)
		if len(undo) > 0 {
			if rerr := d.o.Binder.Restore(context.WithoutCancel(ctx), undo); rerr != nil {
				err = fmt.Errorf("%w; roll back: %w (`sriov-cdi restore` finishes it)", err, rerr)
			}
			d.refresh("claim prepare rolled back", undo)
		}
		if rerr := cdi.RemoveClaimSpecs(d.o.CDIDir, pc.SpecFiles); rerr != nil {
			err = fmt.Errorf("%w; %w", err, rerr)
		}
		return nil, fmt.Errorf("claim %s/%s: %w", c.Namespace, c.Name, err)
	}
	// Bind per pool (one call binds all its units with rollback).
	byPool := map[string][]int{}
	var poolOrder []string
	for i, dv := range devs {
		if _, ok := byPool[dv.Pool.Name]; !ok {
			poolOrder = append(poolOrder, dv.Pool.Name)
		}
		byPool[dv.Pool.Name] = append(byPool[dv.Pool.Name], i)
	}
	bound := map[sysfs.Address]bool{}
	var specs []*cdispec.Spec
	for _, name := range poolOrder {
		idx := byPool[name]
		p := devs[idx[0]].Pool
		units := make([]pool.Unit, len(idx))
		for j, i := range idx {
			units[j] = devs[i].Unit
		}
		b, err := d.o.Binder.Bind(ctx, p.Config, units)
		undo = append(undo, b...)
		for _, a := range b {
			bound[a] = true
		}
		if err != nil {
			return fail(err)
		}
		var spec *cdispec.Spec
		if p.Mode == config.ModeVhostUser {
			vp, err := d.prepareVhostUser(p, uid, units)
			if err != nil {
				return fail(err)
			}
			vhost = append(vhost, vp...)
			allocs := make([]vhostuser.Allocation, len(vp))
			for j := range vp {
				allocs[j] = vp[j].alloc
			}
			spec, err = cdi.ClaimVhostUserSpecFor(p, uid, allocs)
			if err != nil {
				return fail(err)
			}
		} else if spec, err = cdi.ClaimSpecFor(p, units, h, d.o.Root, uid); err != nil {
			return fail(err)
		}
		specs = append(specs, spec)
	}
	if len(undo) > 0 {
		d.refresh("claim prepared", undo)
	}
	files, err := cdi.WriteClaimSpecs(d.o.CDIDir, uid, specs)
	if err != nil {
		return fail(err)
	}
	pc.SpecFiles = files
	for _, dv := range devs {
		pd := PreparedDevice{Requests: []string{dv.Request}, Pool: dv.Pool.Name, Device: dv.Device, Unit: dv.Unit.ID,
			Members: dv.Unit.Members, Group: dv.Unit.Group, Restore: dv.Pool.Config.RestoreOnRelease,
			CDIIDs: []string{cdi.QualifiedName(dv.Pool.Resource, sysfs.Address(cdi.ClaimDeviceName(uid, dv.Unit.ID)))}}
		for _, m := range dv.Unit.Members {
			if bound[m] {
				pd.Bound = append(pd.Bound, m)
			}
		}
		for _, vp := range vhost {
			if dv.Pool.Mode == config.ModeVhostUser && vp.rec.Prefix == vhostClaimPrefix(dv.Pool.Name, uid) && vp.rec.Slot == string(dv.Unit.ID) {
				pd.VhostUser = vp.rec
			}
		}
		pc.Devices = append(pc.Devices, pd)
	}
	next := cp.with(uid, pc)
	if err := next.save(d.cpPath); err != nil {
		return fail(err)
	}
	d.prepared.Store(next)
	d.log.Info("claim prepared", zap.String("claim", c.Namespace+"/"+c.Name), zap.String("uid", uid), zap.Strings("devices", deviceNames(pc)), zap.Strings("cdiSpecs", files))
	return d.answer(pc), nil
}

// answer is the helper's result for a prepared claim, with the device
// metadata (KEP-5304) the helper writes when enabled.
func (d *Driver) answer(pc *PreparedClaim) []kubeletplugin.Device {
	_, h := d.snapshot()
	out := make([]kubeletplugin.Device, 0, len(pc.Devices))
	for _, pd := range pc.Devices {
		dev := kubeletplugin.Device{Requests: pd.Requests, PoolName: pd.Pool, DeviceName: pd.Device, CDIDeviceIDs: pd.CDIIDs}
		switch {
		case d.o.Metadata && pd.VhostUser != nil:
			dev.Metadata = &kubeletplugin.DeviceMetadata{Attributes: vhostMetadata(pd.VhostUser, d.o.DriverName)}
		case d.o.Metadata:
			dev.Metadata = &kubeletplugin.DeviceMetadata{Attributes: metadataFor(pd, h, d.o.DriverName)}
		}
		out = append(out, dev)
	}
	return out
}

// UnprepareResourceClaims implements kubeletplugin.DRAPlugin: for each
// claim in the checkpoint, remove its CDI specs and return the functions
// its preparation bound to their original driver when the pool says so;
// a claim not in the checkpoint is done already.
func (d *Driver) UnprepareResourceClaims(ctx context.Context, claims []kubeletplugin.NamespacedObject) (map[types.UID]error, error) {
	d.cpMu.Lock()
	defer d.cpMu.Unlock()
	out := make(map[types.UID]error, len(claims))
	for _, c := range claims {
		err := d.unprepare(ctx, string(c.UID))
		if err != nil {
			d.log.Error("unprepare claim failed", zap.String("claim", c.Namespace+"/"+c.Name), zap.String("uid", string(c.UID)), zap.Error(err))
		}
		out[c.UID] = err
	}
	return out, nil
}

func (d *Driver) unprepare(ctx context.Context, uid string) error {
	cp := d.prepared.Load()
	pc, ok := cp.Claims[uid]
	if !ok {
		return nil
	}
	if err := cdi.RemoveClaimSpecs(d.o.CDIDir, pc.SpecFiles); err != nil {
		return err
	}
	for _, pd := range pc.Devices {
		if pd.VhostUser == nil {
			continue
		}
		if err := releaseSlot(pd.VhostUser, d.log.With(zap.String("pool", pd.Pool), zap.String("uid", uid))); err != nil {
			return fmt.Errorf("claim %s/%s: vhost-user slot %s/%s: %w", pc.Namespace, pc.Name, pd.Pool, pd.Device, err)
		}
	}
	var restore []sysfs.Address
	for _, pd := range pc.Devices {
		if pd.Restore {
			restore = append(restore, pd.Bound...)
		}
	}
	if len(restore) > 0 {
		if err := d.o.Binder.Restore(ctx, restore); err != nil {
			return fmt.Errorf("claim %s/%s: restore original drivers: %w", pc.Namespace, pc.Name, err)
		}
		d.refresh("claim unprepared", restore)
	}
	next := cp.without(uid)
	if err := next.save(d.cpPath); err != nil {
		return err
	}
	d.prepared.Store(next)
	d.log.Info("claim unprepared", zap.String("claim", pc.Namespace+"/"+pc.Name), zap.String("uid", uid), zap.Strings("devices", deviceNames(pc)), zap.Int("restored", len(restore)))
	return nil
}

// HandleError implements kubeletplugin.DRAPlugin: recoverable errors
// (publishing) are logged; others stop the process through Options.Fatal.
func (d *Driver) HandleError(_ context.Context, err error, msg string) {
	var dropped *resourceslice.DroppedFieldsError
	switch {
	case errors.As(err, &dropped):
		d.log.Error("the API server dropped fields of our ResourceSlices; with --dra-device-taints the cluster needs the DRADeviceTaints feature gate (or run without taints: unhealthy devices are then left out)", zap.String("detail", msg), zap.Error(err))
	case errors.Is(err, kubeletplugin.ErrRecoverable):
		d.log.Warn("DRA background error", zap.String("detail", msg), zap.Error(err))
	default:
		d.log.Error("DRA fatal error", zap.String("detail", msg), zap.Error(err))
		if d.o.Fatal != nil {
			d.o.Fatal(fmt.Errorf("DRA driver: %s: %w", msg, err))
		}
	}
}

// WatchHealthStatus implements kubeletplugin.DRAPlugin: the health of
// every DRA device now, again on every change and at least every
// HealthResend.
func (d *Driver) WatchHealthStatus(ctx context.Context, reports chan<- kubeletplugin.DeviceHealthReport) error {
	t := time.NewTicker(d.o.HealthResend)
	defer t.Stop()
	for {
		d.mu.Lock()
		rep := kubeletplugin.DeviceHealthReport{Devices: append([]kubeletplugin.DeviceHealth(nil), d.health...)}
		changed := d.changed
		d.mu.Unlock()
		now := time.Now()
		for i := range rep.Devices {
			rep.Devices[i].LastUpdated = now
		}
		select {
		case <-ctx.Done():
			return nil
		case reports <- rep:
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-t.C:
		}
	}
}

func (d *Driver) refresh(reason string, addrs []sysfs.Address) {
	if d.o.Refresh == nil {
		return
	}
	for _, a := range addrs {
		d.o.Refresh(reason, a)
	}
}

func (cp *Checkpoint) with(uid string, pc *PreparedClaim) *Checkpoint {
	next := &Checkpoint{Version: cp.Version, Claims: make(map[string]*PreparedClaim, len(cp.Claims)+1)}
	for k, v := range cp.Claims {
		next.Claims[k] = v
	}
	next.Claims[uid] = pc
	return next
}

func (cp *Checkpoint) without(uid string) *Checkpoint {
	next := &Checkpoint{Version: cp.Version, Claims: make(map[string]*PreparedClaim, len(cp.Claims))}
	for k, v := range cp.Claims {
		if k != uid {
			next.Claims[k] = v
		}
	}
	return next
}

func deviceNames(pc *PreparedClaim) []string {
	out := make([]string, len(pc.Devices))
	for i, d := range pc.Devices {
		out[i] = d.Pool + "/" + d.Device
	}
	sort.Strings(out)
	return out
}
