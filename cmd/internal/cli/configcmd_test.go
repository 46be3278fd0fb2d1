package cli

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
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
