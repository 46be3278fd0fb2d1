package binding

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// countingWriter does real writes (sysfs.KernelWriter: plain files in a
// fixture tree, with no kernel to refuse a path outside it) and counts
// them.
type countingWriter struct{ n atomic.Int64 }

func (w *countingWriter) WriteAttr(path, value string) error {
	w.n.Add(1)
	return sysfs.KernelWriter{}.WriteAttr(path, value)
}

// A state file is data another process (or an attacker with write access
// to /var/lib/sriov-cdi) wrote: every record is validated on load, and a
// bad one refuses the whole file before anything is written (issue 11.8:
// an address like ../../victim made reconciliation write outside
// bus/pci/devices).
func TestMaliciousStateFileWritesNothing(t *testing.T) {
	const victim = "../../../../victim" // from sys/bus/pci/devices: <dir>/victim
	rec := func(f func(r *Record)) *Record {
		r := &Record{Address: "0000:01:00.1", Unit: "0000:01:00.1", Pool: "vf", Group: "4",
			Original: sysfs.State{Driver: "iavf"}, Target: sysfs.VFIODriver, Phase: PhaseChanging, Origin: OriginAllocate,
			Since: time.Date(2026, 11, 22, 1, 0, 0, 0, time.UTC)}
		f(r)
		return r
	}
	for _, tc := range []struct {
		name string
		data stateData
		want []string // in the error: file, record, field
	}{
		{"address traversal", stateData{Devices: []*Record{rec(func(r *Record) {
			r.Address, r.Original = victim, sysfs.State{Override: "pwned"}
		})}}, []string{`devices[0]`, `address`, `invalid PCI address`}},
		{"original driver traversal", stateData{Devices: []*Record{rec(func(r *Record) { r.Original.Driver = victim })}},
			[]string{`devices[0] ("0000:01:00.1")`, `original.driver`, `".."`}},
		{"original override traversal", stateData{Devices: []*Record{rec(func(r *Record) { r.Original.Override = "../x" })}},
			[]string{`devices[0] ("0000:01:00.1")`, `original.override`}},
		{"target with slash", stateData{Devices: []*Record{rec(func(r *Record) { r.Target = "vfio/pci" })}},
			[]string{`devices[0] ("0000:01:00.1")`, `target`, `"/"`}},
		{"dot-dot driver", stateData{Devices: []*Record{rec(func(r *Record) { r.Original.Driver = ".." })}},
			[]string{`original.driver`, `".."`}},
		{"unprintable driver", stateData{Devices: []*Record{rec(func(r *Record) { r.Original.Driver = "iavf\nbind" })}},
			[]string{`original.driver`, `printable`}},
		{"long driver", stateData{Devices: []*Record{rec(func(r *Record) { r.Original.Driver = strings.Repeat("a", 200) })}},
			[]string{`original.driver`, `long`}},
		{"unit", stateData{Devices: []*Record{rec(func(r *Record) { r.Unit = "../0000:01:00.1" })}},
			[]string{`devices[0] ("0000:01:00.1")`, `unit`}},
		{"upper-case address", stateData{Devices: []*Record{rec(func(r *Record) { r.Address, r.Unit = "0000:0A:00.1", "0000:0a:00.1" })}},
			[]string{`devices[0]`, `address`, `lower case`}},
		{"phase", stateData{Devices: []*Record{rec(func(r *Record) { r.Phase = "whatever" })}},
			[]string{`devices[0] ("0000:01:00.1")`, `phase`}},
		{"group", stateData{Devices: []*Record{rec(func(r *Record) { r.Group = "../4" })}},
			[]string{`devices[0] ("0000:01:00.1")`, `group`}},
		{"duplicate", stateData{Devices: []*Record{rec(func(*Record) {}), rec(func(*Record) {})}},
			[]string{`devices[1] ("0000:01:00.1")`, `also devices[0]`}},
		{"op device", stateData{Op: &Op{Kind: "bind", Devices: []sysfs.Address{victim}}, Devices: []*Record{rec(func(*Record) {})}},
			[]string{`op.devices[0]`, `invalid PCI address`}},
		{"op kind", stateData{Op: &Op{Kind: "../bind", Devices: []sysfs.Address{"0000:01:00.1"}}, Devices: []*Record{rec(func(*Record) {})}},
			[]string{`op.kind`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 2)
			vdir := filepath.Join(e.dir, "victim")
			if err := os.MkdirAll(vdir, 0o755); err != nil {
				t.Fatal(err)
			}
			sentinel := map[string]string{"driver_override": "(null)\n", "bind": "", "unbind": "", "uevent": "DRIVER=\n"}
			for n, c := range sentinel {
				if err := os.WriteFile(filepath.Join(vdir, n), []byte(c), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			tc.data.Version = stateVersion
			writeState(t, e.state, tc.data)
			before, _ := os.ReadFile(e.state)
			w := &countingWriter{}
			_, err := NewManager(e.root, e.state, zap.NewNop(), WithWriter(w), WithTimeout(100*time.Millisecond), WithPollInterval(time.Millisecond), WithFault(""))
			if err == nil {
				t.Error("the state file was accepted")
			} else {
				for _, s := range append([]string{e.state}, tc.want...) {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error does not say %q: %v", s, err)
					}
				}
			}
			if n := w.n.Load(); n != 0 {
				t.Errorf("%d sysfs writes", n)
			}
			for n, c := range sentinel {
				if b, _ := os.ReadFile(filepath.Join(vdir, n)); string(b) != c {
					t.Errorf("victim file %s outside the sysfs tree was written: %q", n, b)
				}
			}
			if after, _ := os.ReadFile(e.state); !bytes.Equal(before, after) {
				t.Errorf("state file rewritten:\n%s", after)
			}
			if d := e.drivers(vfAddrs[:2]...); d["0000:01:00.1"] != iavf || d["0000:01:00.2"] != iavf {
				t.Errorf("drivers changed: %v", d)
			}
		})
	}
}

// Records sriov-cdi itself writes pass the validation.
func TestValidStateFileLoads(t *testing.T) {
	e := newEnv(t, 2)
	writeState(t, e.state, stateData{Version: stateVersion, Op: &Op{Kind: "bind", Devices: []sysfs.Address{"0000:01:00.1"}},
		Devices: []*Record{{Address: "0000:01:00.1", Unit: "0000:01:00.1", Pool: "vf", Group: "4", Original: sysfs.State{Driver: "iavf"},
			Target: sysfs.VFIODriver, Phase: PhaseChanging, Origin: OriginAllocate}}})
	m := e.manager()
	if r := m.Records(); len(r) != 0 {
		t.Errorf("the interrupted bind was not rolled back: %+v", r)
	}
	for _, d := range []string{"vfio-pci", "iavf", "mlx5_core", "8139too", "virtio-pci", "qat_4xxx", "ixgbevf", "pci-stub", ""} {
		if err := checkDriverName(d); err != nil {
			t.Errorf("%q: %v", d, err)
		}
	}
}
