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
//   - each cdi.k8s.io/* annotation the pod sandbox also carries (the sandbox
//     has it: the devices were cold-plugged with the sandbox), and each one
//     whose devices are all already in the container (cdi.Contents.Has);
//   - duplicate device entries (same container path).
//
// Decide is the whole decision, a pure function; the Plugin only logs and
// returns it. The plugin never adds anything, never touches the sandbox
// (NRI cannot adjust it, and its annotations are what cold-plug reads) and
// cannot undo an injection that already happened; it only prevents the
// second one downstream.
package nri
