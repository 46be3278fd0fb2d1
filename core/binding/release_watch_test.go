package binding

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sriov-cdi/sriov-cdi/plugin/kubelettest"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// clockEnv is a fixture host, a Manager on a test clock and a scripted
// fake kubelet.
type clockEnv struct {
	*env
	now time.Time
	m   *Manager
	kl  *kubelettest.PodResources
	w   *Watcher
}

func newClockEnv(t *testing.T, vfs int, wopts ...WatcherOption) *clockEnv {
	c := &clockEnv{env: newEnv(t, vfs), now: time.Date(2026, 11, 22, 1, 0, 0, 0, time.UTC), kl: kubelettest.New()}
	c.m = c.manager(func(o *options) { o.now = func() time.Time { return c.now } })
	c.w = NewWatcher(c.m, c.kl, zaptest.NewLogger(t), time.Second, time.Minute, wopts...)
	return c
}

func pod(ids ...string) kubelettest.Device {
	return kubelettest.Device{Resource: "sriov-cdi.io/vf", IDs: ids}
}

// poll advances the clock by d and polls once; a failed List is not a test
// failure (the fake may be scripted to fail).
func (c *clockEnv) poll(t *testing.T, d time.Duration) error {
	t.Helper()
	c.now = c.now.Add(d)
	return c.w.Poll(context.Background())
}

func (c *clockEnv) want(t *testing.T, what string, bound ...sysfs.Address) {
	t.Helper()
	want := allOn(iavf, vfAddrs...)
	for _, a := range bound {
		want[a] = vfio
	}
	if diff := cmp.Diff(want, c.drivers(vfAddrs...)); diff != "" {
		t.Errorf("%s (-want +got)\n%s", what, diff)
	}
}

