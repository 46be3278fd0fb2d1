package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"

	yamlv3 "go.yaml.in/yaml/v3"
)

// legacyPrefix is the SR-IOV network device plugin's default prefix; kept
// so that pods requesting "intel.com/<name>" keep working after migration.
const legacyPrefix = "intel.com"

type legacyConfig struct {
	ResourceList []legacyResource `json:"resourceList"`
}

type legacyResource struct {
	ResourceName    string          `json:"resourceName"`
	ResourcePrefix  string          `json:"resourcePrefix"`
	DeviceType      string          `json:"deviceType"`
	ExcludeTopology bool            `json:"excludeTopology"`
	Selectors       json.RawMessage `json:"selectors"`
	AdditionalInfo  json.RawMessage `json:"additionalInfo"`
	// At this level the SR-IOV network device plugin ignores them (it
	// reads them in selectors); refused so nobody believes they work.
	IsRdma       json.RawMessage `json:"isRdma"`
	NeedVhostNet json.RawMessage `json:"needVhostNet"`
}

// legacySelector is the union of the selectors the SR-IOV network device
// plugin knows; the ones with no counterpart here are refused when set.
type legacySelector struct {
	Vendors      []string `json:"vendors"`
	Devices      []string `json:"devices"`
	Drivers      []string `json:"drivers"`
	PCIAddresses []string `json:"pciAddresses"`
	PFNames      []string `json:"pfNames"`
	RootDevices  []string `json:"rootDevices"`
	LinkTypes    []string `json:"linkTypes"`
	DDPProfiles  []string `json:"ddpProfiles"`
	IsRdma       bool     `json:"isRdma"`
	NeedVhostNet bool     `json:"needVhostNet"`
	VdpaType     string   `json:"vdpaType"`
	ACPIIndexes  []string `json:"acpiIndexes"`
	AuxTypes     []string `json:"auxTypes"`
}

