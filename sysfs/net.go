package sysfs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// LiveNet learns which netdevs the host uses — a routable address on them,
// a default route through them — from the kernel's routing netlink
// (rtnetlink, through github.com/vishvananda/netlink), in the network
// namespace this process runs in. One answer costs one address dump and one
// route dump, whatever the number of links, plus a link lookup per
// interface that holds an address or a default route (a link dump when
// there are many). Only meaningful when the scanned root is the running
// host's /sys.
type LiveNet struct {
	// gen counts rtnetlink events seen by Watch; a snapshot taken at an
	// older generation is stale.
	gen      atomic.Uint64
	watching atomic.Bool

	mu       sync.Mutex // serialises dumps and guards the cache
	handle   *netlink.Handle
	cached   NetUsage
	cachedAt uint64
}

// NewLiveNet returns a LiveNet for the current network namespace.
func NewLiveNet() *LiveNet { return &LiveNet{} }

// Fresh dumps the kernel's addresses and routes now. A dump that fails
// answers every netdev as in use, with the error as the reason: not
// knowing must never let a netdev be taken from the host. Binding uses it.
func (l *LiveNet) Fresh() NetUsage {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dumpLocked()
}

// Current answers from the last dump while Watch runs and no rtnetlink
// event arrived since; otherwise it dumps (and keeps the result). Scans
// use it: a quiet host costs no netlink traffic at all.
func (l *LiveNet) Current() NetUsage {
	l.mu.Lock()
	defer l.mu.Unlock()
	gen := l.gen.Load()
	if l.watching.Load() && l.cached != nil && l.cachedAt == gen {
		return l.cached
	}
	u := l.dumpLocked()
	if _, failed := u.(netUnknown); !failed {
		l.cached, l.cachedAt = u, gen // events after gen was read invalidate it
	}
	return u
}

func (l *LiveNet) dumpLocked() NetUsage {
	if l.handle == nil {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return netUnknown{fmt.Errorf("open rtnetlink: %w", err)}
		}
		l.handle = h
	}
	var err error
	for range 3 { // a dump interrupted by a concurrent change is retried
		var u netUse
		if u, err = dumpNetUse(l.handle, manyLinks); err == nil {
			return u
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return netUnknown{err}
}

// netUse maps a netdev name to why the host uses it.
type netUse map[string]string

func (n netUse) HostUse(ifname string) string { return n[ifname] }

// netUnknown answers for a failed dump: every netdev is in use.
type netUnknown struct{ err error }

func (n netUnknown) HostUse(string) string {
	return "may be in use by the host (rtnetlink unreadable: " + n.err.Error() + ")"
}

// manyLinks: beyond this many interfaces in use, one link dump is cheaper
// than a lookup each.
const manyLinks = 32

func dumpNetUse(h *netlink.Handle, many int) (netUse, error) {
	why := map[int]string{} // by interface index
	err := h.RouteListFilteredIter(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE, func(r netlink.Route) bool {
		if r.Type != unix.RTN_UNICAST || !isDefault(r.Dst) {
			return true
		}
		if r.LinkIndex > 0 {
			why[r.LinkIndex] = "carries the default route"
		}
		for _, hop := range r.MultiPath {
			why[hop.LinkIndex] = "carries the default route"
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if a.IPNet == nil || a.IP.IsLinkLocalUnicast() {
			continue
		}
		if _, ok := why[a.LinkIndex]; !ok {
			why[a.LinkIndex] = "holds address " + a.IP.String()
		}
	}
	out := make(netUse, len(why))
	if len(why) > many {
		links, err := h.LinkList()
		if err != nil {
			return nil, fmt.Errorf("list links: %w", err)
		}
		for _, k := range links {
			if w, ok := why[k.Attrs().Index]; ok {
				out[k.Attrs().Name] = w
			}
		}
		return out, nil
	}
	for idx, w := range why {
		k, err := h.LinkByIndex(idx)
		var notFound netlink.LinkNotFoundError
		switch {
		case errors.As(err, &notFound):
			continue // gone since the dump: it uses nothing now
		case err != nil:
			return nil, fmt.Errorf("look up link %d: %w", idx, err)
		}
		out[k.Attrs().Name] = w
	}
	return out, nil
}

func isDefault(dst *net.IPNet) bool {
	if dst == nil {
		return true
	}
	ones, _ := dst.Mask.Size()
	return ones == 0
}

// Watch follows rtnetlink link, address and default-route events until ctx
// ends or the socket fails. While it runs, Current reuses its last dump
// until an event arrives. notify is called for each event with the netdev
// it names (events naming none only invalidate the cache), or with "" when
// events were lost (the receive queue overflowed) and anything may have
// changed.
func (l *LiveNet) Watch(ctx context.Context, notify func(ifname string)) error {
	s, err := nl.Subscribe(unix.NETLINK_ROUTE, unix.RTNLGRP_LINK, unix.RTNLGRP_IPV4_IFADDR, unix.RTNLGRP_IPV6_IFADDR,
		unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV6_ROUTE)
	if err != nil {
		return fmt.Errorf("subscribe to rtnetlink: %w", err)
	}
	l.gen.Add(1) // anything dumped before the subscription is unproven
	l.watching.Store(true)
	defer func() {
		l.watching.Store(false)
		l.gen.Add(1)
	}()
	go func() { <-ctx.Done(); s.Close() }()
	for {
		msgs, _, err := s.Receive()
		if errors.Is(err, unix.ENOBUFS) {
			l.gen.Add(1)
			notify("")
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("receive rtnetlink events: %w", err)
		}
		for _, m := range msgs {
			name, relevant := eventNetdev(m.Header.Type, m.Data)
			if !relevant {
				continue
			}
			l.gen.Add(1)
			if name != "" {
				notify(name)
			}
		}
	}
}

// eventNetdev says whether an rtnetlink message can change a netdev's host
// use or state and names the netdev ("" when it cannot be told).
func eventNetdev(typ uint16, data []byte) (string, bool) {
	switch typ {
	case unix.RTM_NEWLINK, unix.RTM_DELLINK:
		if len(data) < unix.SizeofIfInfomsg {
			return "", true
		}
		attrs, err := nl.ParseRouteAttr(data[unix.SizeofIfInfomsg:])
		if err != nil {
			return "", true
		}
		for _, a := range attrs {
			if a.Attr.Type == unix.IFLA_IFNAME {
				return string(trimNUL(a.Value)), true
			}
		}
		return "", true
	case unix.RTM_NEWADDR, unix.RTM_DELADDR:
		if len(data) < unix.SizeofIfAddrmsg {
			return "", true
		}
		return linkName(int(nl.DeserializeIfAddrmsg(data).Index)), true
	case unix.RTM_NEWROUTE, unix.RTM_DELROUTE:
		if len(data) < unix.SizeofRtMsg || nl.DeserializeRtMsg(data).Dst_len != 0 {
			return "", false // only default routes matter
		}
		attrs, err := nl.ParseRouteAttr(data[unix.SizeofRtMsg:])
		if err != nil {
			return "", true
		}
		for _, a := range attrs {
			if a.Attr.Type == unix.RTA_OIF && len(a.Value) >= 4 {
				return linkName(int(nl.NativeEndian().Uint32(a.Value))), true
			}
		}
		return "", true
	}
	return "", false
}

func linkName(index int) string {
	k, err := netlink.LinkByIndex(index)
	if err != nil {
		return ""
	}
	return k.Attrs().Name
}

func trimNUL(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return b
}
