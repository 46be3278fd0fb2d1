package vhostuser

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/sriov-cdi/sriov-cdi/core/config"
	"github.com/sriov-cdi/sriov-cdi/core/deviceinfo"
)

// MaxKeyLen bounds an allocation key (a file name component).
const MaxKeyLen = 128

// ErrBadKey is wrapped by every refusal of an allocation key.
var ErrBadKey = errors.New("invalid vhost-user allocation key")

var keyRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// ValidateKey checks that key is a plain name that cannot leave the base
// directory: letters, digits, '_', '-', '.', starting with a letter or
// digit, no "..", at most MaxKeyLen bytes.
func ValidateKey(key string) error {
	if len(key) > MaxKeyLen || !keyRE.MatchString(key) || strings.Contains(key, "..") {
		return fmt.Errorf("%w %q: want a plain name of letters, digits, '_', '-' and '.' (no \"..\", no '/'), at most %d bytes", ErrBadKey, key, MaxKeyLen)
	}
	return nil
}

// Layout says where the allocations of one pool (or DRA driver) live.
type Layout struct {
	// Resource names the variables (see config.VhostUserEnv); for DRA, the
	// driver's name.
	Resource string
	// BaseDir is the host directory holding the allocations' directories.
	BaseDir string
	// Prefix starts the name of every allocation directory in BaseDir
	// (config.VhostUserDirPrefix for a device-plugin pool).
	Prefix string
	// ContainerDir is the container directory under which each allocation
	// appears as ContainerDir/<key>.
	ContainerDir string
	// SocketName is the socket's file name in an allocation's directory.
	SocketName string
	// SocketMode is written into the device-info file.
	SocketMode config.VhostUserSocketMode
}

// LayoutFor is the layout of a device-plugin vhost-user pool. The pool
// must have passed config validation (mode vhost-user, defaults applied).
func LayoutFor(resource string, p *config.Pool) Layout {
	v := p.VhostUser
	return Layout{Resource: resource, BaseDir: v.BaseDir, Prefix: config.VhostUserDirPrefix(p.Name),
		ContainerDir: v.ContainerPath, SocketName: v.SocketName, SocketMode: v.SocketMode}
}

// Validate checks the layout itself (config validation checks the same
// for pools; a DRA front door builds its own).
func (l Layout) Validate() error {
	for _, d := range []struct{ field, v string }{{"base directory", l.BaseDir}, {"container directory", l.ContainerDir}} {
		if !filepath.IsAbs(d.v) || filepath.Clean(d.v) != d.v || d.v == "/" {
			return fmt.Errorf("vhost-user %s %q: want a clean absolute path other than /", d.field, d.v)
		}
	}
	if l.Prefix == "" || strings.ContainsAny(l.Prefix, "/\x00") || strings.HasPrefix(l.Prefix, ".") {
		return fmt.Errorf("vhost-user directory prefix %q: want a non-empty name part without '/' not starting with '.'", l.Prefix)
	}
	if l.SocketName == "" || strings.ContainsAny(l.SocketName, "/\x00") || l.SocketName == "." || l.SocketName == ".." {
		return fmt.Errorf("vhost-user socket name %q: want a plain file name", l.SocketName)
	}
	switch l.SocketMode {
	case config.SocketServer, config.SocketClient:
	default:
		return fmt.Errorf("vhost-user socket mode %q: want %q or %q", l.SocketMode, config.SocketServer, config.SocketClient)
	}
	return nil
}

// Allocation is what one allocation is on the host and in a container.
type Allocation struct {
	Key string
	// HostDir is BaseDir/<Prefix><Key>; HostSocket the socket in it (what
	// the switch uses).
	HostDir, HostSocket string
	// ContainerDir is ContainerDir/<Key>; ContainerSocket the socket in it
	// (what the application uses, and what device-info and Env carry).
	ContainerDir, ContainerSocket string
	// EnvName is the variable Edits set to ContainerSocket.
	EnvName string
	// Edits bind-mount HostDir at ContainerDir and set EnvName.
	Edits cdispec.ContainerEdits
	// DeviceInfo is the device-info file content (type "vhost-user").
	DeviceInfo deviceinfo.Info
}

// Describe returns the allocation of key, reading and writing nothing.
func (l Layout) Describe(key string) (Allocation, error) {
	if err := ValidateKey(key); err != nil {
		return Allocation{}, err
	}
	a := Allocation{Key: key, HostDir: filepath.Join(l.BaseDir, l.Prefix+key), ContainerDir: filepath.Join(l.ContainerDir, key)}
	a.HostSocket = filepath.Join(a.HostDir, l.SocketName)
	a.ContainerSocket = filepath.Join(a.ContainerDir, l.SocketName)
	a.EnvName = EnvName(l.Resource, key)
	a.Edits = cdispec.ContainerEdits{
		Env: []string{a.EnvName + "=" + a.ContainerSocket},
		// A plain bind mount of the directory: sockets created on either
		// side show on the other. No device nodes or executables belong
		// there.
		Mounts: []*cdispec.Mount{{HostPath: a.HostDir, ContainerPath: a.ContainerDir, Type: "bind",
			Options: []string{"rbind", "rw", "nosuid", "nodev", "noexec"}}},
	}
	a.DeviceInfo = deviceinfo.Info{Type: deviceinfo.TypeVhostUser, Version: deviceinfo.SpecVersion,
		VhostUser: &deviceinfo.VhostUser{Mode: string(l.SocketMode), Path: a.ContainerSocket}}
	return a, nil
}

// EnvName is the variable one allocation's CDI edits set to its socket
// path in the container: config.VhostUserEnv(resource) + "_" + the key
// upper-cased with every character outside [A-Z0-9] as '_'
// ("sriov-cdi.io/vhu", "slot-3" -> "SRIOV_CDI_VHOSTUSER_SRIOV_CDI_IO_VHU_SLOT_3").
func EnvName(resource, key string) string {
	b := []byte(strings.ToUpper(key))
	for i, c := range b {
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			b[i] = '_'
		}
	}
	return config.VhostUserEnv(resource) + "_" + string(b)
}
