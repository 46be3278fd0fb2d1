package nri

import (
	"fmt"
	"slices"
	"strings"

	"github.com/containerd/nri/pkg/api"

	"github.com/sriov-cdi/sriov-cdi/cdi"
)

// Verdict is what happens to one cdi.k8s.io/* annotation, and why.
type Verdict struct {
	Key    string
	Reason string
}

// Decision is what the plugin does to a container at creation.
type Decision struct {
	// Remove are the annotations to remove, sorted by key.
	Remove []Verdict
	// Keep are the cdi.k8s.io/* annotations left alone, sorted by key.
	Keep []Verdict
	// Dedupe holds, for each device path listed more than once, the entry
	// to keep (the first), sorted by path. A runtime applies a device
	// adjustment by removing the first entry with its path and replacing
	// the next one, so one adjustment folds two entries into one.
	Dedupe []*api.LinuxDevice
	// Extra counts entries beyond the second of a path, which one
	// adjustment cannot remove.
	Extra int
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

// Decide applies the plugin's rule to a container being created in pod:
// remove each cdi.k8s.io/* annotation that the sandbox carries with the
// same value, or whose devices (resolved through devices, which may be nil)
// are all already in the container; keep the rest; fold duplicate device
// entries. A malformed annotation is kept (with the reason): this plugin
// must never be the one that fails a container.
func Decide(pod *api.PodSandbox, ctr *api.Container, devices cdi.Resolver) Decision {
	var d Decision
	if ctr == nil {
		return d
	}
	var paths []string
	var linuxDevices []*api.LinuxDevice
	if ctr.Linux != nil {
		linuxDevices = ctr.Linux.Devices
	}
	for _, dev := range linuxDevices {
		paths = append(paths, dev.Path)
	}
	have := cdi.ContentsOf(paths, ctr.Env)

	keys := make([]string, 0, len(ctr.Annotations))
	for k := range ctr.Annotations {
		if strings.HasPrefix(k, cdi.AnnotationPrefix) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := ctr.Annotations[k]
		if pod != nil && pod.Annotations != nil {
			if pv, ok := pod.Annotations[k]; ok && pv == v {
				d.Remove = append(d.Remove, Verdict{k, "the pod sandbox carries it: its devices were cold-plugged with the sandbox"})
				continue
			}
		}
		reqs, err := cdi.ParseAnnotations(map[string]string{k: v})
		if err != nil {
			d.Keep = append(d.Keep, Verdict{k, err.Error()})
			continue
		}
		if reason := missing(reqs[0].Devices, devices, have); reason != "" {
			d.Keep = append(d.Keep, Verdict{k, reason})
			continue
		}
		d.Remove = append(d.Remove, Verdict{k, "its devices are already in the container: " + v})
	}

	count := map[string]int{}
	for _, dev := range linuxDevices {
		count[dev.Path]++
		if count[dev.Path] == 2 {
			d.Dedupe = append(d.Dedupe, dev)
		}
	}
	for i, dev := range d.Dedupe {
		for _, first := range linuxDevices {
			if first.Path == dev.Path {
				d.Dedupe[i] = first
				break
			}
		}
		d.Extra += count[dev.Path] - 2
	}
	slices.SortFunc(d.Dedupe, func(a, b *api.LinuxDevice) int { return strings.Compare(a.Path, b.Path) })
	return d
}

// missing says why not every device is already in the container, or "".
func missing(names []string, devices cdi.Resolver, have cdi.Contents) string {
	if devices == nil {
		return "no CDI cache to look its devices up in"
	}
	for _, n := range names {
		dev := devices.GetDevice(n)
		if dev == nil {
			return fmt.Sprintf("device %q is in no CDI spec", n)
		}
		if !have.Has(&dev.ContainerEdits) {
			return fmt.Sprintf("device %q is not in the container yet", n)
		}
	}
	return ""
}
