package dra

import (
	"fmt"
	"strings"

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
