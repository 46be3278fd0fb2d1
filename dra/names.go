package dra

import (
	"fmt"
	"strings"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// devicePrefix starts every device name: a DRA device name is a DNS label
// (lower-case alphanumerics and '-', at most 63), which a PCI address is
// not.
const devicePrefix = "pci-"

// DeviceName is the DRA device name of the unit with ID id:
// "0000:3b:02.0" -> "pci-0000-3b-02-0". It is stable (the address) and
// reversible (ParseDeviceName).
func DeviceName(id sysfs.Address) string {
	r := strings.NewReplacer(":", "-", ".", "-")
	return devicePrefix + strings.ToLower(r.Replace(string(id)))
}

// ParseDeviceName returns the unit ID a device name stands for.
func ParseDeviceName(name string) (sysfs.Address, error) {
	rest, ok := strings.CutPrefix(name, devicePrefix)
	parts := strings.Split(rest, "-")
	if !ok || len(parts) != 4 {
		return "", fmt.Errorf("device name %q is not one of ours (want %s<domain>-<bus>-<device>-<function>, e.g. pci-0000-3b-02-0)", name, devicePrefix)
	}
	a, err := sysfs.ParseAddress(parts[0] + ":" + parts[1] + ":" + parts[2] + "." + parts[3])
	if err != nil {
		return "", fmt.Errorf("device name %q: %w", name, err)
	}
	return a, nil
}

// PoolDeviceName is the DRA device name of unit id of pool p: a vhost-user
// slot keeps its ID ("slot-3", already a DNS label), a PCI unit gets
// DeviceName.
func PoolDeviceName(p *pool.Pool, id sysfs.Address) string {
	if p.Mode == config.ModeVhostUser {
		return string(id)
	}
	return DeviceName(id)
}

// ParsePoolDeviceName returns the unit ID a device name of pool p stands
// for (the inverse of PoolDeviceName).
func ParsePoolDeviceName(p *pool.Pool, name string) (sysfs.Address, error) {
	if p.Mode != config.ModeVhostUser {
		return ParseDeviceName(name)
	}
	if _, ok := config.ParseVhostUserSlotID(name); !ok {
		return "", fmt.Errorf("device name %q is not a slot of vhost-user pool %q (want slot-<N>, e.g. slot-0)", name, p.Name)
	}
	return sysfs.Address(name), nil
}
