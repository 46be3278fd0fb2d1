// Command imagebuild builds the sriov-cdi container image without a container
// engine: `make image` runs it. The image is one layer on nothing:
//
//	/usr/bin/sriov-cdi          the static binary (CGO_ENABLED=0, -trimpath):
//	                            device plugin + DRA driver, CLI, NRI
//	/usr/bin/sriov-cdi-dp       the same source built with -tags nodra: device
//	                            plugin, CLI, NRI, no client-go (half the RSS;
//	                            the chart runs it when no pool has api: dra)
//	/usr/share/misc/pci.ids     Debian's pci.ids package (device names)
//	/etc/passwd, /etc/group     root (0) and nonroot (65532), from rootfs/
//	/tmp (1777), /home/nonroot  so that the image also runs as a non-root user
//
// with entrypoint /usr/bin/sriov-cdi, command `plugin`, OCI labels, and is
// written as an OCI image layout in a tar archive that `ctr -n k8s.io images
// import` loads. The same inputs give the same bytes, hence the same digest:
// every timestamp is SOURCE_DATE_EPOCH (default: the commit time of HEAD),
// entries are sorted, owners are numeric, and the binary is built with
// -trimpath and -buildvcs=false. deployments/Dockerfile produces the same
// file tree for users with an engine.
//
//	go -C deployments/imagebuild run . -repo "$PWD" -out bin/sriov-cdi-image.tar
//	go -C deployments/imagebuild run . -repo "$PWD" -push registry.example.com/sriov-cdi:v0.1.0
//
// Anything it cannot do (no Go toolchain, no pci.ids, a failed build or
// push) is an error and a non-zero exit: it never skips.
package main

