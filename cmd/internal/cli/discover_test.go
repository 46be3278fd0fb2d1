package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sriov-cdi/sriov-cdi/sysfs/sysfstest"
)

var update = flag.Bool("update", false, "rewrite golden files")

// run executes the CLI in-process and returns stdout, stderr and the error.
func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	app := NewApp()
	var out, errOut bytes.Buffer
	app.Writer, app.ErrWriter = &out, &errOut
	err := app.Run(context.Background(), append([]string{"sriov-cdi"}, args...))
	return out.String(), errOut.String(), err
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s (-want +got)\n%s", name, diff)
	}
}

func TestDiscoverSampleTable(t *testing.T) {
	t.Setenv("PCIDB_PATH", filepath.Join(t.TempDir(), "none")) // names must not depend on the host
	out, _, err := run(t, "discover", "--sample")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "discover-sample.txt", out)
}

func TestDiscoverSampleJSON(t *testing.T) {
	out, _, err := run(t, "discover", "--sample", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Devices []struct {
			Address    string `json:"address"`
			IOMMUGroup string `json:"iommuGroup"`
		} `json:"devices"`
		Pools []struct {
			Resource string `json:"resource"`
			Devices  []struct {
				ID      string   `json:"id"`
				Members []string `json:"members"`
			} `json:"devices"`
		} `json:"pools"`
		Unselected []struct{ Address, Reason string } `json:"unselected"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Devices) != 15 || len(rep.Pools) != 2 || rep.Pools[0].Resource != "sriov-cdi.io/nvme-vf" || len(rep.Pools[0].Devices) != 4 {
		t.Errorf("unexpected report: %+v", rep)
	}
}

func TestDiscoverWithoutConfigListsFunctions(t *testing.T) {
	out, _, err := run(t, "discover", "--sample", "--config", writeFile(t, "c.yaml", "pools: [{name: x, selectors: {vendors: ['1af4']}}]"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "sriov-cdi.io/x  kernel  0000:00:03.0") {
		t.Errorf("custom config not applied:\n%s", out)
	}
}

func TestDiscoverBadRoot(t *testing.T) {
	_, _, err := run(t, "discover", "--sysfs-root", filepath.Join(t.TempDir(), "nope"))
	if err == nil || !strings.Contains(err.Error(), "is the sysfs root right?") {
		t.Fatalf("err = %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	good := writeFile(t, "good.yaml", "pools: [{name: a, mode: vfio, selectors: {vendors: ['8086']}}]")
	bad := writeFile(t, "bad.yaml", "pools: [{name: a, mode: passthrough, selectors: {vendors: ['8086']}}]")
	out, _, err := run(t, "config", "validate", good)
	if err != nil || !strings.Contains(out, "valid (sriov-cdi format, 1 pools)") {
		t.Errorf("good: %q, %v", out, err)
	}
	_, errOut, err := run(t, "config", "validate", good, bad)
	if err == nil || !strings.Contains(err.Error(), "1 of 2 config files are invalid") {
		t.Errorf("bad: err = %v", err)
	}
	if !strings.Contains(errOut, bad) || !strings.Contains(errOut, `pools[0] ("a").mode: "passthrough" is not a mode`) {
		t.Errorf("bad: stderr lacks file/pool/field:\n%s", errOut)
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDiscoverKeepsBoundUnitsInTheirPool: discover plans like the plugin —
// a function the plugin bound to vfio-pci (recorded in the state file)
// stays in the pool whose drivers: selector matched it before binding.
func TestDiscoverKeepsBoundUnitsInTheirPool(t *testing.T) {
	dir := t.TempDir()
	b := sysfstest.SRIOVNICHost(dir, 1, 2)
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	if err := sysfstest.SetDriver(dir, "0000:01:00.1", "vfio-pci"); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "pools.yaml")
	if err := os.WriteFile(cfg, []byte("pools: [{name: vf, mode: vfio, allowUnbindFrom: [iavf], selectors: {drivers: [iavf]}}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state.json")
	if err := os.WriteFile(state, []byte(`{"version":1,"devices":[{"address":"0000:01:00.1","unit":"0000:01:00.1","pool":"vf","group":"4","original":{"driver":"iavf"},"target":"vfio-pci","phase":"done","origin":"allocate","since":"2026-12-02T10:00:00Z"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	units := func(extra ...string) []string {
		t.Helper()
		out, _, err := run(t, append([]string{"discover", "-o", "json", "--config", cfg, "--sysfs-root", b.Sys(), "--dev-root", b.Dev()}, extra...)...)
		if err != nil {
			t.Fatal(err)
		}
		var rep struct {
			Pools []struct {
				Devices []struct{ ID string }
			}
		}
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, d := range rep.Pools[0].Devices {
			ids = append(ids, d.ID)
		}
		return ids
	}
	if diff := cmp.Diff([]string{"0000:01:00.2"}, units("--state-file", filepath.Join(dir, "none.json"))); diff != "" {
		t.Errorf("without records (-want +got)\n%s", diff)
	}
	if diff := cmp.Diff([]string{"0000:01:00.1", "0000:01:00.2"}, units("--state-file", state)); diff != "" {
		t.Errorf("with the plugin's record (-want +got)\n%s", diff)
	}
}

// discover shows a vhost-user pool's slots with their directories, and
// says when the base directory is missing.
func TestDiscoverVhostUserSlots(t *testing.T) {
	base := filepath.Join(t.TempDir(), "vhu")
	cfg := writeFile(t, "c.yaml", "pools: [{name: vhu, mode: vhost-user, vhostUser: {count: 2, baseDir: "+base+", numaNode: 0}}]")
	out, _, err := run(t, "discover", "--sample", "--config", cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"sriov-cdi.io/vhu  vhost-user  slot-0", "sriov-cdi.io/vhu  vhost-user  slot-1",
		"sriov-cdi.io/vhu  slot-1  " + base + "/sriov-cdi.vhu.slot-1  /var/run/vhost-user/slot-1/vhost.sock  server",
		"WARNING: sriov-cdi.io/vhu: vhost-user base directory unusable: \"" + base + `" does not exist`,
	} {
		if !strings.Contains(strings.Join(strings.Fields(out), " "), strings.Join(strings.Fields(want), " ")) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "vhost-user  slot-2") {
		t.Errorf("more slots than count:\n%s", out)
	}
}