// parseLegacy maps an SR-IOV network device plugin config onto pools:
// resourceName → pool name, resourcePrefix (default "intel.com") kept per
// pool, deviceType netDevice/accelerator → mode "vfio" when the selectors
// pick only vfio-pci-bound functions (as that plugin's users do), else
// "kernel". What has no counterpart is refused with the reason.
func parseLegacy(source string, js []byte, doc *yamlv3.Node) (*Config, error) {
	var lc legacyConfig
	if err := strictJSON(js, &lc); err != nil {
		return nil, decodeError(source, "SR-IOV network device plugin format", js, reflect.TypeFor[legacyConfig](), doc, err)
	}
	c := &Config{Legacy: true}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for i, r := range lc.ResourceList {
		at := fmt.Sprintf("resourceList[%d] (%q)", i, r.ResourceName)
		p := Pool{Name: r.ResourceName, ResourcePrefix: r.ResourcePrefix}
		if p.ResourcePrefix == "" {
			p.ResourcePrefix = legacyPrefix
		}
		switch r.DeviceType {
		case "", "netDevice", "accelerator":
		case "auxNetDevice":
			bad("%s.deviceType: auxiliary network devices (subfunctions) are not PCI functions and cannot be handed out by sriov-cdi; keep them on the SR-IOV network device plugin", at)
		default:
			bad("%s.deviceType: %q is unknown; the SR-IOV network device plugin knows netDevice, accelerator and auxNetDevice", at, r.DeviceType)
		}
		if r.ExcludeTopology {
			bad("%s.excludeTopology: not supported; sriov-cdi always reports the NUMA node (remove the field)", at)
		}
		if len(r.AdditionalInfo) > 0 && !bytes.Equal(bytes.TrimSpace(r.AdditionalInfo), []byte("null")) {
			bad("%s.additionalInfo: not supported (remove it)", at)
		}
		for _, misplaced := range []struct {
			field string
			raw   json.RawMessage
		}{{"isRdma", r.IsRdma}, {"needVhostNet", r.NeedVhostNet}} {
			if len(misplaced.raw) > 0 {
				bad("%s.%s: belongs in selectors, where the SR-IOV network device plugin reads it (at the resource level it ignores the field); move it into every selector", at, misplaced.field)
			}
		}
		sels, err := decodeLegacySelectors(r.Selectors)
		if err != nil {
			if more := diagnoseLegacySelectors(r.Selectors, doc, i, r.ResourceName); len(more) > 0 {
				errs = append(errs, more...)
			} else {
				bad("%s.selectors: %v", at, explainJSON(err))
			}
		}
		allVFIO := len(sels) > 0
		var rdma, vhost int // selectors that set isRdma, needVhostNet
		for j, s := range sels {
			sat := fmt.Sprintf("%s.selectors[%d]", at, j)
			for _, unsupported := range []struct {
				field string
				set   bool
				why   string
			}{
				{"vdpaType", s.VdpaType != "", "vDPA devices are not supported"},
				{"ddpProfiles", len(s.DDPProfiles) > 0, "DDP profile selection is not supported"},
				{"acpiIndexes", len(s.ACPIIndexes) > 0, "ACPI index selection is not supported"},
				{"auxTypes", len(s.AuxTypes) > 0, "auxiliary devices are not supported"},
			} {
				if unsupported.set {
					bad("%s.%s: cannot be mapped: %s; remove it or keep this resource on the SR-IOV network device plugin", sat, unsupported.field, unsupported.why)
				}
			}
			if !slices.Equal(s.Drivers, []string{"vfio-pci"}) {
				allVFIO = false
			}
			if s.IsRdma {
				rdma++
			}
			if s.NeedVhostNet {
				vhost++
			}
			p.Selectors = append(p.Selectors, Selector{
				Vendors: s.Vendors, Devices: s.Devices, Drivers: s.Drivers, PCIAddresses: s.PCIAddresses,
				PFNames: s.PFNames, RootDevices: s.RootDevices, LinkTypes: s.LinkTypes,
			})
		}
		p.Mode = ModeKernel
		if allVFIO {
			p.Mode = ModeVFIO
		}
		// Both are selector fields there but apply to a whole pool here: a
		// pool cannot inject for the devices of one selector only.
		for _, flag := range []struct {
			field string
			n     int
			set   *bool
		}{{"isRdma", rdma, &p.RDMA}, {"needVhostNet", vhost, &p.VhostNet}} {
			switch flag.n {
			case 0:
			case len(sels):
				*flag.set = true
			default:
				bad("%s.selectors: %s is set in %d of %d selectors; sriov-cdi applies it to the whole pool, so set it in every selector or split the resource in two", at, flag.field, flag.n, len(sels))
			}
		}
		c.Pools = append(c.Pools, p)
	}
	if len(errs) > 0 {
		return nil, &ValidationError{Source: source, Errs: errs}
	}
	return c, nil
}

// diagnoseLegacySelectors explains why resource i's selectors (one object
// or a list) did not decode, every problem with its path and line.
func diagnoseLegacySelectors(raw json.RawMessage, doc *yamlv3.Node, i int, name string) []error {
	raw = bytes.TrimSpace(raw)
	path := []step{{field: "resourceList"}, {index: i, name: name}, {field: "selectors"}}
	t := reflect.TypeFor[[]legacySelector]()
	if len(raw) > 0 && raw[0] != '[' {
		t, path = reflect.TypeFor[legacySelector](), append(path, step{index: 0})
	}
	return diagnoseAt(raw, t, doc, path, "selectors")
}

func decodeLegacySelectors(raw json.RawMessage) ([]legacySelector, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	if raw[0] == '[' {
		var list []legacySelector
		return list, strictJSON(raw, &list)
	}
	var one legacySelector
	if err := strictJSON(raw, &one); err != nil {
		return nil, err
	}
	return []legacySelector{one}, nil
}
