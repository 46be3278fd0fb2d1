package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strings"

	yamlv3 "go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/api/validate/content"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
	"tags.cncf.io/container-device-interface/pkg/parser"

	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// Mode says how a pool hands out its devices.
type Mode string

const (
	// ModeVFIO hands devices out bound to vfio-pci; the plugin binds them.
	ModeVFIO Mode = "vfio"
	// ModeKernel hands devices out with the driver they have; the plugin
	// never writes a driver attribute for such a pool.
	ModeKernel Mode = "kernel"
	// ModeVhostUser hands out vhost-user socket directories (slots), not
	// PCI functions; see VhostUser.
	ModeVhostUser Mode = "vhost-user"
)

// BindAt says when a vfio pool binds its devices.
type BindAt string

const (
	BindAtAllocate BindAt = "allocate" // in Allocate, before returning
	BindAtStartup  BindAt = "startup"  // when the pool starts
)

// Policy orders preferred allocations.
type Policy string

const (
	PolicySpread Policy = "spread" // across PFs
	PolicyPack   Policy = "pack"   // fill one PF first
)

// API says which kubelet API serves a pool.
type API string

const (
	// APIDevicePlugin serves the pool as a device plugin (v1beta1): an
	// extended resource <prefix>/<name>, Allocate, ListAndWatch.
	APIDevicePlugin API = "deviceplugin"
	// APIDRA publishes the pool as a Dynamic Resource Allocation pool
	// (resource.k8s.io/v1 ResourceSlices) and prepares claims through the
	// DRA kubelet plugin.
	APIDRA API = "dra"
)

// DefaultResourcePrefix is the resource (and CDI vendor) prefix when none is set.
const DefaultResourcePrefix = "sriov-cdi.io"

// DefaultAllowUnbindFrom lists the drivers a vfio pool may take a function
// away from unless the pool says otherwise: the VF drivers of common NICs
// and accelerators. Storage and host-controller drivers are deliberately
// absent.
var DefaultAllowUnbindFrom = []string{
	"iavf", "i40evf", "ixgbevf", "igbvf", "ice", "i40e", "ixgbe", "mlx5_core", "mlx4_core",
	"bnxt_en", "qede", "qat_4xxx", "qat_c62x", "4xxx", "c6xxvf", "virtio-pci",
}

// Config is the whole configuration.
type Config struct {
	// ResourcePrefix is the vendor part of every resource name and CDI
	// kind, e.g. "sriov-cdi.io" in "sriov-cdi.io/nvme-vf".
	ResourcePrefix string `json:"resourcePrefix,omitempty"`
	Pools          []Pool `json:"pools"`

	// Source is where the config came from, for messages.
	Source string `json:"-"`
	// Legacy is true when the input was an SR-IOV network device plugin
	// config.
	Legacy bool `json:"-"`
}

// Pool is one resource.
type Pool struct {
	Name string `json:"name"`
	// ResourcePrefix overrides Config.ResourcePrefix for this pool.
	ResourcePrefix string `json:"resourcePrefix,omitempty"`
	Mode           Mode   `json:"mode,omitempty"`
	// API: "deviceplugin" (default) or "dra". A device is served by one
	// API only; kubelet would count a device offered by both twice.
	API API `json:"api,omitempty"`
	// BindAt: "allocate" (default) or "startup"; vfio pools only.
	BindAt BindAt `json:"bindAt,omitempty"`
	// AllocationPolicy: "spread" (default) or "pack".
	AllocationPolicy Policy `json:"allocationPolicy,omitempty"`
	// AllowUnbindFrom lists drivers a vfio pool may unbind; vfio only.
	AllowUnbindFrom []string `json:"allowUnbindFrom,omitempty"`
	// RestoreOnRelease returns released devices to their original driver.
	RestoreOnRelease bool `json:"restoreOnRelease,omitempty"`
	// DeviceNodes also returns plain device nodes in Allocate for
	// runtimes without CDI.
	DeviceNodes bool `json:"deviceNodes,omitempty"`
	// CDIAnnotations also returns cdi.k8s.io/* annotations in Allocate for
	// runtimes that only read annotations.
	CDIAnnotations bool `json:"cdiAnnotations,omitempty"`
	// IOMMUFD also puts the iommufd nodes (/dev/vfio/devices/vfioN,
	// /dev/iommu) in the CDI spec where the host has them. Off by default:
	// Kata plugs every /dev/vfio node it sees, so a group node plus its
	// iommufd node would be plugged twice.
	IOMMUFD bool `json:"iommufd,omitempty"`
	// VhostNet also injects /dev/vhost-net and /dev/net/tun with every
	// device (the SR-IOV network device plugin's needVhostNet): for
	// virtio-net backends in the pod, and DPDK's virtio-user exception path
	// next to a vfio VF. Host services, not the function: any mode.
	VhostNet bool `json:"vhostNet,omitempty"`
	// RDMA also injects each function's RDMA character devices
	// (/dev/infiniband/uverbsN, umadN, issmN, and rdma_cm where the host
	// has it) and reports the RDMA device (the SR-IOV network device
	// plugin's isRdma). Functions without an RDMA device stay out of the
	// pool. Kernel pools only.
	RDMA bool `json:"rdma,omitempty"`
	// VhostUser configures a vhost-user pool (mode: vhost-user), which has
	// no selectors.
	VhostUser *VhostUser `json:"vhostUser,omitempty"`
	// Selectors: a device belongs to the pool when it matches any one of
	// them. Written as one object or a list of objects. Required except in
	// vhost-user pools.
	Selectors SelectorList `json:"selectors,omitempty"`
}

