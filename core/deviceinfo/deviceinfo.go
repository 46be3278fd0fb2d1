// Package deviceinfo writes device-information files per the Kubernetes
// Network Plumbing Working Group's device-info specification (v1.1.0), so
// that Multus can hand SR-IOV CNI the PCI address of the VF a pod got. One
// file per allocated network VF, in DefaultDir, named
// "<resource with '/' as '-'>-<device ID>-device.json".
package deviceinfo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// DefaultDir is where Multus looks for device plugins' files.
const DefaultDir = "/var/run/k8s.cni.cncf.io/devinfo/dp"

// SpecVersion is the device-info specification version written.
const SpecVersion = "1.1.0"

// Types of device-info content written.
const (
	TypePCI       = "pci"
	TypeVhostUser = "vhost-user"
)

// Info is the file's content.
type Info struct {
	Type      string     `json:"type"`
	Version   string     `json:"version"`
	PCI       *PCI       `json:"pci,omitempty"`
	VhostUser *VhostUser `json:"vhost-user,omitempty"`
}

// VhostUser is the "vhost-user" member of Info (spec section 3.1.5).
type VhostUser struct {
	// Mode is "server" (the container creates the socket, the host
	// attaches) or "client" (the host creates it).
	Mode string `json:"mode"`
	// Path is the socket file.
	Path string `json:"path"`
}

// PCI is the "pci" member of Info.
type PCI struct {
	PCIAddress string `json:"pci-address"`
	// VhostNet is the vhost-net device path, set when the pod got it.
	VhostNet string `json:"vhost-net,omitempty"`
	// RDMADevice names the function's RDMA devices (comma-separated), set
	// when the pod got their nodes; rdma-cni moves them into the pod's
	// network namespace by this name.
	RDMADevice   string `json:"rdma-device,omitempty"`
	PFPCIAddress string `json:"pf-pci-address,omitempty"`
}

// Options says what the pool injects besides the function, as the SR-IOV
// network device plugin reports it for isRdma and needVhostNet.
type Options struct {
	RDMA, VhostNet bool
}

// For returns the file content for a unit, and false when the unit is not a
// network function (PCI class 02) and needs no file.
func For(u pool.Unit, o Options) (Info, bool) {
	if !strings.HasPrefix(u.Class, "02") {
		return Info{}, false
	}
	pci := &PCI{PCIAddress: string(u.ID), PFPCIAddress: string(u.PF)}
	if o.VhostNet {
		pci.VhostNet = "/dev/vhost-net"
	}
	if o.RDMA {
		names := make([]string, len(u.RDMA))
		for i, r := range u.RDMA {
			names[i] = r.Name
		}
		pci.RDMADevice = strings.Join(names, ",")
	}
	return Info{Type: TypePCI, Version: SpecVersion, PCI: pci}, true
}

// FileName is the spec's file name for a device of a resource.
func FileName(resource string, id sysfs.Address) string {
	return strings.ReplaceAll(resource, "/", "-") + "-" + string(id) + "-device.json"
}

// Writer writes and removes the files of one directory.
type Writer struct{ Dir string }

// Write writes the files of the units that are network functions,
// atomically (temporary file and rename).
func (w Writer) Write(resource string, units []pool.Unit, o Options) error {
	if err := os.MkdirAll(w.Dir, 0o755); err != nil {
		return fmt.Errorf("create device-info directory: %w", err)
	}
	for _, u := range units {
		info, ok := For(u, o)
		if !ok {
			continue
		}
		b, err := json.Marshal(info)
		if err != nil {
			return err
		}
		if err := writeFile(filepath.Join(w.Dir, FileName(resource, u.ID)), b, u.ID); err != nil {
			return err
		}
	}
	return nil
}

// WriteInfo writes one device's file with the given content, atomically;
// an identical file is left as it is.
func (w Writer) WriteInfo(resource string, id sysfs.Address, info Info) error {
	if err := os.MkdirAll(w.Dir, 0o755); err != nil {
		return fmt.Errorf("create device-info directory: %w", err)
	}
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	return writeFile(filepath.Join(w.Dir, FileName(resource, id)), b, id)
}

func writeFile(path string, b []byte, id sysfs.Address) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, b) {
		return nil // a device allocated again: same content, no write
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("write device-info file for %s: %w", id, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write device-info file for %s: %w", id, err)
	}
	return nil
}

// Remove deletes the files of the given devices (released ones).
func (w Writer) Remove(resource string, ids ...sysfs.Address) error {
	var errs []error
	for _, id := range ids {
		if err := os.Remove(filepath.Join(w.Dir, FileName(resource, id))); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove device-info file for %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

// Prune deletes, for every resource in keep, its files whose device is not
// in keep[resource] (a nil set removes all of that resource's files). The
// directory is listed once; files of resources not in keep (other device
// plugins share the directory) are not touched.
func (w Writer) Prune(keep map[string]map[sysfs.Address]bool) error {
	entries, err := os.ReadDir(w.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list device-info directory: %w", err)
	}
	stale := map[string][]sysfs.Address{}
	for _, e := range entries {
		for resource, ids := range keep {
			rest, ok := strings.CutPrefix(e.Name(), strings.ReplaceAll(resource, "/", "-")+"-")
			if !ok {
				continue
			}
			id, ok := strings.CutSuffix(rest, "-device.json")
			if !ok {
				continue
			}
			a, err := sysfs.ParseAddress(id)
			if _, slot := config.ParseVhostUserSlotID(id); slot {
				a, err = sysfs.Address(id), nil // a vhost-user slot
			}
			if err != nil {
				continue // a resource whose name extends this one's, or not ours
			}
			if !ids[a] {
				stale[resource] = append(stale[resource], a)
			}
		}
	}
	var errs []error
	for resource, ids := range stale {
		errs = append(errs, w.Remove(resource, ids...))
	}
	return errors.Join(errs...)
}
