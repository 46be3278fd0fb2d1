package deployments

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	resourcev1 "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/sriov-cdi/sriov-cdi/core/config"
)

const (
	chartDir     = "helm/sriov-cdi"
	manifestsDir = "manifests"
	installFile  = "manifests/sriov-cdi.yaml"
	// The namespace and release name the plain manifests correspond to.
	releaseName = "sriov-cdi"
	namespace   = "sriov-cdi"
	// Annotations Multus reads.
	nadResourceAnnotation = "k8s.v1.cni.cncf.io/resourceName"
	networksAnnotation    = "k8s.v1.cni.cncf.io/networks"
)

// ---------------------------------------------------------------------------
// Strict decoding.

var (
	scheme = func() *runtime.Scheme {
		s := runtime.NewScheme()
		for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, monitoringv1.AddToScheme, rbacv1.AddToScheme, resourcev1.AddToScheme} {
			if err := add(s); err != nil {
				panic(err)
			}
		}
		return s
	}()
	// EnableStrict: unknown and duplicate fields are errors (case-sensitive).
	decoder = serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()

	// Kinds decoded into the mirrors of types_test.go.
	mirrors = map[schema.GroupVersionKind]func() any{
		{Group: "kubevirt.io", Version: "v1", Kind: "KubeVirt"}:                        func() any { return new(kubeVirt) },
		{Group: "kubevirt.io", Version: "v1", Kind: "VirtualMachineInstance"}:          func() any { return new(virtualMachineInstance) },
		{Group: "k8s.cni.cncf.io", Version: "v1", Kind: "NetworkAttachmentDefinition"}: func() any { return new(networkAttachmentDefinition) },
	}
)

// object is one decoded document of a YAML stream.
type object struct {
	source string // file#document
	gvk    schema.GroupVersionKind
	obj    any // a typed API object (pointer) or a mirror
}

func (o object) name() string {
	if m, ok := o.obj.(metav1.Object); ok {
		return m.GetName()
	}
	switch v := o.obj.(type) {
	case *kubeVirt:
		return v.Name
	case *virtualMachineInstance:
		return v.Name
	case *networkAttachmentDefinition:
		return v.Name
	}
	return ""
}

// decodeStream strictly decodes every document of a YAML stream; empty
// documents (only comments) are skipped.
func decodeStream(source string, data []byte) ([]object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []object
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: split YAML stream: %w", source, err)
		}
		src := fmt.Sprintf("%s#%d", source, i)
		o, err := decodeDoc(src, doc)
		if err != nil {
			return nil, err
		}
		if o != nil {
			out = append(out, *o)
		}
	}
}

