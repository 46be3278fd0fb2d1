// Package nri is an NRI plugin (github.com/containerd/nri) for containerd
// 2.x and CRI-O that stops a CDI device from being injected twice into a
// Kata container.
//
// With containerd's pod_annotations = ["cdi.k8s.io/*"], a pod's CDI
// annotations are copied into every container's OCI spec, where the Kata
// shim reads them and injects the devices again, although the sandbox
// already cold-plugged them and containerd already injected the container's
// own devices from the CRI device list. CDI injection happens before NRI, so
// at CreateContainer this plugin sees the final device list and removes:
//
//   - each cdi.k8s.io/* annotation naming only our devices that the pod
//     sandbox also carries (the devices were cold-plugged with the
//     sandbox), or whose devices are all already in the container
//     (cdi.Contents.Has). Ours are the kinds whose spec file sriov-cdi wrote
//     (Ours: the file is named cdi.SpecFileName(kind)), read from the same
//     spec directories the runtime reads, so the set follows the config;
//   - another vendor's annotation only when each of its devices is exactly
//     in the container already (nodes with the numbers its spec pins,
//     variables, mounts). Policy.AllVendors (opt-in) treats every vendor's
//     annotations like ours;
//   - identical duplicate device entries (same path, same entry). Entries
//     for one path that differ (another major:minor, mode or owner) are a
//     Conflict: logged, left as they are.
//
// Decide is the whole decision, a pure function; the Plugin only logs and
// returns it. The plugin never adds anything, never touches the sandbox
// (NRI cannot adjust it, and its annotations are what cold-plug reads) and
// cannot undo an injection that already happened; it only prevents the
// second one downstream.
package nri