// Right after a kubelet restart PodResources can answer before it knows
// every pod: one incomplete answer (or a few, within the settle time) must
// not restore a device a running pod holds (issue 11.3).
func TestWatcherSurvivesIncompleteListsAfterKubeletRestart(t *testing.T) {
	c := newClockEnv(t, 4)
	pc, units := c.plan("vf")
	if err := c.m.Prepare(context.Background(), pc, units[:2]); err != nil {
		t.Fatal(err)
	}
	c.kl.SetPod("a", pod("0000:01:00.1"))
	c.kl.SetPod("b", pod("0000:01:00.2"))
	for range 3 {
		if err := c.poll(t, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	c.want(t, "both held", "0000:01:00.1", "0000:01:00.2")

	// kubelet restarts: the List fails, then answers without pod a, then
	// without any pod, for a minute.
	c.kl.Script(kubelettest.Answer{Err: errors.New("connection refused")})
	for _, only := range [][]string{{"b"}, {}, {}, {"b"}, {}, {}} {
		c.kl.Script(kubelettest.Answer{Only: only})
	}
	_ = c.poll(t, 10*time.Second)
	for range 6 {
		if err := c.poll(t, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		c.want(t, "incomplete answers after a kubelet restart", "0000:01:00.1", "0000:01:00.2")
	}
	// kubelet knows every pod again; later pod a really goes.
	for range 20 {
		if err := c.poll(t, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	c.want(t, "complete answers", "0000:01:00.1", "0000:01:00.2")
	c.kl.DeletePod("a")
	if err := c.poll(t, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	c.want(t, "one answer without pod a is not enough", "0000:01:00.1", "0000:01:00.2")
	for range 5 {
		if err := c.poll(t, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	c.want(t, "pod a gone for a minute", "0000:01:00.2")
}

// An old picture returned after newer ones (a slow answer overtaken, a
// cache) shows a new pod's device as free: it must not be released.
func TestWatcherIgnoresStaleAnswers(t *testing.T) {
	c := newClockEnv(t, 4)
	pc, units := c.plan("vf")
	before := c.kl.Snapshot() // no pod yet
	if err := c.m.Prepare(context.Background(), pc, units[:1]); err != nil {
		t.Fatal(err)
	}
	c.kl.SetPod("a", pod("0000:01:00.1"))
	for range 15 { // past the settle time after the watcher's start
		if err := c.poll(t, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	c.kl.Script(kubelettest.Answer{From: before})
	if err := c.poll(t, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	c.kl.Script(kubelettest.Answer{From: before}, kubelettest.Answer{}, kubelettest.Answer{From: before}, kubelettest.Answer{From: before})
	for range 4 {
		if err := c.poll(t, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	c.want(t, "stale answers interleaved with current ones", "0000:01:00.1")
}

// A slow kubelet: the answer comes after the poll's deadline; nothing is
// released and the next poll goes on.
func TestWatcherSlowAnswerReleasesNothing(t *testing.T) {
	c := newClockEnv(t, 4)
	pc, units := c.plan("vf")
	if err := c.m.Prepare(context.Background(), pc, units[:1]); err != nil {
		t.Fatal(err)
	}
	c.kl.SetPod("a", pod("0000:01:00.1"))
	if err := c.poll(t, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	c.kl.DeletePod("a")
	c.kl.Script(kubelettest.Answer{Delay: time.Hour})
	if err := c.poll(t, 10*time.Minute); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want the poll's deadline", err)
	}
	c.want(t, "after a slow answer", "0000:01:00.1")
}

// The plugin tells the watcher when it registers again (kubelet
// restarted): absence seen before starts over and the settle time runs
// again, even when no List failed.
func TestWatcherKubeletRestartedSettlesAgain(t *testing.T) {
	c := newClockEnv(t, 4)
	pc, units := c.plan("vf")
	if err := c.m.Prepare(context.Background(), pc, units[:1]); err != nil {
		t.Fatal(err)
	}
	c.kl.SetPod("a", pod("0000:01:00.1"))
	for range 13 {
		if err := c.poll(t, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// Answers without pod a for 20 s, then kubelet re-registers us and
	// answers without pod a for almost two minutes more.
	c.kl.Script(kubelettest.Answer{Only: []string{}}, kubelettest.Answer{Only: []string{}}, kubelettest.Answer{Only: []string{}})
	for range 2 {
		if err := c.poll(t, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	c.w.KubeletRestarted()
	c.kl.DeletePod("a")
	for range 11 {
		if err := c.poll(t, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		c.want(t, "within the settle time after a registration", "0000:01:00.1")
	}
	for range 4 {
		if err := c.poll(t, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	c.want(t, "settled, absent long enough")
}

// A unit kubelet released is not restored while a process (QEMU, DPDK)
// holds its /dev/vfio/<group> open; it is once the process lets go. The
// proc root is a fixture.
func TestWatcherKeepsUnitsWhoseGroupIsOpen(t *testing.T) {
	c := &clockEnv{env: newEnv(t, 4), now: time.Date(2026, 11, 22, 1, 0, 0, 0, time.UTC), kl: kubelettest.New()}
	proc := fakeProc(t, map[string][]string{"4242": {"/dev/vfio/vfio", "/dev/vfio/4"}, "1": {"/dev/null"}})
	c.m = c.manager(func(o *options) { o.now = func() time.Time { return c.now } }, WithProcRoot(proc))
	core, logs := observer.New(zap.InfoLevel)
	c.w = NewWatcher(c.m, c.kl, zap.New(core), time.Second, time.Minute, WithReleaseRule(ReleaseRule{Lists: 1, Span: time.Second, Settle: time.Second}))
	pc, units := c.plan("vf")
	if err := c.m.Prepare(context.Background(), pc, units[:2]); err != nil { // groups 4 and 5
		t.Fatal(err)
	}
	c.kl.SetPod("a", pod("0000:01:00.1", "0000:01:00.2"))
	for range 2 {
		if err := c.poll(t, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	c.kl.DeletePod("a")
	for range 3 {
		if err := c.poll(t, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	c.want(t, "group 4 open by pid 4242", "0000:01:00.1")
	held := logs.FilterMessageSnippet("holds its vfio node open").All()
	if len(held) != 1 {
		t.Errorf("want the open group logged once, got %d", len(held))
	} else if diff := cmp.Diff(map[string]any{"device": "0000:01:00.1", "group": "4", "pool": "vf", "node": "/dev/vfio/4", "pid": int64(4242)}, held[0].ContextMap()); diff != "" {
		t.Errorf("log fields (-want +got)\n%s", diff)
	}
	if err := os.Remove(filepath.Join(proc, "4242", "fd", "4")); err != nil {
		t.Fatal(err)
	}
	if err := c.poll(t, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	c.want(t, "group 4 closed")
}

// A re-created PodResources socket (kubelet restarted between two polls,
// no List failed, no registration reported) starts the settle time again.
func TestWatcherSeesPodResourcesSocketRecreated(t *testing.T) {
	dir, err := os.MkdirTemp("", "prs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "kubelet.sock")
	listen := func() net.Listener {
		t.Helper()
		_ = os.Remove(sock)
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	l := listen()
	rule := ReleaseRule{Lists: 2, Span: 10 * time.Second, Settle: time.Minute}
	c := newClockEnv(t, 4, WithReleaseRule(rule), WithPodResourcesSocket(sock))
	pc, units := c.plan("vf")
	if err := c.m.Prepare(context.Background(), pc, units[:1]); err != nil {
		t.Fatal(err)
	}
	c.kl.SetPod("a", pod("0000:01:00.1"))
	for range 7 {
		if err := c.poll(t, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	c.kl.DeletePod("a")
	if err := c.poll(t, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l = listen() // kubelet restarted
	defer l.Close()
	for range 6 {
		if err := c.poll(t, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		c.want(t, "within the settle time after the socket was re-created", "0000:01:00.1")
	}
	for range 2 {
		if err := c.poll(t, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	c.want(t, "settled")
}

// With vfio cdevs (iommufd) a process holds /dev/vfio/devices/vfioN, not
// the group: that keeps the unit bound too.
func TestWatcherKeepsUnitsWhoseCdevIsOpen(t *testing.T) {
	c := &clockEnv{env: newEnv(t, 4), now: time.Date(2026, 11, 22, 1, 0, 0, 0, time.UTC), kl: kubelettest.New()}
	proc := fakeProc(t, map[string][]string{"77": {"/dev/iommu", "/dev/vfio/devices/vfio0"}})
	c.m = c.manager(func(o *options) { o.now = func() time.Time { return c.now } }, WithProcRoot(proc))
	c.w = NewWatcher(c.m, c.kl, zaptest.NewLogger(t), time.Second, time.Minute, WithReleaseRule(ReleaseRule{Lists: 1, Span: time.Second, Settle: time.Second}))
	pc, units := c.plan("vf")
	if err := c.m.Prepare(context.Background(), pc, units[:1]); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"/dev/vfio/4", "/dev/vfio/devices/vfio0"}, c.m.vfioNodes("0000:01:00.1", "4")); diff != "" {
		t.Errorf("nodes of unit 01:00.1 (-want +got)\n%s", diff)
	}
	c.kl.SetPod("a", pod("0000:01:00.1"))
	if err := c.poll(t, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	c.kl.DeletePod("a")
	for range 3 {
		if err := c.poll(t, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	c.want(t, "cdev open by pid 77", "0000:01:00.1")
}
