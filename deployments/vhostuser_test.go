package deployments

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestChartMountsVhostUserBaseDirs: the base directory of every vhost-user
// pool in `config`, and those listed in hostPaths.vhostUser, are mounted
// into the plugin at the same path (each once); a chart without them
// mounts none.
func TestChartMountsVhostUserBaseDirs(t *testing.T) {
	helm := helmBinary(t)
	f := filepath.Join(t.TempDir(), "values.yaml")
	values := `
hostPaths:
  vhostUser: [/var/run/extra-vhu, /run/vhu]
config:
  pools:
    - {name: vhu, mode: vhost-user, vhostUser: {count: 4, baseDir: /run/vhu}}
    - {name: vhu2, mode: vhost-user, vhostUser: {count: 1, baseDir: /run/vhu2}}
    - {name: vf, selectors: {vendors: ["8086"]}}
`
	if err := os.WriteFile(f, []byte(values), 0o644); err != nil {
		t.Fatal(err)
	}
	mounts := func(args ...string) map[string]string {
		out := runHelm(t, helm, append([]string{"template", releaseName, chartDir, "--kube-version", kubeVersion}, args...)...)
		got := map[string]string{} // mount path -> host path
		for _, doc := range strings.Split(string(out), "\n---") {
			var ds struct {
				Kind string
				Spec struct {
					Template struct {
						Spec struct {
							Containers []struct {
								Name         string
								VolumeMounts []struct{ Name, MountPath string } `json:"volumeMounts"`
							}
							Volumes []struct {
								Name     string
								HostPath *struct{ Path string } `json:"hostPath"`
							}
						}
					}
				}
			}
			if err := yaml.Unmarshal([]byte(doc), &ds); err != nil || ds.Kind != "DaemonSet" {
				continue
			}
			host := map[string]string{}
			for _, v := range ds.Spec.Template.Spec.Volumes {
				if v.HostPath != nil {
					host[v.Name] = v.HostPath.Path
				}
			}
			for _, c := range ds.Spec.Template.Spec.Containers {
				for _, m := range c.VolumeMounts {
					if strings.HasPrefix(m.Name, "vhost-user-") {
						got[m.MountPath] = host[m.Name]
					}
				}
			}
		}
		return got
	}
	want := map[string]string{"/var/run/extra-vhu": "/var/run/extra-vhu", "/run/vhu": "/run/vhu", "/run/vhu2": "/run/vhu2"}
	got := mounts("-f", f)
	if len(got) != len(want) {
		t.Errorf("vhost-user mounts %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("mount %s from host %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	if got := mounts(); len(got) != 0 {
		t.Errorf("default chart mounts %v, want no vhost-user directories", got)
	}
}
