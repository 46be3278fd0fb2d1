package cli

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sriov-cdi/sriov-cdi/sysfs/sysfstest"
)

// TestConfigValidateWarnsDashInVariableNames: '-' is kept in PCIDEVICE_*
// and PCI_RESOURCE_* (as the SR-IOV device plugin and KubeVirt do), so
// such names cannot be read as $NAME in a shell; validate says so per pool.
func TestConfigValidateWarnsDashInVariableNames(t *testing.T) {
	f := writeFile(t, "c.yaml", `resourcePrefix: example.com
pools:
  - {name: vf-a, selectors: {vendors: ["8086"]}}
  - {name: vf_b, selectors: {vendors: ["15b3"]}}
`)
	out, errOut, err := run(t, "config", "validate", f)
	if err != nil {
		t.Fatalf("validate: %v\n%s", err, errOut)
	}
	want := f + `: warning: pools[0] ("vf-a"): the variables PCIDEVICE_EXAMPLE_COM_VF-A and PCI_RESOURCE_EXAMPLE_COM_VF-A contain '-', so a shell cannot read them as $NAME (use printenv NAME); a name and resourcePrefix without '-' avoid it` + "\n"
	if diff := cmp.Diff(want, errOut); diff != "" {
		t.Errorf("stderr (-want +got)\n%s", diff)
	}
	if !strings.Contains(out, "valid (sriov-cdi format, 2 pools)") {
		t.Errorf("stdout:\n%s", out)
	}
}

// TestVersionFlag: --version and -v print what the version command prints.
func TestVersionFlag(t *testing.T) {
	want, _, err := run(t, "version")
	if err != nil || !strings.HasPrefix(want, "sriov-cdi ") {
		t.Fatalf("version: %q, %v", want, err)
	}
	for _, flag := range []string{"--version", "-v"} {
		t.Run(flag, func(t *testing.T) {
			got, errOut, err := run(t, flag)
			if err != nil {
				t.Fatalf("%s: %v\n%s", flag, err, errOut)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("%s (-want +got)\n%s", flag, diff)
			}
		})
	}
}

// TestConfigValidateDecodeProblems: unknown fields and wrong types are
// reported all at once, each with pool (index and name), field path, line
// and a hint.
func TestConfigValidateDecodeProblems(t *testing.T) {
	f := writeFile(t, "c.yaml", `pools:
  - name: vf-a
    mode: vfio
    selectors:
      vendors: [8086]
      devices: ["154c"]
  - name: vf-b
    selector: {vendors: ["8086"]}
    restoreOnRelease: yes please
  - name: vf-c
    selectors:
      - {pfNames: [ens1f0], numaNodes: [zero]}
`)
	_, errOut, err := run(t, "config", "validate", f)
	if err == nil {
		t.Fatal("validate succeeded, want an error")
	}
	for _, want := range []string{
		`config "` + f + `" is invalid:`,
		`  - line 5: pools[0] ("vf-a").selectors[0].vendors[0]: got a number, want a string; quote IDs: "8086"`,
		`  - line 8: pools[1] ("vf-b"): unknown field "selector" (check spelling; see the config reference in README.md)`,
		`  - line 9: pools[1] ("vf-b").restoreOnRelease: got a string, want true or false`,
		`  - line 12: pools[2] ("vf-c").selectors[0].numaNodes[0]: got a string, want a number`,
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if strings.Index(errOut, "line 9:") < strings.Index(errOut, "line 8:") {
		t.Errorf("problems not in file order:\n%s", errOut)
	}
}

// TestConfigValidateCrossAPIOnHost: with --sysfs-root, a function that a
// deviceplugin pool and a dra pool both select makes the file invalid,
// naming the function and both pools.
func TestConfigValidateCrossAPIOnHost(t *testing.T) {
	root := t.TempDir()
	b := sysfstest.SRIOVNICHost(root, 1, 2)
	if err := b.Write(); err != nil {
		t.Fatal(err)
	}
	overlap := writeFile(t, "c.yaml", `resourcePrefix: example.com
pools:
  - {name: vfa, selectors: {rootDevices: ["0000:01:00.0"]}}
  - {name: vfb, api: dra, selectors: {pciAddresses: ["0000:01:00.2"]}}
`)
	_, errOut, err := run(t, "config", "validate", "--sysfs-root", b.Sys(), overlap)
	if err == nil {
		t.Fatal("validate succeeded, want the cross-API overlap refused")
	}
	want := `0000:01:00.2: matches pool "vfa" (api: deviceplugin) and pool "vfb" (api: dra); a device is never served by both APIs`
	if !strings.Contains(errOut, want) {
		t.Errorf("stderr lacks %q:\n%s", want, errOut)
	}
	// Without the host the file itself is valid.
	if _, errOut, err := run(t, "config", "validate", overlap); err != nil {
		t.Errorf("validate without host: %v\n%s", err, errOut)
	}
}
