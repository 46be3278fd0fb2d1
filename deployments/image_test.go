package deployments

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestImageBuild runs the daemonless image builder (deployments/imagebuild,
// what `make image` runs) twice and checks that both archives are byte for
// byte the same (so the image digest is), that the archive is an OCI image
// layout naming the image for containerd, and that the one layer holds
// exactly the expected files with the expected modes and owners.
func TestImageBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the image twice (-short)")
	}
	dir := t.TempDir()
	// A pci.ids of our own: the test needs no Debian package (`make image` does).
	pciIDs := filepath.Join(dir, "pci.ids")
	if err := os.WriteFile(pciIDs, []byte("# test\n8086  Intel Corporation\n\t154c  Ethernet Virtual Function 700 Series\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Build from a snapshot of HEAD: the same inputs both times even while
	// the working tree changes.
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	archive := exec.Command("sh", "-c", `git -C .. archive --format=tar HEAD | tar -xf - -C "$0"`, src)
	if b, err := archive.CombinedOutput(); err != nil {
		t.Skipf("no git snapshot of HEAD (%v: %s); `make image` reproducibility is checked from a git checkout", err, b)
	}
	const ref = "example.com/sriov-cdi:test"
	build := func(out string) string {
		cmd := exec.Command("go", "-C", filepath.Join(src, "deployments/imagebuild"), "run", ".", "-repo", src, "-out", out,
			"-image", ref, "-version", "v0.0.0-test", "-source-date-epoch", "1700000000", "-pci-ids", pciIDs)
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("imagebuild: %v\n%s", err, b)
		}
		return string(b)
	}
	a, b := filepath.Join(dir, "a.tar"), filepath.Join(dir, "b.tar")
	t.Log(build(a))
	t.Log(build(b))
	da, db := fileDigest(t, a), fileDigest(t, b)
	la, lb := readLayout(t, a), readLayout(t, b)
	if la.manifestDigest != lb.manifestDigest || da != db {
		t.Errorf("two builds differ: manifests %s and %s, archives %s and %s", la.manifestDigest, lb.manifestDigest, da, db)
		for name, ha := range la.files {
			if hb := lb.files[name]; hb != ha {
				t.Errorf("layer file %s: %s vs %s", name, ha, hb)
			}
		}
	}

	if la.imageName != ref {
		t.Errorf("index.json io.containerd.image.name = %q, want %q", la.imageName, ref)
	}
	cfg := la.config
	if cfg.OS != "linux" || cfg.Architecture == "" {
		t.Errorf("platform %s/%s", cfg.OS, cfg.Architecture)
	}
	if diff := cmp.Diff([]string{"/usr/bin/sriov-cdi"}, cfg.Config.Entrypoint); diff != "" {
		t.Errorf("entrypoint (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"plugin"}, cfg.Config.Cmd); diff != "" {
		t.Errorf("cmd (-want +got):\n%s", diff)
	}
	for k, want := range map[string]string{
		"org.opencontainers.image.version": "v0.0.0-test",
		"org.opencontainers.image.source":  "https://github.com/sriov-cdi/sriov-cdi",
		"org.opencontainers.image.created": "2023-11-14T22:13:20Z",
		"org.opencontainers.image.title":   "sriov-cdi",
	} {
		if got := cfg.Config.Labels[k]; got != want {
			t.Errorf("label %s = %q, want %q", k, got, want)
		}
	}

	wantEntries := []string{
		"etc/ d 0755 0:0",
		"etc/group - 0644 0:0",
		"etc/passwd - 0644 0:0",
		"home/ d 0755 0:0",
		"home/nonroot/ d 0700 65532:65532",
		"tmp/ d 1777 0:0",
		"usr/ d 0755 0:0",
		"usr/bin/ d 0755 0:0",
		"usr/bin/sriov-cdi - 0755 0:0",
		"usr/bin/sriov-cdi-dp - 0755 0:0",
		"usr/share/ d 0755 0:0",
		"usr/share/misc/ d 0755 0:0",
		"usr/share/misc/pci.ids - 0644 0:0",
	}
	if diff := cmp.Diff(wantEntries, la.entries); diff != "" {
		t.Errorf("layer entries (-want +got):\n%s", diff)
	}
	for _, e := range la.mtimes {
		if e != 1700000000 {
			t.Errorf("an entry's mtime is %d, want SOURCE_DATE_EPOCH 1700000000", e)
			break
		}
	}
	pci, err := os.ReadFile(pciIDs)
	if err != nil {
		t.Fatal(err)
	}
	if la.files["usr/share/misc/pci.ids"] != sha(pci) {
		t.Errorf("pci.ids in the image is not the -pci-ids file")
	}
	for _, f := range []string{"etc/passwd", "etc/group"} {
		b, err := os.ReadFile(filepath.Join("imagebuild/rootfs", f))
		if err != nil {
			t.Fatal(err)
		}
		if la.files[f] != sha(b) {
			t.Errorf("%s in the image differs from imagebuild/rootfs/%s", f, f)
		}
	}
	// The binary is static and knows its version.
	bin := filepath.Join(dir, "sriov-cdi")
	if err := os.WriteFile(bin, la.binary, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "v0.0.0-test") {
		t.Errorf("the image's binary: `sriov-cdi version` = %q, %v; want v0.0.0-test", out, err)
	}
	if bytes.Contains(la.binary, []byte("\x00/lib64/ld-linux")) {
		t.Errorf("the image's binary is dynamically linked")
	}
	// sriov-cdi-dp, the device-plugin-only build the chart runs without DRA
	// pools: static, versioned, and without client-go (the full one has it).
	dp := filepath.Join(dir, "sriov-cdi-dp")
	if err := os.WriteFile(dp, la.dpBinary, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(dp, "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "v0.0.0-test") {
		t.Errorf("the image's sriov-cdi-dp: `sriov-cdi-dp version` = %q, %v; want v0.0.0-test", out, err)
	}
	if bytes.Contains(la.dpBinary, []byte("\x00/lib64/ld-linux")) {
		t.Errorf("the image's sriov-cdi-dp is dynamically linked")
	}
	const clientGo = "k8s.io/client-go/kubernetes"
	if !bytes.Contains(la.binary, []byte(clientGo)) {
		t.Errorf("sriov-cdi does not link %s (the DRA driver)", clientGo)
	}
	if bytes.Contains(la.dpBinary, []byte(clientGo)) {
		t.Errorf("sriov-cdi-dp links %s: it must be built with -tags nodra", clientGo)
	}
}

// TestDockerfileMatchesImageBuild: the Dockerfile (for users with an engine)
// assembles the same tree as the builder.
func TestDockerfileMatchesImageBuild(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	for _, want := range []string{
		"FROM scratch",
		"deployments/imagebuild/rootfs/",
		"/usr/share/misc/pci.ids",
		"/rootfs/usr/bin/sriov-cdi ",
		"-tags nodra",
		"/rootfs/usr/bin/sriov-cdi-dp ",
		"-trimpath -buildvcs=false",
		`ENTRYPOINT ["/usr/bin/sriov-cdi"]`,
		`CMD ["plugin"]`,
		"mkdir -m 1777 /rootfs/tmp",
		"install -d -m 0700 -o 65532 -g 65532 /rootfs/home/nonroot",
		"org.opencontainers.image.source",
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile does not contain %q (keep it in step with deployments/imagebuild)", want)
		}
	}
}

type imageConfig struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Config       struct {
		Entrypoint []string          `json:"Entrypoint"`
		Cmd        []string          `json:"Cmd"`
		Labels     map[string]string `json:"Labels"`
	} `json:"config"`
}

