package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	ucli "github.com/urfave/cli/v3"

	"github.com/sriov-cdi/sriov-cdi/core/binding"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
	"github.com/sriov-cdi/sriov-cdi/sysfs/sysfstest"
)

// The bind/unbind/restore commands run against sysfstest.Kernel, a fake of
// the kernel's PCI driver core (no real kernel runs in unit tests); the
// e2e lab runs the same commands on a real kernel.

const bindTestConfig = `
pools:
  - name: vf
    mode: vfio
    selectors: {rootDevices: ["0000:01:00.0"]}
  - name: vf-kernel
    mode: kernel
    selectors: {rootDevices: ["0000:02:00.0"]}
`

type bindEnv struct {
	dir, cfg, state string
	k               *sysfstest.Kernel
}

// newBindEnv: PF 01:00.0 with VFs 01:00.1-.2 (groups 4, 5; pool vf) and
// PF 02:00.0 with VFs 02:00.1-.2 (pool vf-kernel), all VFs on iavf.
func newBindEnv(t *testing.T) *bindEnv {
	t.Helper()
	dir := t.TempDir()
	if err := sysfstest.SRIOVNICHost(dir, 2, 2).Write(); err != nil {
		t.Fatal(err)
	}
	k, err := sysfstest.NewKernel(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(bindTestConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	return &bindEnv{dir: dir, cfg: cfg, state: filepath.Join(dir, "state.json"), k: k}
}

// run runs one command with the host flags pointing at the fixture.
func (e *bindEnv) run(args ...string) (string, error) {
	var out, errOut bytes.Buffer
	opts := []binding.Option{binding.WithWriter(e.k), binding.WithPollInterval(time.Millisecond), binding.WithFault("")}
	app := &ucli.Command{
		Name:           "sriov-cdi",
		Commands:       []*ucli.Command{bindCommandWith(opts...), unbindCommandWith(opts...), restoreCommandWith(opts...)},
		Writer:         &out,
		ErrWriter:      &errOut,
		ExitErrHandler: func(context.Context, *ucli.Command, error) {},
	}
	full := append([]string{"sriov-cdi", args[0],
		"--config", e.cfg, "--sysfs-root", filepath.Join(e.dir, "sys"), "--dev-root", filepath.Join(e.dir, "dev"),
		"--state-file", e.state, "--timeout", "2s"}, args[1:]...)
	err := app.Run(context.Background(), full)
	return out.String(), err
}

func (e *bindEnv) driver(t *testing.T, a sysfs.Address) string {
	t.Helper()
	s, err := sysfs.NewBinder(sysfs.Root{Sys: filepath.Join(e.dir, "sys"), Dev: filepath.Join(e.dir, "dev")}).Read(a)
	if err != nil {
		t.Fatal(err)
	}
	return s.Driver
}

func TestBindCommands(t *testing.T) {
	e := newBindEnv(t)
	steps := []struct {
		args    []string
		want    string
		drivers map[sysfs.Address]string
	}{{
		args:    []string{"bind", "--dry-run", "0000:01:00.2"},
		want:    "would change 0000:01:00.2 (pool vf, group 5, unit 0000:01:00.2): iavf -> vfio-pci (driver_override vfio-pci)\n",
		drivers: map[sysfs.Address]string{"0000:01:00.1": "iavf", "0000:01:00.2": "iavf"},
	}, {
		args: []string{"bind", "--all"},
		want: "changed 0000:01:00.1 (pool vf, group 4, unit 0000:01:00.1): iavf -> vfio-pci (driver_override vfio-pci)\n" +
			"changed 0000:01:00.2 (pool vf, group 5, unit 0000:01:00.2): iavf -> vfio-pci (driver_override vfio-pci)\n",
		drivers: map[sysfs.Address]string{"0000:01:00.1": "vfio-pci", "0000:01:00.2": "vfio-pci", "0000:02:00.1": "iavf"},
	}, {
		args:    []string{"bind", "0000:01:00.1"},
		want:    "nothing to change\n",
		drivers: map[sysfs.Address]string{"0000:01:00.1": "vfio-pci"},
	}, {
		args:    []string{"restore", "--dry-run", "--all"},
		want:    "would change 0000:01:00.1 (pool vf, group 4, unit 0000:01:00.1): vfio-pci (driver_override vfio-pci) -> iavf\nwould change 0000:01:00.2 (pool vf, group 5, unit 0000:01:00.2): vfio-pci (driver_override vfio-pci) -> iavf\n",
		drivers: map[sysfs.Address]string{"0000:01:00.1": "vfio-pci"},
	}, {
		args:    []string{"restore", "0000:01:00.2"},
		want:    "changed 0000:01:00.2 (pool vf, group 5, unit 0000:01:00.2): vfio-pci (driver_override vfio-pci) -> iavf\n",
		drivers: map[sysfs.Address]string{"0000:01:00.1": "vfio-pci", "0000:01:00.2": "iavf"},
	}, {
		args:    []string{"unbind", "0000:01:00.2"},
		want:    "changed 0000:01:00.2 (pool vf, group 5, unit 0000:01:00.2): iavf -> no driver\n",
		drivers: map[sysfs.Address]string{"0000:01:00.2": ""},
	}, {
		args:    []string{"restore", "--all"},
		want:    "changed 0000:01:00.1 (pool vf, group 4, unit 0000:01:00.1): vfio-pci (driver_override vfio-pci) -> iavf\nchanged 0000:01:00.2 (pool vf, group 5, unit 0000:01:00.2): no driver -> iavf\n",
		drivers: map[sysfs.Address]string{"0000:01:00.1": "iavf", "0000:01:00.2": "iavf"},
	}}
	for _, s := range steps {
		got, err := e.run(s.args...)
		if err != nil {
			t.Fatalf("%v: %v", s.args, err)
		}
		if diff := cmp.Diff(s.want, got); diff != "" {
			t.Errorf("%v output (-want +got)\n%s", s.args, diff)
		}
		gotDrivers := map[sysfs.Address]string{}
		for a := range s.drivers {
			gotDrivers[a] = e.driver(t, a)
		}
		if diff := cmp.Diff(s.drivers, gotDrivers); diff != "" {
			t.Errorf("%v drivers (-want +got)\n%s", s.args, diff)
		}
	}
}

func TestBindCommandErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bind"}, "name at least one PCI address"},
		{[]string{"bind", "--all", "0000:01:00.1"}, "not both"},
		{[]string{"bind", "01:00.1"}, `invalid PCI address "01:00.1"`},
		{[]string{"bind", "0000:09:00.0"}, "0000:09:00.0: no such PCI function on this host"},
		{[]string{"bind", "0000:01:00.0"}, "0000:01:00.0: not handed out by any pool: pool \"vf\" refuses it: PF with 2 VFs enabled"},
		{[]string{"bind", "0000:02:00.1"}, `pool "vf-kernel" is in "kernel" mode and never writes a driver attribute`},
		{[]string{"unbind", "0000:02:00.1"}, `pool "vf-kernel" is in "kernel" mode`},
		{[]string{"restore", "0000:01:00.1"}, "0000:01:00.1: not in state file"},
	} {
		e := newBindEnv(t)
		_, err := e.run(tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error containing %q", tc.args, err, tc.want)
		}
		if w := e.k.Writes(); len(w) != 0 {
			t.Errorf("%v: wrote %v", tc.args, w)
		}
	}
}

