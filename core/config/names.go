package config

import (
	"fmt"
	"strings"

	"tags.cncf.io/container-device-interface/pkg/parser"
)

// The names a resource is known by outside kubelet's API are derived here,
// once: the plugin names its socket with SocketName, Allocate and the CDI
// specs set PCIDeviceEnv and PCIResourceEnv, and Validate refuses pools
// whose names collide after this mangling.

// SocketName is the file name of a resource's device plugin socket in
// kubelet's device plugin directory: unique per resource after mangling
// (Validate checks) and recognisably ours.
func SocketName(resource string) string {
	return "sriov-cdi-" + strings.NewReplacer("/", "_", ".", "_").Replace(resource) + ".sock"
}

// KubeletDevicePluginDir is where kubelet looks for device plugin sockets
// (fixed in kubelet).
const KubeletDevicePluginDir = "/var/lib/kubelet/device-plugins/"

// MaxSocketPath is the longest unix socket path Linux accepts (sun_path is
// 108 bytes with its terminating NUL).
const MaxSocketPath = 107

// PCIDeviceEnv is the variable the SR-IOV network device plugin sets for a
// resource: "PCIDEVICE_" + resource, upper-cased, '.' and '/' as '_' and
// '-' kept, as that plugin and KubeVirt do ("sriov-cdi.io/vf" ->
// "PCIDEVICE_SRIOV-CDI_IO_VF"; a name with '-' is not a shell variable).
func PCIDeviceEnv(resource string) string {
	return "PCIDEVICE_" + envResource(resource)
}

// PCIResourceEnv is the variable KubeVirt reads for a resource when
// externalResourceProvider is set: "PCI_RESOURCE_" + resource, mangled as
// in PCIDeviceEnv.
func PCIResourceEnv(resource string) string {
	return "PCI_RESOURCE_" + envResource(resource)
}

func envResource(resource string) string {
	return strings.ToUpper(strings.NewReplacer(".", "_", "/", "_").Replace(resource))
}

// manglingIndex finds pools whose resources differ but whose socket or
// variable names are equal after mangling: kubelet would reach one server
// for both resources (the second server removes the first's socket), and a
// container asking for both would see one variable.
type manglingIndex struct {
	sockets, envs map[string]int // name -> pool index
}

func newManglingIndex() *manglingIndex {
	return &manglingIndex{sockets: map[string]int{}, envs: map[string]int{}}
}

// check records pool i and reports a collision with an earlier pool, one
// problem per pair naming what is shared.
func (m *manglingIndex) check(c *Config, i int, bad func(string, ...any)) {
	p := &c.Pools[i]
	res := c.Resource(p)
	shared := map[int][]string{}
	var order []int
	note := func(j int, what string) {
		if _, ok := shared[j]; !ok {
			order = append(order, j)
		}
		shared[j] = append(shared[j], what)
	}
	sock := SocketName(res)
	if j, ok := m.sockets[sock]; ok {
		note(j, fmt.Sprintf("the device plugin socket %q (kubelet would reach one server for both)", sock))
	} else {
		m.sockets[sock] = i
	}
	env := PCIDeviceEnv(res)
	if j, ok := m.envs[env]; ok {
		note(j, fmt.Sprintf("the variables %q and %q (a container asking for both would see one list)", env, PCIResourceEnv(res)))
	} else {
		m.envs[env] = i
	}
	for _, j := range order {
		q := &c.Pools[j]
		bad("%s.%s: resource %q collides with %s (resource %q) after mangling: both get %s; rename one pool",
			c.poolAt(i), c.nameField(), res, c.poolAt(j), c.Resource(q), strings.Join(shared[j], " and "))
	}
}

// poolAt names pool i in messages as the file does: pools[i], or
// resourceList[i] in an SR-IOV network device plugin config, and the name
// when set.
func (c *Config) poolAt(i int) string {
	list := "pools"
	if c.Legacy {
		list = "resourceList"
	}
	if c.Pools[i].Name == "" {
		return fmt.Sprintf("%s[%d]", list, i)
	}
	return fmt.Sprintf("%s[%d] (%q)", list, i, c.Pools[i].Name)
}

// nameField is the field that holds a pool's name in the file.
func (c *Config) nameField() string {
	if c.Legacy {
		return "resourceName"
	}
	return "name"
}

// renameHint suggests a name starting with a letter for one starting with a
// digit ("10g_vfs" -> "vfs_10g"), or nothing.
func renameHint(name string) string {
	i := strings.IndexAny(name, "_-.")
	if i <= 0 || i == len(name)-1 {
		return ""
	}
	s := name[i+1:] + name[i:i+1] + name[:i]
	if parser.ValidateClassName(s) != nil {
		return ""
	}
	return fmt.Sprintf(" (e.g. %q)", s)
}

// Warnings lists what is valid but likely to surprise: pools whose
// PCIDEVICE_*/PCI_RESOURCE_* names keep a '-' (as the SR-IOV device plugin
// and KubeVirt do), which a shell cannot read as $NAME.
func (c *Config) Warnings() []string {
	var ws []string
	for i := range c.Pools {
		res := c.Resource(&c.Pools[i])
		if c.Pools[i].Mode == ModeVhostUser {
			continue // sets VhostUserEnv, which has no '-'
		}
		if env := PCIDeviceEnv(res); strings.Contains(env, "-") {
			ws = append(ws, fmt.Sprintf("%s: the variables %s and %s contain '-', so a shell cannot read them as $NAME (use printenv NAME); a name and resourcePrefix without '-' avoid it",
				c.poolAt(i), env, PCIResourceEnv(res)))
		}
	}
	return ws
}
