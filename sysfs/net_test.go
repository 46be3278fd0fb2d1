package sysfs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// inNetns runs the calling test again in a private network namespace
// (`unshare -n`) and reports whether this process is that copy. It skips
// when not root or without unshare.
func inNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv("SRIOV_CDI_TEST_NETNS") == t.Name() {
		return true
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace with links, addresses and routes")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare (util-linux) to create a network namespace")
	}
	cmd := exec.Command("unshare", "-n", os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "SRIOV_CDI_TEST_NETNS="+t.Name())
	out, err := cmd.CombinedOutput()
	t.Logf("in a private network namespace:\n%s", out)
	if err != nil {
		t.Fatalf("test in network namespace failed: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatal("the test did not run in the network namespace")
	}
	return false
}

func ip(t *testing.T, script string) {
	t.Helper()
	cmd := exec.Command("ip", "-batch", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ip -batch: %v: %s\n%s", err, out, script)
	}
}

// linkKind is dummy where the kernel has it, else ifb.
func linkKind(t *testing.T) string {
	if exec.Command("ip", "link", "add", "probe0", "type", "dummy").Run() == nil {
		ip(t, "link del probe0\n")
		return "dummy"
	}
	return "ifb"
}

func hostUses(u NetUsage, names ...string) map[string]string {
	out := map[string]string{}
	for _, n := range names {
		if w := u.HostUse(n); w != "" {
			out[n] = w
		}
	}
	return out
}

// TestLiveNet checks the rtnetlink answers against real links, addresses
// and routes in a private network namespace: an IPv4 and an IPv6 address,
// the default route, a link-local-only link and an idle one.
func TestLiveNet(t *testing.T) {
	if !inNetns(t) {
		return
	}
	kind := linkKind(t)
	var sb strings.Builder
	sb.WriteString("link set lo up\n")
	for _, n := range []string{"v4", "v6", "gw", "ll", "idle"} {
		fmt.Fprintf(&sb, "link add %s type %s\nlink set %s up\n", n, kind, n)
	}
	sb.WriteString("addr add 192.0.2.1/24 dev v4\n")
	sb.WriteString("addr add 2001:db8::1/64 dev v6 nodad\n")
	sb.WriteString("addr add 198.51.100.2/24 dev gw\nroute add default via 198.51.100.1 dev gw\n")
	sb.WriteString("addr add fe80::1/64 dev ll nodad\n")
	ip(t, sb.String())
	want := map[string]string{
		"v4": "holds address 192.0.2.1",
		"v6": "holds address 2001:db8::1",
		"gw": "carries the default route",
	}
	names := []string{"v4", "v6", "gw", "ll", "idle", "absent"}
	if diff := cmp.Diff(want, hostUses(NewLiveNet().Fresh(), names...)); diff != "" {
		t.Errorf("Fresh (-want +got)\n%s", diff)
	}
	// Many links in use: one link dump instead of a lookup each.
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	u, err := dumpNetUse(h, 0)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, hostUses(u, names...)); diff != "" {
		t.Errorf("with a link dump (-want +got)\n%s", diff)
	}
}

// TestLiveNetWatch checks that Current reuses its dump while nothing
// changes and that an rtnetlink event both names the netdev and makes the
// next answer fresh.
func TestLiveNetWatch(t *testing.T) {
	if !inNetns(t) {
		return
	}
	kind := linkKind(t)
	ip(t, fmt.Sprintf("link set lo up\nlink add a0 type %s\nlink set a0 up\nlink add a1 type %s\nlink set a1 up\n", kind, kind))
	l := NewLiveNet()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := make(chan string, 64)
	done := make(chan error, 1)
	go func() { done <- l.Watch(ctx, func(n string) { events <- n }) }()
	deadline := time.Now().Add(5 * time.Second)
	for !l.watching.Load() {
		if time.Now().After(deadline) {
			t.Fatal("Watch did not start")
		}
		time.Sleep(time.Millisecond)
	}
	first := l.Current()
	if fmt.Sprintf("%p", first) != fmt.Sprintf("%p", l.Current()) {
		t.Error("a quiet host dumped again")
	}
	ip(t, "addr add 192.0.2.9/24 dev a1\n")
	wait := time.After(5 * time.Second)
	for got := ""; got != "a1"; {
		select {
		case got = <-events:
		case <-wait:
			t.Fatal("no event naming a1 within 5 s")
		}
	}
	if diff := cmp.Diff(map[string]string{"a1": "holds address 192.0.2.9"}, hostUses(l.Current(), "a0", "a1")); diff != "" {
		t.Errorf("Current after the address was added (-want +got)\n%s", diff)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if l.watching.Load() {
		t.Error("still marked watching after Watch returned")
	}
}

// TestNetUnknown: a failed dump answers every netdev as used.
func TestNetUnknown(t *testing.T) {
	u := netUnknown{fmt.Errorf("boom")}
	if got := u.HostUse("ens1f0"); !strings.Contains(got, "boom") {
		t.Errorf("HostUse = %q, want the error as the reason", got)
	}
}
