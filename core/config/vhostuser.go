package config

import (
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// VhostUserSocketMode says which side creates a vhost-user socket, as the
// device-info specification (v1.1.0, "vhost-user".mode) defines it.
type VhostUserSocketMode string

const (
	// SocketServer: the application in the container creates the socket,
	// the host switch attaches to it.
	SocketServer VhostUserSocketMode = "server"
	// SocketClient: the host switch creates the socket, the application in
	// the container attaches to it.
	SocketClient VhostUserSocketMode = "client"
)

// Defaults and limits of a vhost-user pool.
const (
	// MaxVhostUserSlots caps vhostUser.count: a switch with more ports than
	// this per node is not a real one, and each slot is a device kubelet
	// lists.
	MaxVhostUserSlots = 1024
	// DefaultVhostUserContainerDir is where the slots' directories appear
	// in a container: each slot at <containerPath>/<slot ID>.
	DefaultVhostUserContainerDir = "/var/run/vhost-user"
	// DefaultVhostUserSocketName is the socket's file name in a slot's
	// directory, as written into the device-info file and the env.
	DefaultVhostUserSocketName = "vhost.sock"
	// DefaultVhostUserPermissions is the directory mode: owner and group
	// may create and reach sockets, others nothing.
	DefaultVhostUserPermissions = "0770"
)

// VhostUser configures a pool of vhost-user socket directories: count
// slots per node (the switch's port capacity). Allocating a slot creates
// its own directory under BaseDir on the host, which the CDI device of the
// slot mounts at <ContainerDir>/<slot ID> in the container; releasing it
// removes the directory and everything in it.
type VhostUser struct {
	// Count is the number of slots (1 to MaxVhostUserSlots).
	Count int `json:"count"`
	// BaseDir is the host directory under which slot directories are
	// created (absolute, must exist; the switch reaches sockets there).
	BaseDir string `json:"baseDir"`
	// ContainerPath is the directory in the container under which each
	// allocated slot appears as <containerPath>/<slot ID>. Default
	// DefaultVhostUserContainerDir.
	ContainerPath string `json:"containerPath,omitempty"`
	// SocketName is the socket's file name in a slot's directory (default
	// DefaultVhostUserSocketName); it is what the device-info file and the
	// env point at.
	SocketName string `json:"socketName,omitempty"`
	// SocketMode: "server" (default: the container creates the socket) or
	// "client" (the switch creates it).
	SocketMode VhostUserSocketMode `json:"socketMode,omitempty"`
	// Owner is "uid:gid" (numbers) given to each slot directory; empty:
	// the plugin's own (root).
	Owner string `json:"owner,omitempty"`
	// Permissions is the slot directory's mode as a quoted octal string
	// (default "0770"); at most "0777" (no setuid/setgid/sticky).
	Permissions string `json:"permissions,omitempty"`
	// SELinuxLabel, when set, labels each slot directory (the
	// security.selinux extended attribute), e.g.
	// "system_u:object_r:container_file_t:s0".
	SELinuxLabel string `json:"selinuxLabel,omitempty"`
	// NUMANode is the switch's NUMA node: the slots' topology hint for
	// kubelet and preferred allocation. Default -1 (none).
	NUMANode *int `json:"numaNode,omitempty"`
}

func (v *VhostUser) applyDefaults() {
	if v == nil {
		return
	}
	if v.ContainerPath == "" {
		v.ContainerPath = DefaultVhostUserContainerDir
	}
	if v.SocketName == "" {
		v.SocketName = DefaultVhostUserSocketName
	}
	if v.SocketMode == "" {
		v.SocketMode = SocketServer
	}
	if v.Permissions == "" {
		v.Permissions = DefaultVhostUserPermissions
	}
	if v.NUMANode == nil {
		n := -1
		v.NUMANode = &n
	}
}

// VhostUserSlotID is the device ID of slot i of a vhost-user pool: what
// kubelet lists and the CDI device name ("slot-0", "slot-1", ...).
func VhostUserSlotID(i int) string { return "slot-" + strconv.Itoa(i) }

// ParseVhostUserSlotID returns the slot number of a slot ID, or false.
func ParseVhostUserSlotID(id string) (int, bool) {
	rest, ok := strings.CutPrefix(id, "slot-")
	if !ok || rest == "" || (len(rest) > 1 && rest[0] == '0') {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 0 || strconv.Itoa(n) != rest {
		return 0, false
	}
	return n, true
}

// VhostUserDirPrefix starts the host directory name of every slot of a
// device-plugin vhost-user pool: "sriov-cdi.<pool>." (the slot ID
// follows). Only directories with the prefix of a pool are ever created or
// removed for it, so pools may share a base directory with each other and
// with foreign files.
func VhostUserDirPrefix(poolName string) string { return "sriov-cdi." + poolName + "." }

// VhostUserDRADirPrefix starts the host directory name of every
// allocation of a DRA vhost-user pool: "sriov-cdi-dra.<pool>." (then
// "<claim UID>-<slot ID>"). It never starts like a device-plugin pool's
// prefix, so neither front door's reconcile touches the other's.
func VhostUserDRADirPrefix(poolName string) string { return "sriov-cdi-dra." + poolName + "." }

// claimUIDLen is the length of a Kubernetes UID (a UUID), for path limits.
const claimUIDLen = 36

// VhostUserEnv is the variable a container's Allocate answer sets to the
// comma-separated socket paths (inside the container) of the slots of a
// resource it got: "SRIOV_CDI_VHOSTUSER_" + resource with every character
// outside [A-Z0-9] as '_' ("sriov-cdi.io/vhu" ->
// "SRIOV_CDI_VHOSTUSER_SRIOV_CDI_IO_VHU"). Each slot's CDI device also
// sets VhostUserEnv(resource)+"_"+<slot ID as a word> to its own socket.
func VhostUserEnv(resource string) string { return "SRIOV_CDI_VHOSTUSER_" + envWordAll(resource) }

// envWordAll upper-cases s and turns every character outside [A-Z0-9]
// into '_'.
func envWordAll(s string) string {
	b := []byte(strings.ToUpper(s))
	for i, c := range b {
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

var (
	ownerRE  = regexp.MustCompile(`^[0-9]{1,10}:[0-9]{1,10}$`)
	octalRE  = regexp.MustCompile(`^0?[0-7]{3}$`)
	sockName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)
)

// ParseOwner splits "uid:gid"; ok is false for an empty or malformed one.
func ParseOwner(s string) (uid, gid int, ok bool) {
	if !ownerRE.MatchString(s) {
		return -1, -1, false
	}
	u, g, _ := strings.Cut(s, ":")
	uid, err1 := strconv.Atoi(u)
	gid, err2 := strconv.Atoi(g)
	if err1 != nil || err2 != nil || uid > 1<<31-2 || gid > 1<<31-2 {
		return -1, -1, false
	}
	return uid, gid, true
}

// ParsePermissions reads an octal mode string such as "0770".
func ParsePermissions(s string) (uint32, bool) {
	if !octalRE.MatchString(s) {
		return 0, false
	}
	v, err := strconv.ParseUint(s, 8, 32)
	return uint32(v), err == nil
}

// validateVhostUser checks the vhost-user fields of pool p (at is its
// place in the file).
func (c *Config) validateVhostUser(at string, p *Pool, bad func(string, ...any)) {
	if p.Mode != ModeVhostUser {
		if p.VhostUser != nil {
			bad("%s.vhostUser: only vhost-user pools have it (set mode: vhost-user, or remove vhostUser)", at)
		}
		return
	}
	if c.Legacy {
		bad("%s: the SR-IOV network device plugin format has no vhost-user pools; write the config in sriov-cdi's format", at)
		return
	}
	for _, f := range []struct {
		set   bool
		field string
	}{
		{p.BindAt != "", "bindAt"}, {len(p.AllowUnbindFrom) > 0, "allowUnbindFrom"}, {p.RestoreOnRelease, "restoreOnRelease"},
		{p.IOMMUFD, "iommufd"}, {p.RDMA, "rdma"}, {p.VhostNet, "vhostNet"}, {p.DeviceNodes, "deviceNodes"},
		{len(p.Selectors) > 0, "selectors"},
	} {
		if f.set {
			bad("%s.%s: a vhost-user pool hands out socket directories, not PCI functions; remove %s", at, f.field, f.field)
		}
	}
	v := p.VhostUser
	if v == nil {
		bad("%s.vhostUser: missing; a vhost-user pool needs at least {count: N, baseDir: /host/dir}", at)
		return
	}
	at += ".vhostUser"
	if v.Count < 1 || v.Count > MaxVhostUserSlots {
		bad("%s.count: %d is out of range; give the switch's port capacity on one node, 1 to %d", at, v.Count, MaxVhostUserSlots)
	}
	checkDir := func(field, dir string) bool {
		switch {
		case dir == "":
			bad("%s.%s: missing; give an absolute directory", at, field)
		case !filepath.IsAbs(dir):
			bad("%s.%s: %q is not an absolute path", at, field, dir)
		case filepath.Clean(dir) != dir || strings.Contains(dir, "/../") || strings.HasSuffix(dir, "/.."):
			bad("%s.%s: %q is not clean (no \"..\", \".\", \"//\" or trailing \"/\"); write it as %q", at, field, dir, filepath.Clean(dir))
		case dir == "/":
			bad("%s.%s: \"/\" is not a usable directory; give a directory of its own", at, field)
		default:
			return true
		}
		return false
	}
	baseOK := checkDir("baseDir", v.BaseDir)
	ctrOK := checkDir("containerPath", v.ContainerPath)
	nameOK := true
	if !sockName.MatchString(v.SocketName) || len(v.SocketName) > 64 {
		bad("%s.socketName: %q is not a plain file name (letters, digits, '_', '-', '.'; no '/'; at most 64 bytes)", at, v.SocketName)
		nameOK = false
	}
	switch v.SocketMode {
	case SocketServer, SocketClient:
	default:
		bad("%s.socketMode: %q is not a socket mode; use \"server\" (the container creates the socket) or \"client\" (the switch does)", at, v.SocketMode)
	}
	if v.Owner != "" {
		if _, _, ok := ParseOwner(v.Owner); !ok {
			bad("%s.owner: %q is not \"uid:gid\" with numeric IDs (e.g. \"107:107\")", at, v.Owner)
		}
	}
	if _, ok := ParsePermissions(v.Permissions); !ok {
		bad("%s.permissions: %q is not an octal mode of at most 0777 written as a quoted string (e.g. \"0770\")", at, v.Permissions)
	}
	if strings.ContainsAny(v.SELinuxLabel, "\x00\n") {
		bad("%s.selinuxLabel: %q contains a NUL or newline", at, v.SELinuxLabel)
	}
	if v.NUMANode != nil && *v.NUMANode < -1 {
		bad("%s.numaNode: %d is not a NUMA node (use -1 for \"none\")", at, *v.NUMANode)
	}
	if p.Name == "" || !nameOK || v.Count < 1 || v.Count > MaxVhostUserSlots {
		return
	}
	last := VhostUserSlotID(v.Count - 1)
	if baseOK {
		dir, why := VhostUserDirPrefix(p.Name)+last, ""
		if p.API == APIDRA {
			dir = VhostUserDRADirPrefix(p.Name) + strings.Repeat("u", claimUIDLen) + "-" + last
			why = " (a DRA pool's directory name carries the claim's 36-byte UID)"
		}
		if sock := v.BaseDir + "/" + dir + "/" + v.SocketName; len(sock) > MaxSocketPath {
			bad("%s.baseDir: the host socket path %s is %d bytes, over the %d a unix socket path holds%s; shorten baseDir, the pool name or socketName", at, sock, len(sock), MaxSocketPath, why)
		}
	}
	if ctrOK {
		if sock := v.ContainerPath + "/" + last + "/" + v.SocketName; len(sock) > MaxSocketPath {
			bad("%s.containerPath: the container socket path %s is %d bytes, over the %d a unix socket path holds; shorten containerPath or socketName", at, sock, len(sock), MaxSocketPath)
		}
	}
}
