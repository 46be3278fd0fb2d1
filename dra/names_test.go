package dra

import (
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"

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