import (
	"archive/tar"
	"bytes"
	"embed"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// rootfs holds the files copied verbatim (deployments/Dockerfile copies the
// same directory).
//
//go:embed rootfs
var rootfs embed.FS

const (
	defaultRepository = "ghcr.io/sriov-cdi/sriov-cdi"
	binaryPath        = "usr/bin/sriov-cdi"
	dpBinaryPath      = "usr/bin/sriov-cdi-dp"
	pciIDsPath        = "usr/share/misc/pci.ids"
	versionPkg        = "github.com/sriov-cdi/sriov-cdi/cmd/internal/version.Version"
	nonrootID         = 65532
)

type options struct {
	repo      string // repository root (holds go.mod of the product)
	image     string // reference the image is tagged (and pushed) as
	version   string
	out       string
	binary    string // prebuilt binary instead of `go build`
	binaryDP  string // prebuilt -tags nodra binary instead of `go build -tags nodra`
	pciIDs    string
	arch      string
	epoch     int64
	push      bool
	revision  string
	sourceURL string
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "imagebuild:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	var o options
	fs := flag.NewFlagSet("imagebuild", flag.ContinueOnError)
	fs.StringVar(&o.repo, "repo", "../..", "repository root (the sriov-cdi module)")
	fs.StringVar(&o.image, "image", "", "image reference (default "+defaultRepository+":<version>)")
	fs.StringVar(&o.version, "version", "", "version baked into the binary and the labels (default: git describe --tags --always --dirty)")
	fs.StringVar(&o.out, "out", "", "write the OCI image layout tar here (default <repo>/bin/sriov-cdi-image.tar; \"-\" for none)")
	fs.StringVar(&o.binary, "binary", "", "use this static sriov-cdi binary instead of building ./cmd/sriov-cdi")
	fs.StringVar(&o.binaryDP, "binary-dp", "", "use this static sriov-cdi-dp binary instead of building ./cmd/sriov-cdi with -tags nodra")
	fs.StringVar(&o.pciIDs, "pci-ids", "/usr/share/misc/pci.ids", "pci.ids file (Debian: apt-get install pci.ids)")
	fs.StringVar(&o.arch, "arch", runtime.GOARCH, "GOARCH of the image")
	fs.Int64Var(&o.epoch, "source-date-epoch", -1, "timestamp of every file and of the image (default $SOURCE_DATE_EPOCH, else HEAD's commit time, else 0)")
	fs.BoolVar(&o.push, "push", false, "push the image to its reference (credentials: ~/.docker/config.json, as crane and docker use)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	repo, err := filepath.Abs(o.repo)
	if err != nil {
		return err
	}
	o.repo = repo
	if _, err := os.Stat(filepath.Join(o.repo, "cmd", "sriov-cdi")); err != nil {
		return fmt.Errorf("-repo %s is not the sriov-cdi repository: %w", o.repo, err)
	}
	if o.version == "" {
		o.version = gitOutput(o.repo, "describe", "--tags", "--always", "--dirty")
		if o.version == "" {
			o.version = "dev"
		}
	}
	o.revision = gitOutput(o.repo, "rev-parse", "HEAD")
	if o.epoch < 0 {
		if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
			if o.epoch, err = strconv.ParseInt(s, 10, 64); err != nil {
				return fmt.Errorf("SOURCE_DATE_EPOCH=%q: %w", s, err)
			}
		} else if s := gitOutput(o.repo, "log", "-1", "--format=%ct"); s != "" {
			if o.epoch, err = strconv.ParseInt(s, 10, 64); err != nil {
				return fmt.Errorf("commit time %q: %w", s, err)
			}
		} else {
			o.epoch = 0
		}
	}
	if o.image == "" {
		o.image = defaultRepository + ":" + o.version
	}
	ref, err := name.ParseReference(o.image, name.WeakValidation)
	if err != nil {
		return fmt.Errorf("-image %q: %w", o.image, err)
	}
	if o.out == "" {
		o.out = filepath.Join(o.repo, "bin", "sriov-cdi-image.tar")
	}

	bin, dpBin := o.binary, o.binaryDP
	if bin == "" || dpBin == "" {
		tmp, err := os.MkdirTemp("", "imagebuild-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		if bin == "" {
			bin = filepath.Join(tmp, "sriov-cdi")
			if err := buildBinary(o, bin, ""); err != nil {
				return err
			}
		}
		if dpBin == "" {
			dpBin = filepath.Join(tmp, "sriov-cdi-dp")
			if err := buildBinary(o, dpBin, "nodra"); err != nil {
				return err
			}
		}
	}
	img, err := Build(o, bin, dpBin)
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	if o.out != "-" {
		if err := WriteLayoutTar(o.out, img, ref, o); err != nil {
			return err
		}
		fmt.Printf("imagebuild: %s %s -> %s\n", ref.Name(), digest, o.out)
	}
	if o.push {
		if err := remote.Write(ref, img, remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
			return fmt.Errorf("push %s: %w", ref.Name(), err)
		}
		fmt.Printf("imagebuild: pushed %s@%s\n", ref.Context().Name(), digest)
	}
	return nil
}

func gitOutput(dir string, args ...string) string {
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Stderr = nil
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// buildBinary builds ./cmd/sriov-cdi reproducibly into out, with the build
// tags in tags ("" for none).
func buildBinary(o options, out, tags string) error {
	args := []string{"build", "-trimpath", "-buildvcs=false"}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	args = append(args, "-ldflags", "-s -w -buildid= -X "+versionPkg+"="+o.version, "-o", out, "./cmd/sriov-cdi")
	cmd := exec.Command("go", args...)
	cmd.Dir = o.repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+o.arch, "GOFLAGS=-buildvcs=false")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build -tags %q ./cmd/sriov-cdi (GOARCH=%s): %w", tags, o.arch, err)
	}
	if o.arch == runtime.GOARCH && runtime.GOOS == "linux" {
		v, err := exec.Command(out, "version").CombinedOutput()
		if err != nil {
			return fmt.Errorf("the built binary does not run (%s version): %v: %s", out, err, v)
		}
		if !strings.Contains(string(v), o.version) {
			return fmt.Errorf("the built binary reports %q, want version %q", strings.TrimSpace(string(v)), o.version)
		}
	}
	return nil
}

// entry is one file of the layer.
type entry struct {
	name     string // relative, no leading slash; directories end in "/"
	mode     int64
	uid, gid int
	data     []byte
}

