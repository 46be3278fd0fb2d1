package cdi

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	rspec "github.com/opencontainers/runtime-spec/specs-go"
	cdilib "tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/pkg/parser"
	cdispec "tags.cncf.io/container-device-interface/specs-go"
)

// AnnotationPrefix starts the key of every CDI device request annotation.
const AnnotationPrefix = cdilib.AnnotationPrefix

// ErrUnresolvable is wrapped by InjectOnce's error when a requested device
// is in no spec of the cache.
var ErrUnresolvable = errors.New("unresolvable CDI device")

// Resolver finds a CDI device by its qualified name; *cdi.Cache of the CDI
// library is one.
type Resolver interface {
	GetDevice(qualifiedName string) *cdilib.Device
}

// Injector also injects devices into an OCI spec; *cdi.Cache is one.
type Injector interface {
	Resolver
	InjectDevices(spec *rspec.Spec, qualifiedNames ...string) ([]string, error)
}

var _ Injector = (*cdilib.Cache)(nil)

// AnnotationRequest is one cdi.k8s.io/* annotation and the devices its
// value names.
type AnnotationRequest struct {
	Key     string
	Devices []string
}

// ParseAnnotations returns the CDI device requests among annotations,
// sorted by key. It accepts what the CDI library's ParseAnnotations
// accepts (the value is a comma-separated list of qualified device names,
// nothing else) and, unlike it, keeps which key asked for which device and
// returns them in a stable order.
func ParseAnnotations(annotations map[string]string) ([]AnnotationRequest, error) {
	var out []AnnotationRequest
	for k, v := range annotations {
		if !strings.HasPrefix(k, AnnotationPrefix) {
			continue
		}
		r := AnnotationRequest{Key: k}
		for d := range strings.SplitSeq(v, ",") {
			if _, _, _, err := parser.ParseQualifiedName(d); err != nil {
				return nil, fmt.Errorf("annotation %q: %q is not a qualified CDI device name (<vendor>/<class>=<device>): %w", k, d, err)
			}
			r.Devices = append(r.Devices, d)
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b AnnotationRequest) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// Contents is what a container already has, to tell whether a device's
// edits are already applied.
type Contents struct {
	paths map[string]bool
	env   map[string]bool
}

// ContentsOf indexes a container's device node paths and "KEY=value"
// environment.
func ContentsOf(devicePaths, env []string) Contents {
	c := Contents{paths: make(map[string]bool, len(devicePaths)), env: make(map[string]bool, len(env))}
	for _, p := range devicePaths {
		c.paths[p] = true
	}
	for _, e := range env {
		c.env[e] = true
	}
	return c
}

// ContentsOfSpec indexes an OCI spec.
func ContentsOfSpec(s *rspec.Spec) Contents {
	var paths, env []string
	if s.Linux != nil {
		for _, d := range s.Linux.Devices {
			paths = append(paths, d.Path)
		}
	}
	if s.Process != nil {
		env = s.Process.Env
	}
	return ContentsOf(paths, env)
}

// Has reports whether a device's own edits are already applied: it has at
// least one device node or variable, every one of its device nodes is
// present (by container path) and every one of its variables is set to its
// value. Edits without nodes or variables cannot be recognised and are
// reported absent. Spec-wide edits are not part of a device and are not
// looked at.
func (c Contents) Has(e *cdispec.ContainerEdits) bool {
	if e == nil || len(e.DeviceNodes)+len(e.Env) == 0 {
		return false
	}
	for _, n := range e.DeviceNodes {
		if !c.paths[n.Path] {
			return false
		}
	}
	for _, v := range e.Env {
		if !c.env[v] {
			return false
		}
	}
	return true
}

// Injection is what InjectOnce did.
type Injection struct {
	// Injected are the devices injected now, in request order.
	Injected []string
	// Present are requested devices whose edits the spec already had.
	Present []string
	// RemovedAnnotations are the cdi.k8s.io/* keys removed, sorted.
	RemovedAnnotations []string
}

// InjectOnce injects into spec each CDI device requested by devices (the
// CRI device list) or by a cdi.k8s.io/* annotation of spec, exactly once:
// a device named several times is injected once, and a device whose edits
// the spec already has (see Contents.Has) is not injected again. Then it
// removes the cdi.k8s.io/* annotations, all of them satisfied, so nothing
// downstream (a Kata shim re-reading annotations) injects them again.
//
// On any error, a malformed annotation, a device no spec of the cache
// defines (wrapping ErrUnresolvable, naming each device and who asked for
// it) or a failed injection, spec is left exactly as it was.
func InjectOnce(spec *rspec.Spec, devices []string, inj Injector) (*Injection, error) {
	if spec == nil {
		return nil, errors.New("inject CDI devices: nil OCI spec")
	}
	reqs, err := ParseAnnotations(spec.Annotations)
	if err != nil {
		return nil, fmt.Errorf("inject CDI devices: %w", err)
	}
	var order []string
	from := map[string][]string{}
	add := func(name, who string) {
		if _, seen := from[name]; !seen {
			order = append(order, name)
		}
		from[name] = append(from[name], who)
	}
	for _, d := range devices {
		if _, _, _, err := parser.ParseQualifiedName(d); err != nil {
			return nil, fmt.Errorf("inject CDI devices: %q in the device list is not a qualified CDI device name: %w", d, err)
		}
		add(d, "the device list")
	}
	for _, r := range reqs {
		for _, d := range r.Devices {
			add(d, "annotation "+r.Key)
		}
	}

	var unresolved []string
	resolved := make(map[string]*cdilib.Device, len(order))
	for _, name := range order {
		d := inj.GetDevice(name)
		if d == nil {
			unresolved = append(unresolved, fmt.Sprintf("%q (requested by %s)", name, strings.Join(from[name], ", ")))
			continue
		}
		resolved[name] = d
	}
	if len(unresolved) > 0 {
		return nil, fmt.Errorf("inject CDI devices: %w %s: no CDI spec defines it", ErrUnresolvable, strings.Join(unresolved, ", "))
	}

	res := &Injection{}
	have := ContentsOfSpec(spec)
	for _, name := range order {
		if have.Has(&resolved[name].ContainerEdits) {
			res.Present = append(res.Present, name)
		} else {
			res.Injected = append(res.Injected, name)
		}
	}
	if len(res.Injected) > 0 {
		work, err := deepCopy(spec)
		if err != nil {
			return nil, fmt.Errorf("inject CDI devices: copy the OCI spec: %w", err)
		}
		if _, err := inj.InjectDevices(work, res.Injected...); err != nil {
			return nil, fmt.Errorf("inject CDI devices %s: %w", strings.Join(res.Injected, ", "), err)
		}
		*spec = *work
	}
	for _, r := range reqs {
		delete(spec.Annotations, r.Key)
		res.RemovedAnnotations = append(res.RemovedAnnotations, r.Key)
	}
	return res, nil
}

func deepCopy(s *rspec.Spec) (*rspec.Spec, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	out := &rspec.Spec{}
	return out, json.Unmarshal(b, out)
}
