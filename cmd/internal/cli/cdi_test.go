package cli

import (
	"github.com/sriov-cdi/sriov-cdi/sysfs/sample"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCDIGenerateSampleStdout(t *testing.T) {
	out, errOut, err := run(t, "cdi", "generate", "--sample", "--output", "-")
	if err != nil {
		t.Fatalf("cdi generate: %v\n%s", err, errOut)
	}
	golden(t, "cdi-generate-sample.yaml", out)
}

func TestCDIGenerateDirThenValidate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cdi")
	out, errOut, err := run(t, "cdi", "generate", "--sample", "-o", dir)
	if err != nil {
		t.Fatalf("cdi generate: %v\n%s", err, errOut)
	}
	files := []string{filepath.Join(dir, "sriov-cdi_sriov-cdi.io_nvme-vf.json"), filepath.Join(dir, "sriov-cdi_sriov-cdi.io_nvme-vf-kernel.json")}
	want := files[0] + ": kind sriov-cdi.io/nvme-vf, 4 devices, cdiVersion 0.5.0\n" +
		files[1] + ": kind sriov-cdi.io/nvme-vf-kernel, 2 devices, cdiVersion 0.5.0\n"
	if diff := cmp.Diff(want, out); diff != "" {
		t.Errorf("first generate (-want +got):\n%s", diff)
	}
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: mode %v, want 0644", f, fi.Mode().Perm())
		}
	}
	out, _, err = run(t, "cdi", "generate", "--sample", "-o", dir)
	if err != nil || !strings.HasSuffix(out, "no change: the files already held these specs\n") {
		t.Errorf("second generate: %v\n%s", err, out)
	}
	out, _, err = run(t, append([]string{"cdi", "validate"}, files...)...)
	if err != nil {
		t.Fatalf("cdi validate of generated specs: %v\n%s", err, out)
	}
	want = files[0] + ": ok: kind sriov-cdi.io/nvme-vf, 4 devices, cdiVersion 0.5.0\n" +
		files[1] + ": ok: kind sriov-cdi.io/nvme-vf-kernel, 2 devices, cdiVersion 0.5.0\n"
	if diff := cmp.Diff(want, out); diff != "" {
		t.Errorf("validate (-want +got):\n%s", diff)
	}
}

func TestCDIGenerateNeedsPools(t *testing.T) {
	_, _, err := run(t, "cdi", "generate", "--sysfs-root", t.TempDir(), "-o", "-")
	if err == nil || !strings.Contains(err.Error(), "give --config FILE (or --sample)") {
		t.Errorf("error = %v", err)
	}
}

func TestCDIValidate(t *testing.T) {
	const dev = "devices:\n- name: \"0000:3b:02.0\"\n  containerEdits:\n    env: [A=1]\n"
	good := writeFile(t, "good.yaml", "cdiVersion: 0.5.0\nkind: sriov-cdi.io/vf\n"+dev)
	dup := writeFile(t, "dup.yaml", "cdiVersion: 0.5.0\nkind: sriov-cdi.io/vf\n"+dev)
	old := writeFile(t, "old.yaml", "cdiVersion: 0.4.0\nkind: sriov-cdi.io/old\n"+dev)
	typo := writeFile(t, "typo.yaml", "cdiVersion: 0.5.0\nkind: sriov-cdi.io/typo\ndevice:\n- name: x\n")
	newer := writeFile(t, "newer.yaml", "cdiVersion: 1.0.0\nkind: sriov-cdi.io/newer\n"+dev)
	if err := os.Chmod(newer, 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, err := run(t, "cdi", "validate", good, dup, old, typo, newer, filepath.Join(t.TempDir(), "missing.yaml"))
	if err == nil || err.Error() != "4 of 6 spec files invalid" {
		t.Errorf("error = %v, want 4 of 6 invalid", err)
	}
	for _, want := range []string{
		good + ": ok: kind sriov-cdi.io/vf, 1 devices, cdiVersion 0.5.0\n",
		dup + `: INVALID: device "sriov-cdi.io/vf=0000:3b:02.0" is also defined in ` + good,
		old + ": INVALID: ",
		"the spec version must be at least v0.5.0",
		typo + ": INVALID: ",
		"field device not found",
		newer + ": ok: kind sriov-cdi.io/newer",
		newer + ": note: cdiVersion 1.0.0 is newer than the content needs (0.5.0)",
		newer + ": note: mode -rw-------: runtimes not running as root cannot read it",
		"missing.yaml: INVALID: ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if _, _, err := run(t, "cdi", "validate"); err == nil {
		t.Error("validate without files: no error")
	}
}

func TestCDIGenerateIOMMUFD(t *testing.T) {
	// The sample's 0000:01:00.2 is bound to vfio-pci and shows vfio-dev/vfio0
	// in sysfs, but 6.1 has no iommufd node: give the tree one, as a 6.6+
	// kernel would.
	root, err := sample.Extract(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root.Dev, "vfio", "devices"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root.Dev, "vfio", "devices", "vfio0"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeFile(t, "c.yaml", "pools: [{name: vf, mode: vfio, iommufd: true, selectors: {pciAddresses: ['0000:01:00.2']}}, {name: plain, mode: vfio, selectors: {pciAddresses: ['0000:01:00.1']}}]")
	args := []string{"cdi", "generate", "--config", cfg, "--sysfs-root", root.Sys, "--dev-root", root.Dev, "-o", "-"}
	with, _, err := run(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	without, _, err := run(t, append(args, "--no-iommufd")...)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(with, "/dev/vfio/devices/vfio0") || !strings.Contains(with, "/dev/iommu") {
		t.Errorf("iommufd: true output lacks the iommufd nodes:\n%s", with)
	}
	if strings.Count(with, "- path: /dev/vfio/devices/") != 1 {
		t.Errorf("a pool without iommufd got iommufd nodes:\n%s", with)
	}
	if strings.Contains(without, "/dev/vfio/devices/") || strings.Contains(without, "/dev/iommu") || !strings.Contains(without, "/dev/vfio/8") {
		t.Errorf("--no-iommufd output:\n%s", without)
	}
}

// TestCDIGenerateSampleDefaultsToStdout: sample specs describe another
// host; without -o they go to stdout, never into the real /var/run/cdi.
func TestCDIGenerateSampleDefaultsToStdout(t *testing.T) {
	out, errOut, err := run(t, "cdi", "generate", "--sample")
	if err != nil {
		t.Fatalf("cdi generate --sample: %v\n%s", err, errOut)
	}
	golden(t, "cdi-generate-sample.yaml", out)
}