func decodeDoc(source string, doc []byte) (*object, error) {
	js, err := yaml.YAMLToJSONStrict(doc) // duplicate keys are errors
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	if t := bytes.TrimSpace(js); len(t) == 0 || string(t) == "null" {
		return nil, nil
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(js, &tm); err != nil {
		return nil, fmt.Errorf("%s: not an object: %w", source, err)
	}
	gvk := schema.FromAPIVersionAndKind(tm.APIVersion, tm.Kind)
	if gvk.Kind == "" || gvk.Version == "" {
		return nil, fmt.Errorf("%s: apiVersion and kind are required (got %q, %q)", source, tm.APIVersion, tm.Kind)
	}
	if newMirror, ok := mirrors[gvk]; ok {
		v := newMirror()
		strictErrs, err := sigsjson.UnmarshalStrict(js, v, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
		if err == nil && len(strictErrs) > 0 {
			err = errors.Join(strictErrs...)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: decode %s: %w", source, gvk.Kind, err)
		}
		return &object{source, gvk, v}, nil
	}
	if !scheme.Recognizes(gvk) {
		return nil, fmt.Errorf("%s: kind %s is unknown to this test: add its API type (or a mirror in types_test.go)", source, gvk)
	}
	obj, _, err := decoder.Decode(js, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: decode %s: %w", source, gvk.Kind, err)
	}
	return &object{source, gvk, obj}, nil
}

func TestStrictDecodingRejectsUnknownFields(t *testing.T) {
	for name, doc := range map[string]string{
		"pod typo":            "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  nodeSelektor: {}\n  containers: [{name: c, image: i}]\n",
		"pod wrong case":      "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers: [{name: c, image: i, ImagePullPolicy: Always}]\n",
		"duplicate key":       "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\ndata: {c: d}\n",
		"daemonset typo":      "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      hostNetwrk: true\n",
		"mirror typo":         "apiVersion: kubevirt.io/v1\nkind: KubeVirt\nmetadata: {name: x}\nspec:\n  configuration:\n    permittedHostDevices:\n      pciHostDevices: [{pciVendorSelector: '8086:154c', resourceName: a/b, externalResourcesProvider: true}]\n",
		"servicemonitor typo": "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: x}\nspec:\n  selector: {}\n  endpoints: [{prot: metrics}]\n",
		"unknown kind":        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: x}\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := decodeStream(name, []byte(doc)); err == nil {
				t.Fatalf("decoded without error:\n%s", doc)
			} else {
				t.Logf("rejected as expected: %v", err)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// What the binary accepts, read from its sources: the SRIOV_CDI_* variable
// of every flag and the command names. A misspelt variable is silently
// ignored by the binary, so the manifests are checked against this list.

type cliFacts struct {
	env      map[string]bool
	commands map[string]bool
}

func readCLIFacts(t *testing.T) cliFacts {
	t.Helper()
	files, err := filepath.Glob("../cmd/internal/cli/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("find the CLI sources: %v (%d files)", err, len(files))
	}
	f := cliFacts{env: map[string]bool{}, commands: map[string]bool{}}
	reEnv := regexp.MustCompile(`EnvVars\("(SRIOV_CDI_[A-Z0-9_]+)"\)`)
	reCmd := regexp.MustCompile(`(?m)^\s*Name:\s+"([a-z][a-z-]*)",\s*$`)
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range reEnv.FindAllSubmatch(b, -1) {
			f.env[string(m[1])] = true
		}
		for _, m := range reCmd.FindAllSubmatch(b, -1) {
			f.commands[string(m[1])] = true
		}
	}
	for _, must := range []string{"plugin", "nri"} {
		if !f.commands[must] {
			t.Fatalf("no %q command found in ../cmd/internal/cli (found %v): the regexp needs updating", must, keys(f.commands))
		}
	}
	return f
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ---------------------------------------------------------------------------
// Checks shared by the manifests and the rendered chart.

// pools maps each pool's resource name to its mode.
type pools map[string]config.Mode

// configFrom parses the config.yaml of the one ConfigMap carrying it with
// the plugin's own parser.
func configFrom(t *testing.T, objs []object) pools {
	t.Helper()
	var found []pools
	for _, o := range objs {
		cm, ok := o.obj.(*corev1.ConfigMap)
		if !ok {
			continue
		}
		data, ok := cm.Data["config.yaml"]
		if !ok {
			continue
		}
		cfg, err := config.Parse(o.source+" config.yaml", []byte(data))
		if err != nil {
			t.Fatalf("the ConfigMap's config does not pass config.Parse: %v", err)
		}
		p := pools{}
		for i := range cfg.Pools {
			p[cfg.Resource(&cfg.Pools[i])] = cfg.Pools[i].Mode
		}
		found = append(found, p)
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one ConfigMap with config.yaml, found %d", len(found))
	}
	return found[0]
}

// checkStream checks the objects of one install (manifest or rendered
// chart): references between them resolve, every container of the
// DaemonSet runs a real command with real SRIOV_CDI_* variables, probes
// name real ports.
func checkStream(t *testing.T, objs []object, cli cliFacts) {
	t.Helper()
	byKind := map[string]map[string]object{}
	for _, o := range objs {
		if byKind[o.gvk.Kind] == nil {
			byKind[o.gvk.Kind] = map[string]object{}
		}
		if _, dup := byKind[o.gvk.Kind][o.name()]; dup {
			t.Errorf("%s: a second %s named %q", o.source, o.gvk.Kind, o.name())
		}
		byKind[o.gvk.Kind][o.name()] = o
	}
	for _, o := range objs {
		switch v := o.obj.(type) {
		case *appsv1.DaemonSet:
			checkDaemonSet(t, o.source, v, byKind, cli)
		case *corev1.Service:
			checkService(t, o.source, v, byKind)
		case *monitoringv1.ServiceMonitor:
			checkServiceMonitor(t, o.source, v, byKind)
		}
	}
}

func checkDaemonSet(t *testing.T, src string, ds *appsv1.DaemonSet, byKind map[string]map[string]object, cli cliFacts) {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil || sel.Empty() {
		t.Errorf("%s: DaemonSet selector %v: %v (empty selects nothing)", src, ds.Spec.Selector, err)
	} else if !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("%s: DaemonSet selector %v does not match its pod labels %v", src, ds.Spec.Selector, ds.Spec.Template.Labels)
	}
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork {
		t.Errorf("%s: hostNetwork must be true (netdev names, host-use interlock, uevents)", src)
	}
	if sa := spec.ServiceAccountName; sa != "" && sa != "default" {
		if _, ok := byKind["ServiceAccount"][sa]; !ok {
			t.Errorf("%s: serviceAccountName %q has no ServiceAccount in the same install", src, sa)
		}
	}
	checkPodSpec(t, src, &spec)
	for _, v := range spec.Volumes {
		if v.ConfigMap != nil {
			if _, ok := byKind["ConfigMap"][v.ConfigMap.Name]; !ok {
				t.Errorf("%s: volume %q uses ConfigMap %q, which is not in the same install", src, v.Name, v.ConfigMap.Name)
			}
		}
	}
	for _, c := range spec.Containers {
		if len(c.Args) == 0 || !cli.commands[c.Args[0]] {
			t.Errorf("%s: container %q args %q: the first must be a sriov-cdi command (%v)", src, c.Name, c.Args, keys(cli.commands))
		}
		for _, e := range c.Env {
			if strings.HasPrefix(e.Name, "SRIOV_CDI_") && !cli.env[e.Name] {
				t.Errorf("%s: container %q sets %s, which no sriov-cdi flag reads (known: %v)", src, c.Name, e.Name, keys(cli.env))
			}
			if err := checkEnvValue(e.Name, e.Value, c.Ports); err != nil {
				t.Errorf("%s: container %q: %s=%q: %v", src, c.Name, e.Name, e.Value, err)
			}
			// The directory each path names must come from the host (or the
			// ConfigMap): what the plugin writes there must outlive the pod
			// or be seen by kubelet and the runtime.
			var dir string
			switch e.Name {
			case "SRIOV_CDI_SYSFS_ROOT", "SRIOV_CDI_DEVICE_PLUGIN_DIR", "SRIOV_CDI_CDI_DIR", "SRIOV_CDI_DEVICE_INFO_DIR":
				dir = e.Value
			case "SRIOV_CDI_DEV_ROOT":
				dir = filepath.Join(e.Value, "vfio")
			case "SRIOV_CDI_CONFIG", "SRIOV_CDI_STATE_FILE", "SRIOV_CDI_NRI_SOCKET", "SRIOV_CDI_POD_RESOURCES_SOCKET":
				dir = filepath.Dir(e.Value)
			default:
				continue
			}
			if v := mountedVolume(&spec, &c, dir); v == nil || (v.HostPath == nil && v.ConfigMap == nil) {
				t.Errorf("%s: container %q: %s=%s: %s is not a host path (or ConfigMap) mount", src, c.Name, e.Name, e.Value, dir)
			}
		}
	}
}

// mountedVolume returns the volume mounted exactly at dir in c.
func mountedVolume(spec *corev1.PodSpec, c *corev1.Container, dir string) *corev1.Volume {
	for _, m := range c.VolumeMounts {
		if filepath.Clean(m.MountPath) != filepath.Clean(dir) {
			continue
		}
		for i := range spec.Volumes {
			if spec.Volumes[i].Name == m.Name {
				return &spec.Volumes[i]
			}
		}
	}
	return nil
}

// checkEnvValue checks a SRIOV_CDI_* value the way its flag parses it, and
// that the health address listens on the port the probes use.
func checkEnvValue(name, value string, ports []corev1.ContainerPort) error {
	switch name {
	case "SRIOV_CDI_RESCAN_INTERVAL", "SRIOV_CDI_NRI_RETRY_INTERVAL":
		if d, err := time.ParseDuration(value); err != nil || d <= 0 {
			return fmt.Errorf("want a positive duration (%v)", err)
		}
	case "SRIOV_CDI_UEVENTS":
		if _, err := strconv.ParseBool(value); err != nil {
			return err
		}
	case "SRIOV_CDI_LOG_LEVEL":
		if !slices.Contains([]string{"debug", "info", "warn", "error"}, value) {
			return errors.New("want debug, info, warn or error")
		}
	case "SRIOV_CDI_LOG_FORMAT":
		if value != "json" && value != "console" {
			return errors.New("want json or console")
		}
	case "SRIOV_CDI_HEALTH_ADDR":
		_, port, err := net.SplitHostPort(value)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(ports, func(p corev1.ContainerPort) bool {
			return p.Name == "metrics" && strconv.Itoa(int(p.ContainerPort)) == port
		}) {
			return fmt.Errorf("port %s is not the container port named metrics (%v)", port, ports)
		}
	case "SRIOV_CDI_CONFIG", "SRIOV_CDI_SYSFS_ROOT", "SRIOV_CDI_DEV_ROOT", "SRIOV_CDI_DEVICE_PLUGIN_DIR",
		"SRIOV_CDI_CDI_DIR", "SRIOV_CDI_STATE_FILE", "SRIOV_CDI_NRI_SOCKET", "SRIOV_CDI_POD_RESOURCES_SOCKET",
		"SRIOV_CDI_DEVICE_INFO_DIR":
		if !filepath.IsAbs(value) {
			return errors.New("want an absolute path")
		}
	}
	return nil
}

func checkPodSpec(t *testing.T, src string, spec *corev1.PodSpec) {
	t.Helper()
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		if _, dup := volumes[v.Name]; dup {
			t.Errorf("%s: volume %q defined twice", src, v.Name)
		}
		volumes[v.Name] = v
	}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		ports := map[string]bool{}
		for _, p := range c.Ports {
			if p.Name != "" {
				if len(p.Name) > 15 {
					t.Errorf("%s: container %q port name %q is longer than 15 characters", src, c.Name, p.Name)
				}
				ports[p.Name] = true
			}
		}
		for what, pr := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
			if pr == nil || pr.HTTPGet == nil {
				continue
			}
			if p := pr.HTTPGet.Port; p.StrVal != "" && !ports[p.StrVal] {
				t.Errorf("%s: container %q %s probe uses port %q, not a port of the container", src, c.Name, what, p.StrVal)
			}
		}
		mounts := map[string]bool{}
		for _, m := range c.VolumeMounts {
			if _, ok := volumes[m.Name]; !ok {
				t.Errorf("%s: container %q mounts volume %q, which is not defined", src, c.Name, m.Name)
			}
			if mounts[m.MountPath] {
				t.Errorf("%s: container %q mounts %q twice", src, c.Name, m.MountPath)
			}
			mounts[m.MountPath] = true
		}
		if sc := c.SecurityContext; sc != nil && sc.Privileged != nil && *sc.Privileged &&
			sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
			t.Errorf("%s: container %q: privileged with allowPrivilegeEscalation false is rejected by the API server", src, c.Name)
		}
		checkResources(t, src, c.Name, c.Resources)
	}
}

