package nri

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/nri/pkg/api"
	"google.golang.org/protobuf/proto"
	cdilib "tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/pkg/parser"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/sriov-cdi/sriov-cdi/cdi"
)

// Specs is what the plugin reads from the runtime's CDI spec directories:
// devices by name and specs by vendor. The CDI library's *cdi.Cache is one.
type Specs interface {
	cdi.Resolver
	GetVendorSpecs(vendor string) []*cdilib.Spec
}

var _ Specs = (*cdilib.Cache)(nil)

// Policy says whose cdi.k8s.io/* annotations the plugin acts on.
type Policy struct {
	// AllVendors applies the rules for our devices to every vendor's
	// (opt-in): any annotation the sandbox carries is removed, and any
	// whose devices' nodes and variables are in the container. By default
	// another vendor's annotation is removed only when each of its devices
	// is exactly in the container already (see Decide).
	AllVendors bool
}

// Ours reports whether kind ("<vendor>/<class>") is one of sriov-cdi's: a
// spec of that kind in specs was written by sriov-cdi, that is, its file is
// named cdi.SpecFileName(kind) (".json" or ".yaml"). The vendor alone says
// nothing (pools may keep another plugin's prefix, e.g. intel.com, which
// other vendors' device plugins also use), and the set follows the plugin's
// config as the writer adds and removes spec files.
func Ours(specs Specs, kind string) bool {
	if specs == nil {
		return false
	}
	name, err := cdi.SpecFileName(kind)
	if err != nil {
		return false
	}
	vendor, class, _ := cdi.KindOf(kind)
	stem := strings.TrimSuffix(name, ".json")
	for _, s := range specs.GetVendorSpecs(vendor) {
		if s.GetClass() != class {
			continue
		}
		if base := filepath.Base(s.GetPath()); base == stem+".json" || base == stem+".yaml" {
			return true
		}
	}
	return false
}

// Verdict is what happens to one cdi.k8s.io/* annotation, and why.
type Verdict struct {
	Key    string
	Reason string
}

// Conflict is a device path the container lists more than once with
// entries that differ (device numbers, type, mode or owner): not folded,
// not removed, only reported.
type Conflict struct {
	Path    string
	Entries []*api.LinuxDevice
}

// Decision is what the plugin does to a container at creation.
type Decision struct {
	// Remove are the annotations to remove, sorted by key.
	Remove []Verdict
	// Keep are the cdi.k8s.io/* annotations left alone, sorted by key.
	Keep []Verdict
	// Dedupe holds, for each device path listed more than once with
	// identical entries, the entry to keep (the first), sorted by path. A
	// runtime applies a device adjustment by removing the first entry with
	// its path and replacing the next one, so one adjustment folds two
	// entries into one.
	Dedupe []*api.LinuxDevice
	// Extra counts identical entries beyond the second of a path, which
	// one adjustment cannot remove.
	Extra int
	// Conflicts are the paths listed more than once with different
	// entries, sorted by path; left as they are.
	Conflicts []Conflict
}

// Empty reports whether the decision changes nothing.
func (d Decision) Empty() bool { return len(d.Remove) == 0 && len(d.Dedupe) == 0 }

// Adjustment is the NRI container adjustment of the decision, nil when it
// changes nothing.
func (d Decision) Adjustment() *api.ContainerAdjustment {
	if d.Empty() {
		return nil
	}
	adj := &api.ContainerAdjustment{}
	for _, r := range d.Remove {
		adj.RemoveAnnotation(r.Key)
	}
	for _, dev := range d.Dedupe {
		adj.AddDevice(dev)
	}
	return adj
}

const sandboxReason = "the pod sandbox carries it: its devices were cold-plugged with the sandbox"