// Layer returns the image's one layer as an uncompressed tar: every entry
// sorted by name, owned by numeric IDs, stamped with the epoch.
func Layer(bin, dpBin, pciIDs []byte, epoch time.Time) ([]byte, error) {
	entries := []entry{
		{name: "etc/", mode: 0o755},
		{name: "home/", mode: 0o755},
		{name: "home/nonroot/", mode: 0o700, uid: nonrootID, gid: nonrootID},
		{name: "tmp/", mode: 0o1777},
		{name: "usr/", mode: 0o755},
		{name: "usr/bin/", mode: 0o755},
		{name: binaryPath, mode: 0o755, data: bin},
		{name: dpBinaryPath, mode: 0o755, data: dpBin},
		{name: "usr/share/", mode: 0o755},
		{name: "usr/share/misc/", mode: 0o755},
		{name: pciIDsPath, mode: 0o644, data: pciIDs},
	}
	err := fs.WalkDir(rootfs, "rootfs", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := rootfs.ReadFile(p)
		if err != nil {
			return err
		}
		entries = append(entries, entry{name: strings.TrimPrefix(p, "rootfs/"), mode: 0o644, data: b})
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name:    e.name,
			Mode:    e.mode,
			Uid:     e.uid,
			Gid:     e.gid,
			ModTime: epoch,
			Format:  tar.FormatPAX,
		}
		if strings.HasSuffix(e.name, "/") {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Build assembles the image from the full binary at bin and the
// device-plugin-only one at dpBin.
func Build(o options, bin, dpBin string) (v1.Image, error) {
	binData, err := readELF(bin)
	if err != nil {
		return nil, err
	}
	dpData, err := readELF(dpBin)
	if err != nil {
		return nil, err
	}
	pci, err := os.ReadFile(o.pciIDs)
	if err != nil {
		return nil, fmt.Errorf("pci.ids (device names in the image): %w; on Debian: apt-get install pci.ids, or pass -pci-ids FILE", err)
	}
	epoch := time.Unix(o.epoch, 0).UTC()
	layerTar, err := Layer(binData, dpData, pci, epoch)
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: epoch},
			CreatedBy: "deployments/imagebuild (sriov-cdi " + o.version + ")",
		},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = o.arch
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Entrypoint = []string{"/" + binaryPath}
	cf.Config.Cmd = []string{"plugin"}
	cf.Config.Env = []string{"PATH=/usr/bin"}
	cf.Config.WorkingDir = "/"
	cf.Config.Labels = Labels(o, epoch)
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, err
	}
	return img, nil
}

func readELF(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the binary: %w", err)
	}
	if len(b) < 4 || string(b[:4]) != "\x7fELF" {
		return nil, fmt.Errorf("%s is not an ELF binary", path)
	}
	return b, nil
}

// Labels are the OCI annotations of the image config (the Dockerfile sets
// the same).
func Labels(o options, epoch time.Time) map[string]string {
	l := map[string]string{
		"org.opencontainers.image.title":       "sriov-cdi",
		"org.opencontainers.image.description": "Kubernetes device plugin and CDI spec generator for SR-IOV VFs and other PCI devices",
		"org.opencontainers.image.source":      "https://github.com/sriov-cdi/sriov-cdi",
		"org.opencontainers.image.licenses":    "Apache-2.0",
		"org.opencontainers.image.version":     o.version,
		"org.opencontainers.image.created":     epoch.Format(time.RFC3339),
	}
	if o.revision != "" {
		l["org.opencontainers.image.revision"] = o.revision
	}
	return l
}

// WriteLayoutTar writes img as an OCI image layout (index.json naming the
// image for containerd) into a tar archive at out, atomically.
func WriteLayoutTar(out string, img v1.Image, ref name.Reference, o options) error {
	dir, err := os.MkdirTemp("", "imagebuild-layout-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	ann := map[string]string{
		"io.containerd.image.name":          ref.Name(),
		"org.opencontainers.image.ref.name": ref.Identifier(),
	}
	if err := p.AppendImage(img, layout.WithAnnotations(ann), layout.WithPlatform(v1.Platform{OS: "linux", Architecture: o.arch})); err != nil {
		return fmt.Errorf("write OCI layout: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := tarDir(f, dir, time.Unix(o.epoch, 0).UTC()); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", out, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, out)
}

// tarDir writes the regular files and directories under dir, sorted, with
// fixed owners, modes and times.
func tarDir(w io.Writer, dir string, epoch time.Time) error {
	var names []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			rel += "/"
		} else if !d.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file", p)
		}
		names = append(names, rel)
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(names)
	tw := tar.NewWriter(w)
	for _, n := range names {
		h := &tar.Header{Name: n, ModTime: epoch, Format: tar.FormatPAX}
		var data []byte
		if strings.HasSuffix(n, "/") {
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		} else {
			if data, err = os.ReadFile(filepath.Join(dir, filepath.FromSlash(n))); err != nil {
				return err
			}
			h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o644, int64(len(data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	return tw.Close()
}
