// Package version holds the build's version, set by the linker
// (-X github.com/sriov-cdi/sriov-cdi/cmd/internal/version.Version=...).
package version

import "runtime/debug"

// Version is the release or git description of this build.
var Version = ""

// String returns Version, or the module version recorded by the Go
// toolchain, or "dev".
func String() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
