package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"
)

func TestNRIBadIndex(t *testing.T) {
	_, _, err := run(t, "nri", "--plugin-index", "7")
	if err == nil || !strings.Contains(err.Error(), `--plugin-index "7": use two digits`) {
		t.Errorf("error = %v", err)
	}
}

// TestNRICommandServesRuntime runs `sriov-cdi nri` against the NRI runtime
// side in-process: the flags reach the plugin, which registers on the given
// socket and removes a pod-carried CDI annotation from a container.
func TestNRICommandServesRuntime(t *testing.T) {
	dir, err := os.MkdirTemp("", "nri-") // short: Unix socket path limit
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "nri.sock")
	rt, err := adaptation.New("test-runtime", "2.4.2",
		func(ctx context.Context, cb adaptation.SyncCB) error { _, err := cb(ctx, nil, nil); return err },
		func(context.Context, []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) { return nil, nil },
		adaptation.WithPluginPath(filepath.Join(dir, "plugins")), adaptation.WithPluginConfigPath(filepath.Join(dir, "conf.d")),
		adaptation.WithSocketPath(sock))
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(); err != nil {
		t.Fatal(err)
	}
	defer rt.Stop()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	app := NewApp()
	var out, errOut bytes.Buffer
	app.Writer, app.ErrWriter = &out, &errOut
	done := make(chan error, 1)
	go func() {
		done <- app.Run(ctx, []string{"sriov-cdi", "nri", "--socket", sock, "--plugin-index", "42", "--plugin-name", "cdi-once",
			"--cdi-spec-dirs", filepath.Join(dir, "cdi"), "--retry-interval", "20ms", "--log-level", "error"})
	}()

	ann := map[string]string{"cdi.k8s.io/x": "sriov-cdi.io/vf=0000:3b:02.0"}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := rt.CreateContainer(context.Background(), &api.CreateContainerRequest{
			Pod:       &api.PodSandbox{Id: "p", Annotations: ann},
			Container: &api.Container{Id: "c", PodSandboxId: "p", Annotations: map[string]string{"cdi.k8s.io/x": ann["cdi.k8s.io/x"]}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := resp.GetAdjust().GetAnnotations()["-cdi.k8s.io/x"]; ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the plugin never answered; stderr:\n%s", errOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("nri command: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nri command did not stop on cancel")
	}
}
