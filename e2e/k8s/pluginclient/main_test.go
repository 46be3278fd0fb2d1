package pluginclient

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var (
	// pluginBin is the sriov-cdi binary under test; empty when skipReason
	// or buildErr is set.
	pluginBin string
	// skipReason is set when the product does not offer `sriov-cdi plugin`
	// yet: every test skips with it.
	skipReason string
	// buildErr is set when ./cmd/sriov-cdi exists but does not build: every
	// test fails with it.
	buildErr error
	// pluginHelp is the output of `sriov-cdi plugin --help`: optional flags
	// are passed only when the binary has them.
	pluginHelp string
	// repoRoot is the main module's directory.
	repoRoot string
	// snapshot is the real-kernel sysfs snapshot every test unpacks.
	snapshot string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "getwd:", err)
		return 1
	}
	// This package lives at <repo>/e2e/k8s/pluginclient.
	repoRoot = filepath.Clean(filepath.Join(wd, "..", "..", ".."))
	snapshot = filepath.Join(repoRoot, "sysfs", "sample", "nvme-sriov-acs.tar.gz")

	tmp, err := os.MkdirTemp("", "sriov-cdi-pluginclient-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkdir temp:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	findBinary(tmp)
	return m.Run()
}

// findBinary sets pluginBin, skipReason or buildErr.
func findBinary(tmp string) {
	if bin := os.Getenv("SRIOV_CDI_BIN"); bin != "" {
		pluginBin = bin
	} else {
		pkgDir := filepath.Join(repoRoot, "cmd", "sriov-cdi")
		gofiles, _ := filepath.Glob(filepath.Join(pkgDir, "*.go"))
		if len(gofiles) == 0 {
			skipReason = fmt.Sprintf("the product has no main package yet (%s has no Go files)", pkgDir)
			return
		}
		out := filepath.Join(tmp, "sriov-cdi")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/sriov-cdi")
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build ./cmd/sriov-cdi in %q: %w\n%s", repoRoot, err, b)
			return
		}
		pluginBin = out
	}
	// The plugin subcommand must exist: `sriov-cdi plugin --help` exits 0.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var outb bytes.Buffer
	cmd := exec.CommandContext(ctx, pluginBin, "plugin", "--help")
	cmd.Stdout, cmd.Stderr = &outb, &outb
	if err := cmd.Run(); err != nil {
		skipReason = fmt.Sprintf("`sriov-cdi plugin --help` failed (%v): the plugin subcommand does not exist yet; output: %s",
			err, strings.TrimSpace(outb.String()))
		pluginBin = ""
		return
	}
	pluginHelp = outb.String()
	if !strings.Contains(pluginHelp, "--device-plugin-dir") {
		skipReason = "`sriov-cdi plugin --help` does not mention --device-plugin-dir: the plugin subcommand is not implemented yet"
		pluginBin = ""
	}
}

// requirePlugin skips or fails the test when there is no plugin binary.
func requirePlugin(t *testing.T) {
	t.Helper()
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	if skipReason != "" {
		t.Skip(skipReason)
	}
}