// Decide applies the plugin's rule to a container being created in pod,
// with specs (which may be nil) to resolve devices and tell ours:
//
//   - an annotation whose devices are all ours (Ours, or every vendor's
//     with p.AllVendors) is removed when the sandbox carries it with the
//     same value, or when each device's nodes and variables are already in
//     the container (cdi.Contents.Has);
//   - an annotation naming another vendor's device is removed only when
//     each such device is exactly in the container: its nodes (by path,
//     with the type and numbers its spec pins, listed without conflict),
//     variables, mounts and additional groups, and it has nothing this
//     plugin cannot check (hooks, Intel RDT, network devices);
//   - a malformed annotation is kept (with the reason), unless the sandbox
//     carries it and p.AllVendors: this plugin must never be the one that
//     fails a container, and nothing says it is ours;
//   - a device path listed more than once with identical entries is
//     folded; with different entries it is a Conflict, left alone.
func Decide(pod *api.PodSandbox, ctr *api.Container, specs Specs, p Policy) Decision {
	var d Decision
	if ctr == nil {
		return d
	}
	var linuxDevices []*api.LinuxDevice
	if ctr.Linux != nil {
		linuxDevices = ctr.Linux.Devices
	}
	byPath := map[string][]*api.LinuxDevice{}
	var paths []string
	for _, dev := range linuxDevices {
		if _, seen := byPath[dev.Path]; !seen {
			paths = append(paths, dev.Path)
		}
		byPath[dev.Path] = append(byPath[dev.Path], dev)
	}
	in := container{have: cdi.ContentsOf(paths, ctr.Env), devices: byPath, ctr: ctr}
	ours := func(kind string) bool { return p.AllVendors || Ours(specs, kind) }

	keys := make([]string, 0, len(ctr.Annotations))
	for k := range ctr.Annotations {
		if strings.HasPrefix(k, cdi.AnnotationPrefix) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := ctr.Annotations[k]
		pv, onPod := pod.GetAnnotations()[k]
		carried := onPod && pv == v
		reqs, err := cdi.ParseAnnotations(map[string]string{k: v})
		if err != nil {
			if carried && p.AllVendors {
				d.Remove = append(d.Remove, Verdict{k, sandboxReason})
			} else {
				d.Keep = append(d.Keep, Verdict{k, err.Error()})
			}
			continue
		}
		names := reqs[0].Devices
		allOurs := true
		for _, n := range names {
			allOurs = allOurs && ours(kindOf(n))
		}
		if carried && allOurs {
			d.Remove = append(d.Remove, Verdict{k, sandboxReason})
			continue
		}
		if reason := in.missing(names, specs, ours); reason != "" {
			d.Keep = append(d.Keep, Verdict{k, reason})
			continue
		}
		d.Remove = append(d.Remove, Verdict{k, "its devices are already in the container: " + v})
	}

	for _, path := range paths {
		entries := byPath[path]
		if len(entries) < 2 {
			continue
		}
		if identical(entries) {
			d.Dedupe = append(d.Dedupe, entries[0])
			d.Extra += len(entries) - 2
		} else {
			d.Conflicts = append(d.Conflicts, Conflict{Path: path, Entries: entries})
		}
	}
	slices.SortFunc(d.Dedupe, func(a, b *api.LinuxDevice) int { return strings.Compare(a.Path, b.Path) })
	slices.SortFunc(d.Conflicts, func(a, b Conflict) int { return strings.Compare(a.Path, b.Path) })
	return d
}

// kindOf is the "<vendor>/<class>" of a qualified device name that parsed.
func kindOf(name string) string {
	vendor, class, _, _ := parser.ParseQualifiedName(name)
	return vendor + "/" + class
}

func identical(entries []*api.LinuxDevice) bool {
	for _, e := range entries[1:] {
		if !proto.Equal(entries[0], e) {
			return false
		}
	}
	return true
}

// container is what a container has, indexed.
type container struct {
	have    cdi.Contents
	devices map[string][]*api.LinuxDevice
	ctr     *api.Container
}

// missing says why not every device is already in the container (exactly,
// for another vendor's), or "".
func (c container) missing(names []string, specs Specs, ours func(string) bool) string {
	if specs == nil {
		return "no CDI cache to look its devices up in"
	}
	for _, n := range names {
		dev := specs.GetDevice(n)
		if dev == nil {
			return fmt.Sprintf("device %q is in no CDI spec", n)
		}
		if ours(kindOf(n)) {
			if !c.have.Has(&dev.ContainerEdits) {
				return fmt.Sprintf("device %q is not in the container yet", n)
			}
			continue
		}
		if !c.have.Has(&dev.ContainerEdits) {
			return fmt.Sprintf("device %q is not ours and not in the container yet", n)
		}
		if why := c.inexact(&dev.ContainerEdits); why != "" {
			return fmt.Sprintf("device %q is not ours and not exactly in the container: %s", n, why)
		}
	}
	return ""
}

// inexact says how edits whose nodes and variables the container has
// (Contents.Has) still differ from what it has, or cannot be checked.
func (c container) inexact(e *cdispec.ContainerEdits) string {
	switch {
	case len(e.Hooks) > 0:
		return "its hooks cannot be checked"
	case e.IntelRdt != nil:
		return "its Intel RDT settings cannot be checked"
	case len(e.NetDevices) > 0:
		return "its network devices cannot be checked"
	}
	for _, n := range e.DeviceNodes {
		entries := c.devices[n.Path]
		if len(entries) == 0 {
			return fmt.Sprintf("%q is not in the container", n.Path)
		}
		if !identical(entries) {
			return fmt.Sprintf("%q is listed with conflicting entries", n.Path)
		}
		got := entries[0]
		pinned := n.Major != 0 || n.Minor != 0
		if (n.Type != "" && n.Type != got.Type) || (pinned && (n.Major != got.Major || n.Minor != got.Minor)) {
			return fmt.Sprintf("%q is %s %d:%d, its spec says %s %d:%d", n.Path, got.Type, got.Major, got.Minor, n.Type, n.Major, n.Minor)
		}
	}
	for _, m := range e.Mounts {
		if !slices.ContainsFunc(c.ctr.Mounts, func(cm *api.Mount) bool {
			return cm.Destination == m.ContainerPath && cm.Source == m.HostPath
		}) {
			return fmt.Sprintf("mount %q is not in the container", m.ContainerPath)
		}
	}
	for _, g := range e.AdditionalGIDs {
		if !slices.Contains(c.ctr.GetUser().GetAdditionalGids(), g) {
			return fmt.Sprintf("additional group %d is not in the container", g)
		}
	}
	return ""
}
