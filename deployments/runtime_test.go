package deployments

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/BurntSushi/toml"
)

// TestRuntimeSnippets parses the runtime configuration snippets as TOML
// and checks that each carries the settings deployments/runtime/README.md
// explains, with the paths the chart uses.
func TestRuntimeSnippets(t *testing.T) {
	const (
		cdiDir    = "/var/run/cdi"                                // chart hostPaths.cdi
		nriSocket = "/var/run/nri/nri.sock"                       // chart hostPaths.nri + nri.socketName
		podRes    = "/var/lib/kubelet/pod-resources/kubelet.sock" // kubelet's PodResources socket
	)
	read := func(name string) map[string]any {
		t.Helper()
		var m map[string]any
		if _, err := toml.DecodeFile(filepath.Join("runtime", name), &m); err != nil {
			t.Fatalf("runtime/%s: %v", name, err)
		}
		return m
	}
	// get walks nested tables.
	get := func(t *testing.T, file string, m map[string]any, path ...string) any {
		t.Helper()
		var cur any = m
		for _, k := range path {
			tbl, ok := cur.(map[string]any)
			if !ok {
				t.Fatalf("runtime/%s: %v: %q is not a table", file, path, k)
			}
			if cur, ok = tbl[k]; !ok {
				t.Fatalf("runtime/%s: %v is missing", file, path)
			}
		}
		return cur
	}
	strs := func(v any) []string {
		var out []string
		if l, ok := v.([]any); ok {
			for _, e := range l {
				if s, ok := e.(string); ok {
					out = append(out, s)
				}
			}
		}
		return out
	}

	t.Run("containerd", func(t *testing.T) {
		f := "containerd.toml"
		m := read(f)
		rt := []string{"plugins", "io.containerd.cri.v1.runtime"}
		if v := get(t, f, m, "version"); v != int64(3) {
			t.Errorf("version = %v, want 3 (containerd 2.0-2.3; 2.4 migrates it)", v)
		}
		if dirs := strs(get(t, f, m, append(rt, "cdi_spec_dirs")...)); !slices.Contains(dirs, cdiDir) {
			t.Errorf("cdi_spec_dirs %v lacks %s", dirs, cdiDir)
		}
		kata := append(rt, "containerd", "runtimes", "kata")
		if ann := strs(get(t, f, m, append(kata, "pod_annotations")...)); !slices.Contains(ann, "cdi.k8s.io/*") {
			t.Errorf("kata pod_annotations %v lacks cdi.k8s.io/*", ann)
		}
		if v := get(t, f, m, append(kata, "runtime_type")...); v != "io.containerd.kata.v2" {
			t.Errorf("kata runtime_type = %v", v)
		}
		nri := []string{"plugins", "io.containerd.nri.v1.nri"}
		if v := get(t, f, m, append(nri, "disable")...); v != false {
			t.Errorf("nri disable = %v, want false", v)
		}
		if v := get(t, f, m, append(nri, "socket_path")...); v != nriSocket {
			t.Errorf("nri socket_path = %v, want %s", v, nriSocket)
		}
	})
	t.Run("crio", func(t *testing.T) {
		f := "crio.conf"
		m := read(f)
		if dirs := strs(get(t, f, m, "crio", "runtime", "cdi_spec_dirs")); !slices.Contains(dirs, cdiDir) {
			t.Errorf("cdi_spec_dirs %v lacks %s", dirs, cdiDir)
		}
		if v := get(t, f, m, "crio", "runtime", "runtimes", "kata", "runtime_type"); v != "vm" {
			t.Errorf("kata runtime_type = %v, want vm", v)
		}
		if v := get(t, f, m, "crio", "nri", "enable_nri"); v != true {
			t.Errorf("enable_nri = %v", v)
		}
		if v := get(t, f, m, "crio", "nri", "nri_listen"); v != nriSocket {
			t.Errorf("nri_listen = %v, want %s", v, nriSocket)
		}
	})
	t.Run("kata", func(t *testing.T) {
		f := "kata.toml"
		m := read(f)
		for _, c := range []struct {
			path []string
			want any
		}{
			{[]string{"hypervisor", "qemu", "cold_plug_vfio"}, "root-port"},
			{[]string{"hypervisor", "qemu", "hot_plug_vfio"}, "no-port"},
			{[]string{"runtime", "pod_resource_api_sock"}, podRes},
			{[]string{"runtime", "vfio_mode"}, "guest-kernel"},
		} {
			if v := get(t, f, m, c.path...); v != c.want {
				t.Errorf("%v = %v, want %v", c.path, v, c.want)
			}
		}
		if n, ok := get(t, f, m, "hypervisor", "qemu", "pcie_root_port").(int64); !ok || n < 1 {
			t.Errorf("pcie_root_port must be a positive number (one port per device)")
		}
	})
}
