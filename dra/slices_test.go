package dra

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/dynamic-resource-allocation/resourceslice"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
	"github.com/sriov-cdi/sriov-cdi/sysfs/sysfstest"
)

// apiServer is the fake clientset with what the real API server does and
// the fake does not: names from generateName. It counts slice writes.
type apiServer struct {
	*fake.Clientset
	creates, updates, deletes atomic.Int64
}

func newAPIServer() *apiServer {
	a := &apiServer{Clientset: fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1", UID: "node1-uid"}})}
	var n atomic.Int64
	a.PrependReactor("create", "resourceslices", func(act k8stesting.Action) (bool, runtime.Object, error) {
		s := act.(k8stesting.CreateAction).GetObject().(*resourceapi.ResourceSlice)
		if s.Name == "" && s.GenerateName != "" {
			s.Name = fmt.Sprintf("%s%05d", s.GenerateName, n.Add(1))
		}
		a.creates.Add(1)
		return false, nil, nil
	})
	a.PrependReactor("update", "resourceslices", func(k8stesting.Action) (bool, runtime.Object, error) {
		a.updates.Add(1)
		return false, nil, nil
	})
	a.PrependReactor("delete", "resourceslices", func(k8stesting.Action) (bool, runtime.Object, error) {
		a.deletes.Add(1)
		return false, nil, nil
	})
	return a
}

// slicesNow lists the published slices.
func (a *apiServer) slicesNow(t testing.TB) []resourceapi.ResourceSlice {
	t.Helper()
	l, err := a.ResourceV1().ResourceSlices().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

// waitSlices waits until the published slices hold want devices in all
// and the controller has nothing queued (5 min at most: not a timing
// assertion, a bound on a hang).
func (a *apiServer) waitSlices(t testing.TB, wantDevices, wantSlices int) []resourceapi.ResourceSlice {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
		items := a.slicesNow(t)
		n := 0
		for _, s := range items {
			n += len(s.Spec.Devices)
		}
		if n == wantDevices && len(items) == wantSlices {
			return items
		}
		if time.Now().After(deadline) {
			t.Fatalf("published %d devices in %d slices, want %d in %d", n, len(items), wantDevices, wantSlices)
		}
	}
}

func scaleHost(t testing.TB, pfs, vfs int) (sysfs.Root, *config.Config) {
	t.Helper()
	b := sysfstest.SRIOVNICHost(filepath.Join(t.TempDir(), "host"), pfs, vfs)
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse("scale.yaml", []byte("resourcePrefix: example.com\npools:\n  - {name: vf, api: dra, selectors: {vendors: [\"8086\"], devices: [\"154c\"]}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	return sysfs.Root{Sys: b.Sys(), Dev: b.Dev()}, c
}

// startController is the production publishing path without the gRPC
// parts: the resourceslice controller the helper's PublishResources
// starts, with the same owner.
func startController(t testing.TB, a *apiServer, res resourceslice.DriverResources) *resourceslice.Controller {
	t.Helper()
	c, err := resourceslice.StartController(context.Background(), resourceslice.Options{
		DriverName: "example.com", KubeClient: a, Owner: &resourceslice.Owner{APIVersion: "v1", Kind: "Node", Name: "node1"},
		Resources: &res,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

// TestOneVFChangeRewritesOneSlice: with 4 PFs x 64 VFs published, a VF
// turning unhealthy (taints on) updates exactly one slice, creates none.
func TestOneVFChangeRewritesOneSlice(t *testing.T) {
	root, cfg := scaleHost(t, 4, 64)
	h, err := sysfs.Scan(root)
	if err != nil {
		t.Fatal(err)
	}
	plan := pool.Build(cfg, h)
	o := PublishOptions{Driver: "example.com", Taints: true}
	a := newAPIServer()
	ctl := startController(t, a, Resources(plan, h, o))
	a.waitSlices(t, 256, 4)
	creates, updates := a.creates.Load(), a.updates.Load()

	o.Unhealthy = map[sysfs.Address]string{"0000:02:00.5": "PF link down"}
	res := Resources(plan, h, o)
	ctl.Update(&res)
	for deadline := time.Now().Add(time.Minute); a.updates.Load() == updates; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no slice updated within a minute")
		}
	}
	// Let the controller finish its queue: the stats settle.
	st := ctl.GetStats()
	for i := 0; i < 100; i++ {
		time.Sleep(10 * time.Millisecond)
		if ctl.GetStats() != st {
			st, i = ctl.GetStats(), 0
		}
	}
	if got := a.updates.Load() - updates; got != 1 {
		t.Errorf("%d slice updates, want 1", got)
	}
	if got := a.creates.Load() - creates; got != 0 {
		t.Errorf("%d slice creates, want 0", got)
	}
	tainted := 0
	for _, s := range a.slicesNow(t) {
		for _, d := range s.Spec.Devices {
			if len(d.Taints) > 0 {
				tainted++
				if d.Name != "pci-0000-02-00-5" {
					t.Errorf("tainted device %s", d.Name)
				}
			}
		}
	}
	if tainted != 1 {
		t.Errorf("%d tainted devices, want 1", tainted)
	}
}

// BenchmarkPublish4096 measures the production sequence from start to
// every slice stored: the publisher starts its ResourceSlice controller
// (as Start does) while a fixture host of 32 PFs x 128 VFs is scanned and
// planned; the DRA resources are published and the controller writes them
// to the (fake) API server. Reports slices per run. e2e/bench/host.sh
// measures the real binary against a real kube-apiserver.
func BenchmarkPublish4096(b *testing.B) {
	root, cfg := scaleHost(b, 32, 128)
	for b.Loop() {
		a := newAPIServer()
		r := newPubRig(b, a, resourceslice.DefaultSyncDelay)
		h, err := sysfs.Scan(root)
		if err != nil {
			b.Fatal(err)
		}
		plan := pool.Build(cfg, h)
		res := Resources(plan, h, PublishOptions{Driver: "example.com"})
		r.publish(&res)
		items := a.waitSlices(b, 4096, 32)
		b.ReportMetric(float64(len(items)), "slices")
		r.stop()
	}
}
