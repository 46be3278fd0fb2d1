package dra

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/dynamic-resource-allocation/resourceslice"

	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
	"github.com/sriov-cdi/sriov-cdi/sysfs/sysfstest"
)

// pubRig runs a publisher, as Start does, over the fake API server.
type pubRig struct {
	kick      chan struct{}
	mu        sync.Mutex
	want, got *resourceslice.DriverResources
	seq       uint64
	stop      func()
}

func newPubRig(t testing.TB, a *apiServer, syncDelay time.Duration) *pubRig {
	t.Helper()
	r := &pubRig{kick: make(chan struct{}, 1)}
	p := &publisher{
		driverName: "example.com", nodeName: "node1", client: a, log: zaptest.NewLogger(t),
		onError: func(_ context.Context, err error, msg string) { t.Logf("controller: %s: %v", msg, err) },
		onPublished: func(res *resourceslice.DriverResources, _ uint64) {
			r.mu.Lock()
			r.got = res
			r.mu.Unlock()
		},
		want: func() (*resourceslice.DriverResources, uint64) {
			r.mu.Lock()
			defer r.mu.Unlock()
			return r.want, r.seq
		},
		kick: r.kick, syncDelay: syncDelay,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.run(ctx)
	}()
	r.stop = func() { cancel(); <-done }
	t.Cleanup(r.stop)
	return r
}

func (r *pubRig) publish(res *resourceslice.DriverResources) {
	r.mu.Lock()
	r.want = res
	r.seq++
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// previousProcess publishes 2 PFs x 64 VFs through a controller of its
// own, as the last plugin process did, and stops it; it returns the
// resources and the slice names.
func previousProcess(t *testing.T, a *apiServer) (*resourceslice.DriverResources, map[string]bool) {
	t.Helper()
	root, cfg := scaleHost(t, 2, 64)
	h, err := sysfs.Scan(root)
	if err != nil {
		t.Fatal(err)
	}
	res := Resources(pool.Build(cfg, h), h, PublishOptions{Driver: "example.com"})
	c := startController(t, a, res)
	names := map[string]bool{}
	for _, s := range a.waitSlices(t, 128, 2) {
		names[s.Name] = true
	}
	c.Stop()
	return &res, names
}

// sameSlices: the slices now are the named ones (the same objects: no
// slice was deleted and made again).
func sameSlices(t *testing.T, a *apiServer, names map[string]bool) {
	t.Helper()
	items := a.slicesNow(t)
	if len(items) != len(names) {
		t.Errorf("%d slices, want the %d of before", len(items), len(names))
	}
	for _, s := range items {
		if !names[s.Name] {
			t.Errorf("slice %s is new", s.Name)
		}
	}
}

// A restarted plugin whose first plan comes while the controller it
// started early still syncs: the slices of the previous process stay the
// same objects (no delete, no create).
func TestPublisherRestartKeepsSlices(t *testing.T) {
	t.Parallel()
	a := newAPIServer()
	res, names := previousProcess(t, a)
	creates := a.creates.Load()
	syncDelay := 3 * time.Second
	r := newPubRig(t, a, syncDelay)
	r.publish(res)
	// Past the controller's sync delay: every pool was synced against the plan.
	time.Sleep(2 * syncDelay)
	r.mu.Lock()
	got := r.got
	r.mu.Unlock()
	if got != res {
		t.Fatal("the controller never took the plan")
	}
	if n := a.deletes.Load(); n != 0 {
		t.Errorf("%d slices deleted", n)
	}
	if n := a.creates.Load() - creates; n != 0 {
		t.Errorf("%d slices created", n)
	}
	sameSlices(t, a, names)
}

// A first plan later than the sync delay (a slow first scan): the idle
// controller, which would have deleted the previous process's slices
// then, was stopped before; the plan starts a new one and the slices stay.
func TestPublisherLatePlanKeepsSlices(t *testing.T) {
	t.Parallel()
	a := newAPIServer()
	res, names := previousProcess(t, a)
	syncDelay := 3 * time.Second
	r := newPubRig(t, a, syncDelay)
	time.Sleep(syncDelay + syncDelay/2)
	if n := a.deletes.Load(); n != 0 {
		t.Fatalf("%d slices deleted before the first plan", n)
	}
	r.publish(res)
	time.Sleep(2 * syncDelay)
	if n := a.deletes.Load(); n != 0 {
		t.Errorf("%d slices deleted", n)
	}
	sameSlices(t, a, names)
}

// Publish never waits for the API server: with the ResourceSlice list
// hanging (an API server that does not answer), Publish returns; once the
// list answers, the slices appear.
func TestPublishDoesNotWaitForTheAPIServer(t *testing.T) {
	t.Parallel()
	answer := make(chan struct{})
	r := newRigBefore(t, driverCfg, func(r *rig) {
		r.client.PrependReactor("list", "resourceslices", func(k8stesting.Action) (bool, runtime.Object, error) {
			<-answer
			return false, nil, nil
		})
	})
	// newRigBefore published once (replan) with the list hanging; again:
	returned := make(chan struct{})
	go func() {
		r.replan(t)
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(time.Minute):
		close(answer)
		t.Fatal("Publish waited for the API server (a minute: a bound on a hang)")
	}
	if r.drv.Ready() {
		t.Error("Ready before any slice was handed to the controller")
	}
	close(answer)
	res := r.published(t)
	n := 0
	for _, p := range res.Pools {
		for _, s := range p.Slices {
			n += len(s.Devices)
		}
	}
	if n == 0 {
		t.Fatal("no device published")
	}
}

// A rescan that changes nothing the slices show builds no resources and
// hands nothing on; once the controller took the resources the driver
// keeps none of its own; a change (a VF losing its driver) is handed on.
func TestPublishComparesInputsAndKeepsNoCopy(t *testing.T) {
	r := newRig(t)
	r.published(t)
	r.drv.mu.Lock()
	seq, want := r.drv.seq, r.drv.want
	r.drv.mu.Unlock()
	if want != nil {
		t.Error("the driver still holds the resources the controller took")
	}
	r.replan(t)
	r.drv.mu.Lock()
	if r.drv.seq != seq || r.drv.want != nil {
		t.Errorf("an unchanged rescan made resources number %d (was %d), held: %v", r.drv.seq, seq, r.drv.want != nil)
	}
	r.drv.mu.Unlock()
	if err := sysfstest.SetDriver(filepath.Join(r.dir, "host"), "0000:01:00.1", ""); err != nil {
		t.Fatal(err)
	}
	r.replan(t)
	res := r.published(t)
	r.drv.mu.Lock()
	got := r.drv.seq
	r.drv.mu.Unlock()
	if got != seq+1 {
		t.Errorf("after a VF lost its driver: resources number %d, want %d", got, seq+1)
	}
	for _, s := range res.Pools["vf"].Slices {
		for _, d := range s.Devices {
			if d.Name == "pci-0000-01-00-1" {
				t.Errorf("%s (no driver: unhealthy, taints off) is still published", d.Name)
			}
		}
	}
}