// Selector matches devices; every field that is set must match (within a
// field, any value may match).
type Selector struct {
	Vendors      []string `json:"vendors,omitempty"`      // "8086"
	Devices      []string `json:"devices,omitempty"`      // "154c"
	Drivers      []string `json:"drivers,omitempty"`      // current driver
	PFNames      []string `json:"pfNames,omitempty"`      // "ens1f0" or "ens1f0#0,2-7"
	RootDevices  []string `json:"rootDevices,omitempty"`  // PF address, optional "#ranges"
	PCIAddresses []string `json:"pciAddresses,omitempty"` // exact functions
	LinkTypes    []string `json:"linkTypes,omitempty"`    // "ether", "infiniband"
	NUMANodes    []int    `json:"numaNodes,omitempty"`    // -1 matches "no NUMA node"
	// ExcludeAddresses removes functions that the other fields match.
	ExcludeAddresses []string `json:"excludeAddresses,omitempty"`
}

// SelectorList accepts one selector object or a list of them.
type SelectorList []Selector

// UnmarshalJSON implements json.Unmarshaler, strictly.
func (s *SelectorList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '[' {
		var list []Selector
		if err := strictJSON(b, &list); err != nil {
			return err
		}
		*s = list
		return nil
	}
	var one Selector
	if err := strictJSON(b, &one); err != nil {
		return err
	}
	*s = SelectorList{one}
	return nil
}

func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// Resource returns the pool's resource name, which is also its CDI kind.
func (c *Config) Resource(p *Pool) string {
	prefix := p.ResourcePrefix
	if prefix == "" {
		prefix = c.ResourcePrefix
	}
	return prefix + "/" + p.Name
}

// Load reads and validates a config file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, b)
}

// Parse decodes, defaults and validates a config; source names it in errors.
// Input with a top-level "resourceList" is read as an SR-IOV network device
// plugin config.
func Parse(source string, data []byte) (*Config, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("config %q: not valid YAML or JSON: %w", source, err)
	}
	doc, errs := shapeErrors(data)
	if len(errs) > 0 {
		return nil, &ValidationError{Source: source, Errs: errs}
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(js, &probe); err != nil {
		return nil, fmt.Errorf("config %q: the top level must be an object with \"pools\" (or \"resourceList\"): %w", source, err)
	}
	var c *Config
	if _, ok := probe["resourceList"]; ok {
		if c, err = parseLegacy(source, js, doc); err != nil {
			return nil, err
		}
	} else {
		c = &Config{}
		if err := strictJSON(js, c); err != nil {
			return nil, decodeError(source, "", js, reflect.TypeFor[Config](), doc, err)
		}
	}
	c.Source = source
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// decodeError explains a failed strict decoding: every unknown field and
// wrong type with pool, field, line and a hint when diagnose finds them,
// else the decoder's error in words.
func decodeError(source, format string, js []byte, t reflect.Type, doc *yamlv3.Node, err error) error {
	if errs := diagnose(js, t, doc); len(errs) > 0 {
		return &ValidationError{Source: source, Format: format, Errs: errs}
	}
	if format != "" {
		return fmt.Errorf("config %q (%s): %w", source, format, explainJSON(err))
	}
	return fmt.Errorf("config %q: %w", source, explainJSON(err))
}

// explainJSON turns encoding/json's messages into ones that name the field.
func explainJSON(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("field %q: got a JSON %s, want %s", te.Field, te.Value, te.Type)
	}
	if msg := err.Error(); strings.HasPrefix(msg, "json: unknown field ") {
		return fmt.Errorf("unknown field %s (check spelling; see the config reference in README.md)", strings.TrimPrefix(msg, "json: unknown field "))
	}
	return err
}