// checkResources applies the API server's rules for extended resources:
// they must be limits, and requests, when given, must equal them.
func checkResources(t *testing.T, src, container string, r corev1.ResourceRequirements) {
	t.Helper()
	for name, q := range r.Requests {
		if !isExtended(name) {
			continue
		}
		l, ok := r.Limits[name]
		if !ok || l.Cmp(q) != 0 {
			t.Errorf("%s: container %q requests %s=%s without an equal limit", src, container, name, q.String())
		}
	}
}

func isExtended(name corev1.ResourceName) bool {
	return strings.Contains(string(name), "/") && !strings.HasPrefix(string(name), "kubernetes.io/")
}

func checkService(t *testing.T, src string, svc *corev1.Service, byKind map[string]map[string]object) {
	t.Helper()
	matched := false
	for _, o := range byKind["DaemonSet"] {
		if selectorMatches(svc.Spec.Selector, o.obj.(*appsv1.DaemonSet).Spec.Template.Labels) {
			matched = true
		}
	}
	if !matched {
		t.Errorf("%s: Service selector %v matches no DaemonSet's pods", src, svc.Spec.Selector)
	}
}

func checkServiceMonitor(t *testing.T, src string, sm *monitoringv1.ServiceMonitor, byKind map[string]map[string]object) {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil {
		t.Fatalf("%s: selector: %v", src, err)
	}
	var svcs []*corev1.Service
	for _, o := range byKind["Service"] {
		if svc := o.obj.(*corev1.Service); sel.Matches(labels.Set(svc.Labels)) {
			svcs = append(svcs, svc)
		}
	}
	if len(svcs) == 0 {
		t.Fatalf("%s: ServiceMonitor selector %v matches no Service of the install", src, sm.Spec.Selector)
	}
	for _, ep := range sm.Spec.Endpoints {
		for _, svc := range svcs {
			if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
				t.Errorf("%s: endpoint port %q is not a port of Service %q", src, ep.Port, svc.Name)
			}
		}
	}
}