type layoutInfo struct {
	manifestDigest string
	imageName      string
	config         imageConfig
	entries        []string          // "name type mode uid:gid"
	mtimes         []int64           // of every entry
	files          map[string]string // regular file -> sha256
	binary         []byte            // usr/bin/sriov-cdi
	dpBinary       []byte            // usr/bin/sriov-cdi-dp
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func fileDigest(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha(b)
}

// readLayout reads an OCI image layout tar with one image of one layer.
func readLayout(t *testing.T, path string) layoutInfo {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	blobs := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		blobs[h.Name] = b
	}
	blob := func(digest string) []byte {
		b, ok := blobs["blobs/sha256/"+strings.TrimPrefix(digest, "sha256:")]
		if !ok {
			t.Fatalf("%s: no blob %s", path, digest)
		}
		if "sha256:"+sha(b) != digest {
			t.Fatalf("%s: blob %s has digest %s", path, digest, sha(b))
		}
		return b
	}
	if _, ok := blobs["oci-layout"]; !ok {
		t.Fatalf("%s: no oci-layout file", path)
	}
	var index struct {
		Manifests []struct {
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(blobs["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("%s: index.json: %v (%d manifests)", path, err, len(index.Manifests))
	}
	var info layoutInfo
	info.manifestDigest = index.Manifests[0].Digest
	info.imageName = index.Manifests[0].Annotations["io.containerd.image.name"]
	var man struct {
		MediaType string `json:"mediaType"`
		Config    struct {
			Digest string `json:"digest"`
		} `json:"config"`
		Layers []struct {
			MediaType string `json:"mediaType"`
			Digest    string `json:"digest"`
		} `json:"layers"`
	}
	if err := json.Unmarshal(blob(info.manifestDigest), &man); err != nil {
		t.Fatal(err)
	}
	if man.MediaType != "application/vnd.oci.image.manifest.v1+json" || len(man.Layers) != 1 {
		t.Fatalf("%s: manifest %s with %d layers, want an OCI manifest with one layer", path, man.MediaType, len(man.Layers))
	}
	if err := json.Unmarshal(blob(man.Config.Digest), &info.config); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob(man.Layers[0].Digest)))
	if err != nil {
		t.Fatalf("layer: %v", err)
	}
	info.files = map[string]string{}
	lr := tar.NewReader(zr)
	for {
		h, err := lr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		typ := "-"
		if h.Typeflag == tar.TypeDir {
			typ = "d"
		} else if h.Typeflag != tar.TypeReg {
			typ = string(h.Typeflag)
		}
		info.entries = append(info.entries, fmt.Sprintf("%s %s %04o %d:%d", h.Name, typ, h.Mode, h.Uid, h.Gid))
		info.mtimes = append(info.mtimes, h.ModTime.Unix())
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(lr)
			if err != nil {
				t.Fatal(err)
			}
			info.files[h.Name] = sha(b)
			switch h.Name {
			case "usr/bin/sriov-cdi":
				info.binary = b
			case "usr/bin/sriov-cdi-dp":
				info.dpBinary = b
			}
		}
	}
	if !sort.StringsAreSorted(info.entries) {
		t.Errorf("%s: layer entries are not sorted", path)
	}
	return info
}