func (c *Config) applyDefaults() {
	if c.ResourcePrefix == "" {
		c.ResourcePrefix = DefaultResourcePrefix
	}
	for i := range c.Pools {
		p := &c.Pools[i]
		if p.Mode == "" {
			p.Mode = ModeKernel
		}
		if p.AllocationPolicy == "" {
			p.AllocationPolicy = PolicySpread
		}
		p.VhostUser.applyDefaults()
		if p.API == "" {
			p.API = APIDevicePlugin
		}
		if p.Mode == ModeVFIO {
			if p.BindAt == "" {
				p.BindAt = BindAtAllocate
			}
			if p.AllowUnbindFrom == nil {
				p.AllowUnbindFrom = append([]string(nil), DefaultAllowUnbindFrom...)
			}
		}
	}
}

var (
	prefixRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$`)
	hex4RE   = regexp.MustCompile(`^[0-9a-fA-F]{4}$`)
	driverRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
)

// Validate checks the defaulted config and reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	checkPrefix := func(field, v string) {
		if !prefixRE.MatchString(v) || len(v) > 253 {
			bad("%s: %q is not a DNS subdomain with a dot (e.g. \"example.com\"); it becomes the resource prefix and CDI vendor", field, v)
		}
	}
	checkPrefix("resourcePrefix", c.ResourcePrefix)
	if len(c.Pools) == 0 {
		bad("pools: empty; add at least one pool with a name and selectors")
	}
	seen := map[string]int{}
	mangled := newManglingIndex()
	for i := range c.Pools {
		p := &c.Pools[i]
		at, name := c.poolAt(i), c.nameField()
		switch {
		case p.Name == "":
			bad("%s.%s: missing; give the pool a name such as \"vf-vfio\" (the resource becomes <prefix>/<name>)", at, name)
		case strings.Contains(p.Name, "/") || len(content.IsLabelKey(p.Name)) > 0:
			bad("%s.%s: %q must be 1-63 letters, digits, '-', '_' or '.', starting with a letter and ending with a letter or digit (kubelet's rule for the resource name; the name is also the CDI class)", at, name, p.Name)
		case parser.ValidateClassName(p.Name) != nil:
			// Valid for kubelet (and the SR-IOV network device plugin), not
			// for CDI: only a leading digit gets here.
			bad("%s.%s: %q starts with a digit: kubelet accepts that resource name, but the resource is also the CDI kind (Kata finds a pod's CDI devices by its resource name) and a CDI class must start with a letter; rename the resource%s and the pods' requests, or keep it on the SR-IOV network device plugin", at, name, p.Name, renameHint(p.Name))
		}
		if j, dup := seen[c.Resource(p)]; dup && p.Name != "" {
			bad("%s.%s: resource %q is already defined by %s; names must be unique", at, name, c.Resource(p), c.poolAt(j))
		}
		if _, dup := seen[c.Resource(p)]; !dup && p.Name != "" {
			mangled.check(c, i, bad)
		}
		if sock := KubeletDevicePluginDir + SocketName(c.Resource(p)); p.Name != "" && p.API != APIDRA && len(sock) > MaxSocketPath {
			room := len(c.Resource(p)) - (len(sock) - MaxSocketPath)
			bad("%s.%s: resource %q is %d bytes; its device plugin socket %s would be %d bytes, over the %d a unix socket path holds: shorten the pool name or the resource prefix to %d bytes in all", at, name, c.Resource(p), len(c.Resource(p)), sock, len(sock), MaxSocketPath, room)
		}
		seen[c.Resource(p)] = i
		if p.ResourcePrefix != "" {
			checkPrefix(at+".resourcePrefix", p.ResourcePrefix)
		}
		switch p.Mode {
		case ModeVFIO, ModeKernel, ModeVhostUser:
		default:
			bad("%s.mode: %q is not a mode; use \"vfio\" (bind to vfio-pci), \"kernel\" (keep the current driver) or \"vhost-user\" (socket directories)", at, p.Mode)
		}
		c.validateVhostUser(at, p, bad)
		validateAPI(at, p, bad)
		switch p.AllocationPolicy {
		case PolicySpread, PolicyPack:
		default:
			bad("%s.allocationPolicy: %q is not a policy; use \"spread\" or \"pack\"", at, p.AllocationPolicy)
		}
		if p.Mode == ModeKernel {
			// Fail early: a kernel pool never touches a driver, so any
			// binding option is a misunderstanding worth stopping on.
			if p.BindAt != "" {
				bad("%s.bindAt: only vfio pools bind; a kernel pool never changes drivers (remove bindAt or set mode: vfio)", at)
			}
			if len(p.AllowUnbindFrom) > 0 {
				bad("%s.allowUnbindFrom: only vfio pools unbind; a kernel pool never changes drivers (remove it or set mode: vfio)", at)
			}
			if p.RestoreOnRelease {
				bad("%s.restoreOnRelease: only vfio pools rebind; a kernel pool never changes drivers (remove it or set mode: vfio)", at)
			}
			if p.IOMMUFD {
				bad("%s.iommufd: only vfio pools have iommufd nodes (remove it or set mode: vfio)", at)
			}
		}
		if p.Mode == ModeVFIO && p.RDMA {
			if c.Legacy {
				bad("%s.selectors[*].isRdma: the selectors pick only vfio-pci-bound functions, which have no RDMA device (vfio-pci is not an RDMA driver), so there is nothing to inject; remove isRdma or select the functions on their kernel driver", at)
			} else {
				bad("%s.rdma: a vfio pool takes its functions from their RDMA driver (vfio-pci has none), so there is no RDMA device to inject; use rdma in a kernel pool (mode: kernel)", at)
			}
		}
		if p.Mode == ModeVFIO {
			switch p.BindAt {
			case BindAtAllocate, BindAtStartup:
			default:
				bad("%s.bindAt: %q is not valid; use \"allocate\" or \"startup\"", at, p.BindAt)
			}
			for _, d := range p.AllowUnbindFrom {
				if !driverRE.MatchString(d) {
					bad("%s.allowUnbindFrom: %q is not a driver name", at, d)
				}
			}
		}
		if len(p.Selectors) == 0 && p.Mode != ModeVhostUser {
			bad("%s.selectors: missing; a pool without selectors would take every PCI function on the host (add e.g. vendors and devices, or pciAddresses)", at)
		}
		for j := range p.Selectors {
			validateSelector(fmt.Sprintf("%s.selectors[%d]", at, j), &p.Selectors[j], bad)
		}
	}
	c.validateDRA(bad)
	if len(errs) == 0 {
		return nil
	}
	return &ValidationError{Source: c.Source, Errs: errs}
}

// validateDRA checks what DRA pools share: one driver, named by the
// top-level resourcePrefix (at most 63 bytes, the API's limit for a driver
// name), in which every DRA pool name is unique.
func (c *Config) validateDRA(bad func(string, ...any)) {
	seen := map[string]int{}
	for i := range c.Pools {
		p := &c.Pools[i]
		if p.API != APIDRA || p.Name == "" {
			continue
		}
		if j, dup := seen[p.Name]; dup {
			bad("%s.%s: DRA pool %q is already defined by %s; DRA pools share one driver (%q), so their names must be unique even with different resource prefixes", c.poolAt(i), c.nameField(), p.Name, c.poolAt(j), c.ResourcePrefix)
			continue
		}
		seen[p.Name] = i
	}
	if len(seen) > 0 && len(c.ResourcePrefix) > DRADriverNameMax {
		bad("resourcePrefix: %q is %d bytes; it is also the DRA driver name, which may have at most %d", c.ResourcePrefix, len(c.ResourcePrefix), DRADriverNameMax)
	}
}

// DRADriverNameMax is resource.k8s.io's limit on a driver name.
const DRADriverNameMax = 63

// validateAPI checks the api field and what a DRA pool cannot use: the
// pool name becomes the DRA pool and DeviceClass name (a DNS label), and
// deviceNodes and cdiAnnotations are answers of the device plugin's
// Allocate, which DRA does not have.
func validateAPI(at string, p *Pool, bad func(string, ...any)) {
	switch p.API {
	case APIDevicePlugin:
		return
	case APIDRA:
	default:
		bad("%s.api: %q is not an API; use \"deviceplugin\" (default, extended resource) or \"dra\" (Dynamic Resource Allocation, resource.k8s.io/v1)", at, p.API)
		return
	}
	if p.Name != "" && len(validation.IsDNS1123Label(p.Name)) > 0 {
		bad("%s.name: %q: a DRA pool's name is its DRA pool and DeviceClass name, so it must be a DNS label (lower-case letters, digits and '-', at most 63, starting and ending with a letter or digit)", at, p.Name)
	}
	if p.DeviceNodes {
		bad("%s.deviceNodes: a DRA pool hands devices out through CDI only (deviceNodes is an answer of the device plugin's Allocate); remove it or use api: deviceplugin", at)
	}
	if p.CDIAnnotations {
		bad("%s.cdiAnnotations: a DRA pool hands devices out through CDI device IDs only (cdiAnnotations is an answer of the device plugin's Allocate); remove it or use api: deviceplugin", at)
	}
}

// DRAPools reports whether any pool is served through DRA.
func (c *Config) DRAPools() bool {
	for i := range c.Pools {
		if c.Pools[i].API == APIDRA {
			return true
		}
	}
	return false
}

func validateSelector(at string, s *Selector, bad func(string, ...any)) {
	if s.empty() {
		bad("%s: no field set; a selector must narrow the devices (vendors, devices, drivers, pfNames, rootDevices, pciAddresses, linkTypes or numaNodes)", at)
	}
	for _, v := range s.Vendors {
		if !hex4RE.MatchString(v) {
			bad("%s.vendors: %q is not a 4-digit hex vendor ID (e.g. \"8086\")", at, v)
		}
	}
	for _, v := range s.Devices {
		if !hex4RE.MatchString(v) {
			bad("%s.devices: %q is not a 4-digit hex device ID (e.g. \"154c\")", at, v)
		}
	}
	for _, v := range s.Drivers {
		if !driverRE.MatchString(v) {
			bad("%s.drivers: %q is not a driver name", at, v)
		}
	}
	for _, v := range s.PFNames {
		if _, _, err := splitNameRanges(v); err != nil {
			bad("%s.pfNames: %v (want \"ens1f0\" or \"ens1f0#0,2-7\")", at, err)
		}
	}
	for _, v := range s.RootDevices {
		addr, _, err := splitNameRanges(v)
		if err == nil {
			_, err = sysfs.ParseAddress(addr)
		}
		if err != nil {
			bad("%s.rootDevices: %v (want a PF address, optionally with VF ranges: \"0000:3b:00.0#0-3\")", at, err)
		}
	}
	for _, list := range []struct {
		field string
		vals  []string
	}{{"pciAddresses", s.PCIAddresses}, {"excludeAddresses", s.ExcludeAddresses}} {
		for _, v := range list.vals {
			if _, err := sysfs.ParseAddress(v); err != nil {
				bad("%s.%s: %v", at, list.field, err)
			}
		}
	}
	for _, v := range s.LinkTypes {
		if v == "" {
			bad("%s.linkTypes: empty link type; use e.g. \"ether\" or \"infiniband\"", at)
		}
	}
	for _, n := range s.NUMANodes {
		if n < -1 {
			bad("%s.numaNodes: %d is not a NUMA node (use -1 for \"none\")", at, n)
		}
	}
}

func (s *Selector) empty() bool {
	return len(s.Vendors)+len(s.Devices)+len(s.Drivers)+len(s.PFNames)+len(s.RootDevices)+
		len(s.PCIAddresses)+len(s.LinkTypes)+len(s.NUMANodes) == 0
}

// ValidationError lists every problem of one config.
type ValidationError struct {
	Source string
	Format string // e.g. "SR-IOV network device plugin format"; empty: ours
	Errs   []error
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	if e.Format != "" {
		fmt.Fprintf(&b, "config %q (%s) is invalid:", e.Source, e.Format)
	} else {
		fmt.Fprintf(&b, "config %q is invalid:", e.Source)
	}
	for _, err := range e.Errs {
		b.WriteString("\n  - ")
		b.WriteString(err.Error())
	}
	return b.String()
}

// Unwrap gives errors.Is/As access to each problem.
func (e *ValidationError) Unwrap() []error { return e.Errs }
