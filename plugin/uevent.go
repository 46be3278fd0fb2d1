package plugin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// relevantUevent reports whether a kernel uevent can change what a pool
// advertises: PCI functions appearing or going (sriov_numvfs), driver
// binds and unbinds, VFIO group nodes, netdev link changes, RDMA devices
// and their char devices (an RDMA driver on a function; a soft-RoCE link
// added or deleted, whose virtual path names no function). It returns the
// PCI function the event concerns ("" when the path names none: rescan
// everything) and a short description for logs.
func relevantUevent(msg []byte) (bool, sysfs.Address, string) {
	fields := bytes.Split(msg, []byte{0})
	if len(fields) == 0 {
		return false, "", ""
	}
	header := string(fields[0]) // "action@devpath"
	var subsystem, action string
	for _, f := range fields[1:] {
		switch {
		case bytes.HasPrefix(f, []byte("SUBSYSTEM=")):
			subsystem = string(f[len("SUBSYSTEM="):])
		case bytes.HasPrefix(f, []byte("ACTION=")):
			action = string(f[len("ACTION="):])
		}
	}
	switch subsystem {
	case "pci", "vfio", "vfio-dev", "net", "iommu", "infiniband", "infiniband_verbs", "infiniband_mad":
		_, devpath, _ := strings.Cut(header, "@")
		return true, lastPCIAddress(devpath), fmt.Sprintf("uevent %s %s (%s)", action, subsystem, header)
	}
	return false, "", ""
}

// lastPCIAddress returns the deepest path component that is a PCI
// function address: the function itself, or the one a netdev hangs off.
func lastPCIAddress(devpath string) sysfs.Address {
	parts := strings.Split(devpath, "/")
	for i := len(parts) - 1; i >= 0; i-- {
		if a, err := sysfs.ParseAddress(parts[i]); err == nil {
			return a
		}
	}
	return ""
}

// NetWatcher follows network changes (rtnetlink: links, addresses,
// default routes) until ctx ends, calling notify with the netdev each
// concerns, or with "" when events were lost. sysfs.LiveNet is one.
type NetWatcher interface {
	Watch(ctx context.Context, notify func(netdev string)) error
}

// ueventSource listens to kernel uevents (NETLINK_KOBJECT_UEVENT). It needs
// the host's network namespace (hostNetwork in a pod).
type ueventSource struct{ f *os.File }

func openUevents() (*ueventSource, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, fmt.Errorf("open uevent socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind uevent socket: %w", err)
	}
	// A non-blocking descriptor goes to Go's poller, so Close unblocks Read.
	return &ueventSource{f: os.NewFile(uintptr(fd), "uevent")}, nil
}

// run calls notify for each relevant uevent until ctx ends or the socket
// fails; addr is "" when everything should be rescanned.
func (u *ueventSource) run(ctx context.Context, notify func(reason string, addr sysfs.Address)) error {
	go func() { <-ctx.Done(); u.f.Close() }()
	buf := make([]byte, 64*1024)
	for {
		n, err := u.f.Read(buf)
		if errors.Is(err, unix.ENOBUFS) {
			notify("uevent queue overflowed", "")
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read uevents: %w", err)
		}
		if ok, addr, why := relevantUevent(buf[:n]); ok {
			notify(why, addr)
		}
	}
}
