//go:build nodra

package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sriov-cdi/sriov-cdi/plugin"
)

// The device-plugin-only build (sriov-cdi-dp) refuses a config with DRA
// pools at start, naming them and the binary to run instead; a config
// without DRA pools starts nothing.
func TestNoDRABuildRefusesDRAPools(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(`pools:
  - {name: vf, selectors: {vendors: ["8086"]}}
  - {name: gpu, api: dra, mode: vfio, selectors: {vendors: ["10de"]}}
  - {name: nic, api: dra, mode: vfio, selectors: {vendors: ["15b3"]}}
`)
	_, err := startDRA(context.Background(), nil, &plugin.Options{ConfigPath: cfg}, nil, nil, nil)
	if err == nil {
		t.Fatal("startDRA accepted DRA pools in the nodra build")
	}
	for _, want := range []string{"gpu, nic", "run sriov-cdi", "sriov-cdi-dp"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "vf,") {
		t.Errorf("error %q names a device-plugin pool", err)
	}

	write(`pools:
  - {name: vf, selectors: {vendors: ["8086"]}}
`)
	stop, err := startDRA(context.Background(), nil, &plugin.Options{ConfigPath: cfg}, nil, nil, nil)
	if err != nil {
		t.Fatalf("device-plugin pools only: %v", err)
	}
	stop()
}