func selectorMatches(sel, lbls map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if lbls[k] != v {
			return false
		}
	}
	return true
}

func daemonSets(objs []object) []*appsv1.DaemonSet {
	var out []*appsv1.DaemonSet
	for _, o := range objs {
		if ds, ok := o.obj.(*appsv1.DaemonSet); ok {
			out = append(out, ds)
		}
	}
	return out
}

func kinds(objs []object) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.gvk.Kind)
	}
	sort.Strings(out)
	return out
}

// ---------------------------------------------------------------------------
// Plain manifests and examples.

func readManifests(t *testing.T) map[string][]object {
	t.Helper()
	out := map[string][]object{}
	err := filepath.WalkDir(manifestsDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if ext := filepath.Ext(path); ext != ".yaml" && ext != ".yml" {
			return fmt.Errorf("%s: only YAML belongs under %s (every file is validated)", path, manifestsDir)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		objs, err := decodeStream(path, b)
		if err != nil {
			return err
		}
		if len(objs) == 0 {
			return fmt.Errorf("%s: no objects", path)
		}
		out[filepath.ToSlash(path)] = objs
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestManifests(t *testing.T) {
	cli := readCLIFacts(t)
	files := readManifests(t)
	install, ok := files[installFile]
	if !ok {
		t.Fatalf("%s is missing", installFile)
	}
	if got, want := kinds(install), []string{"ConfigMap", "DaemonSet", "Namespace", "ServiceAccount"}; !slices.Equal(got, want) {
		t.Errorf("%s holds %v, want %v", installFile, got, want)
	}
	for _, o := range install {
		if m, ok := o.obj.(metav1.Object); ok && o.gvk.Kind != "Namespace" && m.GetNamespace() != namespace {
			t.Errorf("%s: %s %q is in namespace %q, want %q", o.source, o.gvk.Kind, m.GetName(), m.GetNamespace(), namespace)
		}
		if ns, ok := o.obj.(*corev1.Namespace); ok && ns.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
			t.Errorf("%s: namespace %q must allow privileged pods (pod-security.kubernetes.io/enforce: privileged)", o.source, ns.Name)
		}
	}
	checkStream(t, install, cli)
	pools := configFrom(t, install)
	t.Logf("pools of %s: %v", installFile, pools)
	checkHostPathsDocumented(t, install)

	// Examples: each object is checked on its own and against the pools.
	var all []object
	for path, objs := range files {
		if path != installFile {
			all = append(all, objs...)
		}
	}
	checkExamples(t, all, pools)
}

// vendorSelector is KubeVirt's pciVendorSelector: vendor:device in hex.
var vendorSelector = regexp.MustCompile(`^[0-9a-fA-F]{4}:[0-9a-fA-F]{4}$`)

// checkExamples checks that every example uses pools that exist, with the
// mode its consumer needs, and that the examples the docs promise exist.
func checkExamples(t *testing.T, objs []object, pools pools) {
	t.Helper()
	nads := map[string]string{}    // NAD name -> resource
	permitted := map[string]bool{} // KubeVirt resource names
	var have []string              // which kinds of example were seen
	for _, o := range objs {
		switch v := o.obj.(type) {
		case *networkAttachmentDefinition:
			res := v.Annotations[nadResourceAnnotation]
			nads[v.Name] = res
			if mode, ok := pools[res]; !ok || mode != config.ModeKernel {
				t.Errorf("%s: NAD %q resource %q: want a kernel pool (SR-IOV CNI moves the VF's netdev), have %v", o.source, v.Name, res, pools)
			}
			var cni struct {
				CNIVersion string `json:"cniVersion"`
				Name       string `json:"name"`
				Type       string `json:"type"`
			}
			if err := json.Unmarshal([]byte(v.Spec.Config), &cni); err != nil || cni.CNIVersion == "" || cni.Name == "" || cni.Type == "" {
				t.Errorf("%s: spec.config is not a CNI config with cniVersion, name and type: %v", o.source, err)
			}
			have = append(have, "nad")
		case *kubeVirt:
			phd := v.Spec.Configuration.PermittedHostDevices
			if phd == nil || len(phd.PciHostDevices) == 0 {
				t.Errorf("%s: KubeVirt example permits no PCI host devices", o.source)
				continue
			}
			for _, d := range phd.PciHostDevices {
				permitted[d.ResourceName] = true
				if !d.ExternalResourceProvider {
					t.Errorf("%s: %s: externalResourceProvider must be true (sriov-cdi is the device plugin)", o.source, d.ResourceName)
				}
				if !vendorSelector.MatchString(d.PCIVendorSelector) {
					t.Errorf("%s: pciVendorSelector %q: want VVVV:DDDD", o.source, d.PCIVendorSelector)
				}
				if mode, ok := pools[d.ResourceName]; !ok || mode != config.ModeVFIO {
					t.Errorf("%s: KubeVirt resource %q: want a vfio pool, have %v", o.source, d.ResourceName, pools)
				}
			}
			have = append(have, "kubevirt")
		}
	}
	for _, o := range objs {
		switch v := o.obj.(type) {
		case *virtualMachineInstance:
			for _, hd := range v.Spec.Domain.Devices.HostDevices {
				if !permitted[hd.DeviceName] {
					t.Errorf("%s: hostDevice %q is not permitted by the KubeVirt example", o.source, hd.DeviceName)
				}
			}
		case *corev1.Pod:
			checkPodSpec(t, o.source, &v.Spec)
			kata := v.Spec.RuntimeClassName != nil && *v.Spec.RuntimeClassName == "kata"
			var used []config.Mode
			for _, c := range v.Spec.Containers {
				for name := range c.Resources.Limits {
					if !isExtended(name) {
						continue
					}
					mode, ok := pools[string(name)]
					if !ok {
						t.Errorf("%s: container %q asks for %s, which is no pool of %s (%v)", o.source, c.Name, name, installFile, pools)
						continue
					}
					if kata && mode != config.ModeVFIO {
						t.Errorf("%s: Kata pod asks for %s, a %s pool: Kata cold-plugs vfio devices only", o.source, name, mode)
					}
					used = append(used, mode)
				}
			}
			if nets, ok := v.Annotations[networksAnnotation]; ok {
				for _, n := range strings.Split(nets, ",") {
					res, ok := nads[strings.TrimSpace(n)]
					if !ok {
						t.Errorf("%s: network %q has no NetworkAttachmentDefinition in the examples", o.source, n)
						continue
					}
					if !slices.ContainsFunc(v.Spec.Containers, func(c corev1.Container) bool { _, ok := c.Resources.Limits[corev1.ResourceName(res)]; return ok }) {
						t.Errorf("%s: network %q needs a container to ask for %s", o.source, n, res)
					}
				}
			}
			switch {
			case kata && slices.Contains(used, config.ModeVFIO):
				have = append(have, "kata-vfio")
			case !kata && v.Spec.RuntimeClassName == nil && slices.Contains(used, config.ModeKernel):
				have = append(have, "runc-kernel")
			}
		}
	}
	for _, want := range []string{"runc-kernel", "kata-vfio", "kubevirt", "nad"} {
		if !slices.Contains(have, want) {
			t.Errorf("no %s example under %s (have %v)", want, manifestsDir, have)
		}
	}
}

// checkHostPathsDocumented: every host path the DaemonSet mounts is
// explained in deployments/README.md.
func checkHostPathsDocumented(t *testing.T, objs []object) {
	t.Helper()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatalf("read deployments/README.md: %v", err)
	}
	for _, ds := range daemonSets(objs) {
		for _, v := range ds.Spec.Template.Spec.Volumes {
			if v.HostPath != nil && !bytes.Contains(readme, []byte("`"+v.HostPath.Path+"`")) {
				t.Errorf("host path %s (volume %q) is not explained in deployments/README.md", v.HostPath.Path, v.Name)
			}
		}
	}
}

// ---------------------------------------------------------------------------
// The Helm chart, rendered by a real helm (deployments/install-helm.sh).

func helmBinary(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	h, err := exec.LookPath("helm")
	if err != nil {
		t.Skip("helm is not on PATH: chart not rendered (install it with deployments/install-helm.sh, or set HELM)")
	}
	return h
}

// kubeVersion is given to helm so the chart's kubeVersion constraint is
// checked against a supported cluster, not helm's built-in default.
const kubeVersion = "1.35.0"

func runHelm(t *testing.T, helm string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, helm, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return out
}

type chartVariant struct {
	name       string
	set        []string
	files      map[string]string // value name -> file content, for --set-file
	wantKinds  []string
	containers []string
	// binary every container runs: sriov-cdi-dp (no client-go, half the
	// RSS) unless a pool has api: dra or plugin.binary says otherwise.
	binary string
}

const (
	binaryFull = "/usr/bin/sriov-cdi"
	binaryDP   = "/usr/bin/sriov-cdi-dp"
)

var chartVariants = []chartVariant{
	{
		name:       "default",
		wantKinds:  []string{"ConfigMap", "DaemonSet", "ServiceAccount"},
		containers: []string{"plugin"},
		binary:     binaryDP,
	},
	{
		name:       "nri+servicemonitor",
		set:        []string{"nri.enabled=true", "serviceMonitor.enabled=true", "serviceMonitor.labels.release=prometheus"},
		wantKinds:  []string{"ConfigMap", "DaemonSet", "Service", "ServiceAccount", "ServiceMonitor"},
		containers: []string{"plugin", "nri"},
		binary:     binaryDP,
	},
	{
		name:       "service, no serviceaccount, other kubelet dir",
		set:        []string{"service.enabled=true", "serviceAccount.create=false", "hostPaths.devicePlugins=/var/lib/k0s/kubelet/device-plugins", "hostPaths.podResources=/var/lib/k0s/kubelet/pod-resources"},
		wantKinds:  []string{"ConfigMap", "DaemonSet", "Service"},
		containers: []string{"plugin"},
		binary:     binaryDP,
	},
	{
		name:       "host sysfs and dev elsewhere (a fixture tree)",
		set:        []string{"hostPaths.sys=/srv/e2e/sys", "hostPaths.dev=/srv/e2e/dev"},
		wantKinds:  []string{"ConfigMap", "DaemonSet", "ServiceAccount"},
		containers: []string{"plugin"},
		binary:     binaryDP,
	},
	{
		name:       "configFile: SR-IOV network device plugin JSON",
		files:      map[string]string{"configFile": `{"resourceList": [{"resourceName": "intel_sriov_dpdk", "selectors": {"vendors": ["8086"], "devices": ["154c"], "drivers": ["vfio-pci"]}}]}`},
		wantKinds:  []string{"ConfigMap", "DaemonSet", "ServiceAccount"},
		containers: []string{"plugin"},
		binary:     binaryDP,
	},
	{
		name:       "configFile: YAML",
		files:      map[string]string{"configFile": "resourcePrefix: example.com\npools:\n  - name: nvme\n    mode: vfio\n    allowUnbindFrom: [nvme]\n    selectors: {vendors: [\"1b36\"], devices: [\"0010\"]}\n"},
		wantKinds:  []string{"ConfigMap", "DaemonSet", "ServiceAccount"},
		containers: []string{"plugin"},
		binary:     binaryDP,
	},
	{
		name:       "configFile: a DRA pool",
		set:        []string{"dra.deviceTaints=true"},
		files:      map[string]string{"configFile": "resourcePrefix: example.com\npools:\n  - {name: vf, api: dra, mode: vfio, selectors: {vendors: [\"8086\"]}}\n  - {name: dp, selectors: {vendors: [\"15b3\"]}}\n"},
		wantKinds:  []string{"ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet", "DeviceClass", "ServiceAccount"},
		containers: []string{"plugin"},
		binary:     binaryFull,
	},
	{
		name: "config: a DRA pool (values), with NRI",
		set: []string{"nri.enabled=true", "config.pools[0].name=vf", "config.pools[0].api=dra", "config.pools[0].mode=vfio",
			"config.pools[0].selectors.vendors[0]=15b3"},
		wantKinds:  []string{"ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet", "DeviceClass", "ServiceAccount"},
		containers: []string{"plugin", "nri"},
		binary:     binaryFull,
	},
	{
		name:       "plugin.binary=full without DRA pools",
		set:        []string{"plugin.binary=full"},
		wantKinds:  []string{"ConfigMap", "DaemonSet", "ServiceAccount"},
		containers: []string{"plugin"},
		binary:     binaryFull,
	},
	{
		name:       "plugin.binary=dp",
		set:        []string{"plugin.binary=dp"},
		wantKinds:  []string{"ConfigMap", "DaemonSet", "ServiceAccount"},
		containers: []string{"plugin"},
		binary:     binaryDP,
	},
}

// clusterScoped kinds have no namespace.
var clusterScoped = map[string]bool{"ClusterRole": true, "ClusterRoleBinding": true, "DeviceClass": true}

func TestChart(t *testing.T) {
	helm := helmBinary(t)
	cli := readCLIFacts(t)
	t.Logf("%s", bytes.TrimSpace(runHelm(t, helm, "version", "--short")))

	var defaultRender []object
	for _, v := range chartVariants {
		t.Run(v.name, func(t *testing.T) {
			var setArgs []string
			for _, s := range v.set {
				setArgs = append(setArgs, "--set", s)
			}
			for name, content := range v.files {
				f := filepath.Join(t.TempDir(), name)
				if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
				setArgs = append(setArgs, "--set-file", name+"="+f)
			}
			lint := append([]string{"lint", "--strict", "--kube-version", kubeVersion, chartDir}, setArgs...)
			runHelm(t, helm, lint...)

			tmpl := append([]string{"template", releaseName, chartDir, "--namespace", namespace, "--kube-version", kubeVersion}, setArgs...)
			out := runHelm(t, helm, tmpl...)
			objs, err := decodeStream("helm template ("+v.name+")", out)
			if err != nil {
				t.Fatal(err)
			}
			if got := kinds(objs); !slices.Equal(got, v.wantKinds) {
				t.Errorf("rendered kinds %v, want %v", got, v.wantKinds)
			}
			for _, o := range objs {
				if m, ok := o.obj.(metav1.Object); ok && m.GetNamespace() != namespace && !clusterScoped[o.gvk.Kind] {
					t.Errorf("%s: %s %q rendered into namespace %q, want the release's %q", o.source, o.gvk.Kind, m.GetName(), m.GetNamespace(), namespace)
				}
			}
			checkStream(t, objs, cli)
			t.Logf("pools: %v", configFrom(t, objs))
			for _, ds := range daemonSets(objs) {
				var names []string
				for _, c := range ds.Spec.Template.Spec.Containers {
					names = append(names, c.Name)
				}
				if !slices.Equal(names, v.containers) {
					t.Errorf("containers %v, want %v", names, v.containers)
				}
				for _, c := range ds.Spec.Template.Spec.Containers {
					if !slices.Equal(c.Command, []string{v.binary}) {
						t.Errorf("container %s: command %q, want [%s]", c.Name, c.Command, v.binary)
					}
				}
			}
			checkHostPathsDocumented(t, objs)
			if v.name == "default" {
				defaultRender = objs
			}
		})
	}

	t.Run("plain manifest matches the default chart", func(t *testing.T) {
		if defaultRender == nil {
			t.Skip("default render failed")
		}
		b, err := os.ReadFile(installFile)
		if err != nil {
			t.Fatal(err)
		}
		plain, err := decodeStream(installFile, b)
		if err != nil {
			t.Fatal(err)
		}
		pds, cds := daemonSets(plain), daemonSets(defaultRender)
		if len(pds) != 1 || len(cds) != 1 {
			t.Fatalf("want one DaemonSet each, have %d (plain) and %d (chart)", len(pds), len(cds))
		}
		if diff := cmp.Diff(cds[0].Spec.Template.Spec, pds[0].Spec.Template.Spec); diff != "" {
			t.Errorf("pod spec of %s differs from `helm template %s %s` (-chart +plain); render it with "+
				"`helm template %s deployments/%s -n %s --show-only templates/daemonset.yaml` and drop the helm labels:\n%s",
				installFile, releaseName, chartDir, releaseName, chartDir, namespace, diff)
		}
		if diff := cmp.Diff(cds[0].Spec.UpdateStrategy, pds[0].Spec.UpdateStrategy); diff != "" {
			t.Errorf("update strategy differs (-chart +plain):\n%s", diff)
		}
		for _, o := range defaultRender {
			cm, ok := o.obj.(*corev1.ConfigMap)
			if !ok {
				continue
			}
			for _, p := range plain {
				if pcm, ok := p.obj.(*corev1.ConfigMap); ok {
					var want, got any
					if err := yaml.Unmarshal([]byte(cm.Data["config.yaml"]), &want); err != nil {
						t.Fatal(err)
					}
					if err := yaml.Unmarshal([]byte(pcm.Data["config.yaml"]), &got); err != nil {
						t.Fatal(err)
					}
					if diff := cmp.Diff(want, got); diff != "" {
						t.Errorf("config.yaml of %s differs from the chart's default (-chart +plain):\n%s", installFile, diff)
					}
				}
			}
		}
	})

	t.Run("bad values fail to render", func(t *testing.T) {
		for _, c := range []struct{ set, want string }{
			{"nri.pluginIndex=7", "use two digits"},
			{"config=null", "set the pool configuration"},
			{"plugin.healthPort=notaport", "healthPort"},
			{"nodeselector.x=y", "nodeselector"},
			{"plugin.binary=slim", "binary"},
			{"plugin.binary=dp,config.pools[0].name=vf,config.pools[0].api=dra,config.pools[0].selectors.vendors[0]=15b3", "pools vf have api: dra"},
		} {
			args := []string{"template", releaseName, chartDir, "--kube-version", kubeVersion, "--set", c.set}
			out, err := exec.Command(helm, args...).CombinedOutput()
			if err == nil || !bytes.Contains(out, []byte(c.want)) {
				t.Errorf("helm %s: err %v, want an error saying %q:\n%.400s", strings.Join(args, " "), err, c.want, out)
			}
		}
	})
}
