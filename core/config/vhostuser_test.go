package config

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseVhostUserDefaults(t *testing.T) {
	c, err := Parse("c.yaml", []byte(`
pools:
  - name: vhu
    mode: vhost-user
    vhostUser: {count: 4, baseDir: /var/run/vhost-user}
`))
	if err != nil {
		t.Fatal(err)
	}
	minus1 := -1
	want := &VhostUser{Count: 4, BaseDir: "/var/run/vhost-user", ContainerPath: DefaultVhostUserContainerDir,
		SocketName: DefaultVhostUserSocketName, SocketMode: SocketServer, Permissions: "0770", NUMANode: &minus1}
	if diff := cmp.Diff(want, c.Pools[0].VhostUser); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	if c.Pools[0].Selectors != nil {
		t.Errorf("selectors = %v, want none", c.Pools[0].Selectors)
	}
}

func TestParseVhostUserErrors(t *testing.T) {
	long := strings.Repeat("d", 90)
	tests := []struct {
		name string
		in   string // the pool's fields after "name: v, mode: vhost-user"
		want []string
	}{
		{"no block", ``, []string{`pools[0] ("v").vhostUser: missing`}},
		{"count 0", `vhostUser: {count: 0, baseDir: /b}`, []string{`vhostUser.count: 0 is out of range`}},
		{"count negative", `vhostUser: {count: -3, baseDir: /b}`, []string{`vhostUser.count: -3 is out of range`}},
		{"count above cap", `vhostUser: {count: 1025, baseDir: /b}`, []string{`vhostUser.count: 1025 is out of range; give the switch's port capacity on one node, 1 to 1024`}},
		{"no base", `vhostUser: {count: 1}`, []string{`vhostUser.baseDir: missing`}},
		{"relative base", `vhostUser: {count: 1, baseDir: run/vhu}`, []string{`vhostUser.baseDir: "run/vhu" is not an absolute path`}},
		{"traversal in base", `vhostUser: {count: 1, baseDir: /run/../etc}`, []string{`vhostUser.baseDir: "/run/../etc" is not clean`, `write it as "/etc"`}},
		{"root base", `vhostUser: {count: 1, baseDir: /}`, []string{`vhostUser.baseDir: "/" is not a usable directory`}},
		{"trailing slash", `vhostUser: {count: 1, baseDir: /run/vhu/}`, []string{`vhostUser.baseDir: "/run/vhu/" is not clean`}},
		{"traversal in container path", `vhostUser: {count: 1, baseDir: /b, containerPath: /x/../../etc}`, []string{`vhostUser.containerPath: "/x/../../etc" is not clean`}},
		{"socket name with slash", `vhostUser: {count: 1, baseDir: /b, socketName: ../../etc/passwd}`, []string{`vhostUser.socketName: "../../etc/passwd" is not a plain file name`}},
		{"socket name dotdot", `vhostUser: {count: 1, baseDir: /b, socketName: ..}`, []string{`vhostUser.socketName: ".." is not a plain file name`}},
		{"socket mode", `vhostUser: {count: 1, baseDir: /b, socketMode: both}`, []string{`vhostUser.socketMode: "both" is not a socket mode; use "server"`}},
		{"owner names", `vhostUser: {count: 1, baseDir: /b, owner: "qemu:kvm"}`, []string{`vhostUser.owner: "qemu:kvm" is not "uid:gid"`}},
		{"owner one number", `vhostUser: {count: 1, baseDir: /b, owner: "107"}`, []string{`vhostUser.owner: "107" is not "uid:gid"`}},
		{"permissions setuid", `vhostUser: {count: 1, baseDir: /b, permissions: "4770"}`, []string{`vhostUser.permissions: "4770" is not an octal mode`}},
		{"permissions not octal", `vhostUser: {count: 1, baseDir: /b, permissions: "0780"}`, []string{`vhostUser.permissions: "0780"`}},
		{"permissions unquoted", `vhostUser: {count: 1, baseDir: /b, permissions: 0770}`, []string{`vhostUser.permissions`, `want a string`}},
		{"numa", `vhostUser: {count: 1, baseDir: /b, numaNode: -2}`, []string{`vhostUser.numaNode: -2 is not a NUMA node`}},
		{"unknown field", `vhostUser: {count: 1, baseDir: /b, sockets: 3}`, []string{`unknown field "sockets"`}},
		{"host socket too long", `vhostUser: {count: 10, baseDir: /` + long + `}`, []string{`vhostUser.baseDir: the host socket path /` + long + `/sriov-cdi.v.slot-9/vhost.sock is 121 bytes`}},
		{"container socket too long", `vhostUser: {count: 1, baseDir: /b, containerPath: /` + long + `x}`, []string{`vhostUser.containerPath: the container socket path`}},
		{"device options", `vhostUser: {count: 1, baseDir: /b}, bindAt: startup, rdma: true, vhostNet: true, deviceNodes: true, selectors: {vendors: ["8086"]}`,
			[]string{`("v").bindAt: a vhost-user pool hands out socket directories`, `("v").rdma:`, `("v").vhostNet:`, `("v").deviceNodes:`, `("v").selectors: a vhost-user pool`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := "pools: [{name: v, mode: vhost-user"
			if tc.in != "" {
				in += ", " + tc.in
			}
			in += "}]"
			_, err := Parse("c.yaml", []byte(in))
			if err == nil {
				t.Fatalf("Parse(%s) succeeded, want an error", in)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestParseVhostUserBlockOnOtherModes(t *testing.T) {
	_, err := Parse("c.yaml", []byte(`pools: [{name: k, selectors: {vendors: ["8086"]}, vhostUser: {count: 1, baseDir: /b}}]`))
	if err == nil || !strings.Contains(err.Error(), `pools[0] ("k").vhostUser: only vhost-user pools have it`) {
		t.Fatalf("err = %v, want vhostUser refused on a kernel pool", err)
	}
}

func TestVhostUserNames(t *testing.T) {
	for _, tc := range []struct {
		id   string
		n    int
		isID bool
	}{
		{"slot-0", 0, true}, {"slot-17", 17, true}, {"slot-1023", 1023, true},
		{"slot-", 0, false}, {"slot-01", 0, false}, {"slot--1", 0, false}, {"slot-1x", 0, false},
		{"0000:01:00.1", 0, false}, {"slot-+1", 0, false}, {"Slot-1", 0, false},
	} {
		n, ok := ParseVhostUserSlotID(tc.id)
		if ok != tc.isID || (ok && n != tc.n) {
			t.Errorf("ParseVhostUserSlotID(%q) = %d, %v; want %d, %v", tc.id, n, ok, tc.n, tc.isID)
		}
		if ok && VhostUserSlotID(n) != tc.id {
			t.Errorf("VhostUserSlotID(%d) = %q, want %q", n, VhostUserSlotID(n), tc.id)
		}
	}
	if got := VhostUserDirPrefix("dpdk-ports"); got != "sriov-cdi.dpdk-ports." {
		t.Errorf("VhostUserDirPrefix = %q", got)
	}
	if got := VhostUserEnv("sriov-cdi.io/vhost-user"); got != "SRIOV_CDI_VHOSTUSER_SRIOV_CDI_IO_VHOST_USER" {
		t.Errorf("VhostUserEnv = %q", got)
	}
	for _, tc := range []struct {
		in       string
		uid, gid int
		ok       bool
	}{{"107:107", 107, 107, true}, {"0:0", 0, 0, true}, {"1:", -1, -1, false}, {"-1:0", -1, -1, false}, {"99999999999:0", -1, -1, false}} {
		u, g, ok := ParseOwner(tc.in)
		if u != tc.uid || g != tc.gid || ok != tc.ok {
			t.Errorf("ParseOwner(%q) = %d, %d, %v", tc.in, u, g, ok)
		}
	}
	for _, tc := range []struct {
		in   string
		mode uint32
		ok   bool
	}{{"0770", 0o770, true}, {"755", 0o755, true}, {"0777", 0o777, true}, {"1777", 0, false}, {"77", 0, false}, {"0o770", 0, false}} {
		m, ok := ParsePermissions(tc.in)
		if m != tc.mode || ok != tc.ok {
			t.Errorf("ParsePermissions(%q) = %o, %v", tc.in, m, ok)
		}
	}
}

// A vhost-user pool may use api: dra; its host socket path is checked with
// the per-claim directory name (36-byte claim UID), which a base the
// device plugin fits may not.
func TestParseVhostUserDRA(t *testing.T) {
	base := "/" + strings.Repeat("b", 40) // dp: 41+1+16+6+1+10 = 75; dra: 41+1+18+36+7+1+10 = 114
	dp := "pools: [{name: vhu, mode: vhost-user, vhostUser: {count: 2, baseDir: " + base + "}}]"
	if _, err := Parse("c.yaml", []byte(dp)); err != nil {
		t.Fatalf("device-plugin pool: %v", err)
	}
	c, err := Parse("c.yaml", []byte("pools: [{name: vhu, api: dra, mode: vhost-user, vhostUser: {count: 2, baseDir: /run/vhu}}]"))
	if err != nil {
		t.Fatalf("DRA pool: %v", err)
	}
	if !c.DRAPools() || c.Pools[0].Mode != ModeVhostUser {
		t.Errorf("pool = %+v", c.Pools[0])
	}
	_, err = Parse("c.yaml", []byte(strings.Replace(dp, "name: vhu,", "name: vhu, api: dra,", 1)))
	if err == nil || !strings.Contains(err.Error(), "/sriov-cdi-dra.vhu.") || !strings.Contains(err.Error(), "carries the claim's 36-byte UID") {
		t.Errorf("DRA pool with a long base: err = %v", err)
	}
	if got := VhostUserDRADirPrefix("vhu"); got != "sriov-cdi-dra.vhu." || strings.HasPrefix(got, VhostUserDirPrefix("")[:len("sriov-cdi.")]) {
		t.Errorf("VhostUserDRADirPrefix = %q", got)
	}
}
