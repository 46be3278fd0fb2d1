package cli

import (
	"bytes"
	"context"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"
	"github.com/google/go-cmp/cmp"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/sriov-cdi/sriov-cdi/cdi"
)

func TestNRIBadIndex(t *testing.T) {
	_, _, err := run(t, "nri", "--plugin-index", "7")
	if err == nil || !strings.Contains(err.Error(), `--plugin-index "7": use two digits`) {
		t.Errorf("error = %v", err)
	}
}

// TestNRICommandServesRuntime runs `sriov-cdi nri` against the NRI runtime
// side in-process: the flags reach the plugin, which registers on the given
// socket and removes pod-carried CDI annotations from a container: ours (a
// spec of ours is in --cdi-spec-dirs) by default, every vendor's with
// --all-vendors or its environment variable.
func TestNRICommandServesRuntime(t *testing.T) {
	const (
		ours    = "sriov-cdi.io/vf=0000:3b:02.0"
		foreign = "nvidia.com/gpu=0"
	)
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want map[string]string // the adjustment's annotations
	}{
		{"default: ours only", nil, nil, map[string]string{"-cdi.k8s.io/x": ""}},
		{"--all-vendors", []string{"--all-vendors"}, nil, map[string]string{"-cdi.k8s.io/x": "", "-cdi.k8s.io/gpu": ""}},
		{"SRIOV_CDI_NRI_ALL_VENDORS", nil, map[string]string{"SRIOV_CDI_NRI_ALL_VENDORS": "true"}, map[string]string{"-cdi.k8s.io/x": "", "-cdi.k8s.io/gpu": ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			dir, err := os.MkdirTemp("", "nri-") // short: Unix socket path limit
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			w, err := cdi.NewWriter(filepath.Join(dir, "cdi"), nil)
			if err != nil {
				t.Fatal(err)
			}
			spec := &cdispec.Spec{Version: "0.5.0", Kind: "sriov-cdi.io/vf", Devices: []cdispec.Device{
				{Name: "0000:3b:02.0", ContainerEdits: cdispec.ContainerEdits{Env: []string{"PCIDEVICE_X=0000:3b:02.0"}}}}}
			if _, err := w.Sync([]*cdispec.Spec{spec}); err != nil {
				t.Fatal(err)
			}
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
				done <- app.Run(ctx, append([]string{"sriov-cdi", "nri", "--socket", sock, "--plugin-index", "42", "--plugin-name", "cdi-once",
					"--cdi-spec-dirs", filepath.Join(dir, "cdi"), "--retry-interval", "20ms", "--log-level", "error"}, tt.args...))
			}()

			ann := map[string]string{"cdi.k8s.io/x": ours, "cdi.k8s.io/gpu": foreign}
			var got map[string]string
			deadline := time.Now().Add(10 * time.Second)
			for {
				resp, err := rt.CreateContainer(context.Background(), &api.CreateContainerRequest{
					Pod:       &api.PodSandbox{Id: "p", Annotations: ann},
					Container: &api.Container{Id: "c", PodSandboxId: "p", Annotations: maps.Clone(ann)},
				})
				if err != nil {
					t.Fatal(err)
				}
				if got = resp.GetAdjust().GetAnnotations(); len(got) > 0 {
					break
				}
				select {
				case err := <-done:
					t.Fatalf("nri command ended: %v; stderr:\n%s", err, errOut.String())
				default:
				}
				if time.Now().After(deadline) {
					t.Fatalf("the plugin never answered; stderr:\n%s", errOut.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("adjusted annotations (-want +got):\n%s", diff)
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
		})
	}
}
