package dra

import (
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

func TestDeviceName(t *testing.T) {
	tests := []struct {
		id   sysfs.Address
		want string
	}{
		{"0000:3b:02.0", "pci-0000-3b-02-0"},
		{"0000:af:1f.7", "pci-0000-af-1f-7"},
		{"10000:00:01.0", "pci-10000-00-01-0"}, // VMD domains have 5+ digits
	}
	for _, tc := range tests {
		got := DeviceName(tc.id)
		if got != tc.want {
			t.Errorf("DeviceName(%s) = %q, want %q", tc.id, got, tc.want)
		}
		if errs := validation.IsDNS1123Label(got); len(errs) > 0 {
			t.Errorf("DeviceName(%s) = %q is not a DNS label: %v", tc.id, got, errs)
		}
		back, err := ParseDeviceName(got)
		if err != nil || back != tc.id {
			t.Errorf("ParseDeviceName(%q) = %q, %v; want %q", got, back, err, tc.id)
		}
	}
}

func TestParseDeviceNameRefuses(t *testing.T) {
	for _, name := range []string{"gpu-0", "pci-0000-3b-02", "pci-0000-3b-zz-0", "0000-3b-02-0", ""} {
		if a, err := ParseDeviceName(name); err == nil {
			t.Errorf("ParseDeviceName(%q) = %q, want an error", name, a)
		}
	}
}

func TestPoolDeviceName(t *testing.T) {
	vhu := &pool.Pool{Name: "vhu", Mode: config.ModeVhostUser}
	vf := &pool.Pool{Name: "vf", Mode: config.ModeKernel}
	for _, tc := range []struct {
		p    *pool.Pool
		id   sysfs.Address
		want string
	}{
		{vhu, "slot-0", "slot-0"},
		{vhu, "slot-1023", "slot-1023"},
		{vf, "0000:3b:02.0", "pci-0000-3b-02-0"},
	} {
		got := PoolDeviceName(tc.p, tc.id)
		if got != tc.want {
			t.Errorf("PoolDeviceName(%s, %s) = %q, want %q", tc.p.Name, tc.id, got, tc.want)
		}
		if back, err := ParsePoolDeviceName(tc.p, got); err != nil || back != tc.id {
			t.Errorf("ParsePoolDeviceName(%s, %q) = %q, %v", tc.p.Name, got, back, err)
		}
	}
	for _, name := range []string{"pci-0000-3b-02-0", "slot-01", "slot-", "slot--1", "slot-x", "gpu-0"} {
		if a, err := ParsePoolDeviceName(vhu, name); err == nil {
			t.Errorf("ParsePoolDeviceName(vhu, %q) = %q, want an error", name, a)
		}
	}
	if a, err := ParsePoolDeviceName(vf, "slot-0"); err == nil {
		t.Errorf("ParsePoolDeviceName(vf, slot-0) = %q, want an error", a)
	}
}
