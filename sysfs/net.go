package sysfs

import (
	"net"
	"os"
	"path/filepath"
	"strings"
)

// LiveNetUsage answers NetUsage for the network namespace this process runs
// in: a netdev is in use by the host when it holds a routable address or
// carries a default route. Only meaningful when the scanned root is the
// running host's /sys.
type LiveNetUsage struct {
	defaultRoutes map[string]bool
}

var _ NetUsage = (*LiveNetUsage)(nil)

// NewLiveNetUsage reads the default routes from procRoot/net/route and
// procRoot/net/ipv6_route ("/proc" on a host). Missing files mean "no
// default route known", not an error: IPv6 may be disabled.
func NewLiveNetUsage(procRoot string) *LiveNetUsage {
	l := &LiveNetUsage{defaultRoutes: map[string]bool{}}
	if b, err := os.ReadFile(filepath.Join(procRoot, "net", "route")); err == nil {
		for _, n := range DefaultRouteIfaces4(string(b)) {
			l.defaultRoutes[n] = true
		}
	}
	if b, err := os.ReadFile(filepath.Join(procRoot, "net", "ipv6_route")); err == nil {
		for _, n := range DefaultRouteIfaces6(string(b)) {
			l.defaultRoutes[n] = true
		}
	}
	return l
}

// HostUse implements NetUsage.
func (l *LiveNetUsage) HostUse(ifname string) string {
	if l.defaultRoutes[ifname] {
		return "carries the default route"
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return ""
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLinkLocalUnicast() {
			return "holds address " + ipn.IP.String()
		}
	}
	return ""
}

// DefaultRouteIfaces4 returns the interfaces of IPv4 default routes in the
// text of /proc/net/route (destination and mask 00000000).
func DefaultRouteIfaces4(text string) []string {
	var out []string
	for i, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 8 {
			continue // header or short line
		}
		if f[1] == "00000000" && f[7] == "00000000" {
			out = append(out, f[0])
		}
	}
	return out
}

// DefaultRouteIfaces6 returns the interfaces of IPv6 default routes in the
// text of /proc/net/ipv6_route (::/0), ignoring the loopback's unreachable
// entries.
func DefaultRouteIfaces6(text string) []string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || f[9] == "lo" {
			continue
		}
		if f[0] == strings.Repeat("0", 32) && f[1] == "00" {
			out = append(out, f[9])
		}
	}
	return out
}