func TestBindNeedsConfig(t *testing.T) {
	e := newBindEnv(t)
	var out bytes.Buffer
	app := &ucli.Command{Name: "sriov-cdi", Commands: []*ucli.Command{bindCommandWith(binding.WithWriter(e.k))}, Writer: &out, ErrWriter: &out,
		ExitErrHandler: func(context.Context, *ucli.Command, error) {}}
	err := app.Run(context.Background(), []string{"sriov-cdi", "bind", "--sysfs-root", filepath.Join(e.dir, "sys"), "--state-file", e.state, "0000:01:00.1"})
	if err == nil || !strings.Contains(err.Error(), "--config is required") {
		t.Errorf("got %v", err)
	}
}

// TestBindCommandsSample: bind, unbind and restore plan on the bundled
// snapshot like discover does, and only as a dry run.
func TestBindCommandsSample(t *testing.T) {
	var all strings.Builder
	for _, args := range [][]string{
		{"bind", "--sample", "--dry-run", "--all"},
		{"unbind", "--sample", "--dry-run", "--all"},
		{"restore", "--sample", "--dry-run", "--all"},
	} {
		out, errOut, err := run(t, args...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, errOut)
		}
		fmt.Fprintf(&all, "$ sriov-cdi %s\n%s", strings.Join(args, " "), out)
	}
	golden(t, "bind-sample-dry-run.txt", all.String())
	for _, cmd := range []string{"bind", "unbind", "restore"} {
		_, _, err := run(t, cmd, "--sample", "--all")
		if err == nil || !strings.Contains(err.Error(), cmd+" --sample: only a dry run") {
			t.Errorf("%s --sample without --dry-run: err = %v", cmd, err)
		}
	}
}
