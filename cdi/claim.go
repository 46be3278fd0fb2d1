package cdi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/renameio/v2"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/sriov-cdi/sriov-cdi/core/pool"
	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// ClaimSpecFilePrefix starts the name of every per-claim spec file (DRA).
// It differs from SpecFilePrefix, so the pool spec Writer never removes
// these.
const ClaimSpecFilePrefix = "sriov-cdi-dra_"

// ClaimDeviceName is the CDI device name of unit id in the spec of claim
// uid: unique per claim, so a runtime's cached spec of an earlier claim
// never answers for a later one.
func ClaimDeviceName(uid string, id sysfs.Address) string { return uid + "_" + string(id) }

// checkClaimUID refuses a claim UID that cannot be part of a CDI device
// name (ClaimDeviceName) or a spec file name (ClaimSpecFileName).
func checkClaimUID(uid string) error {
	if uid == "" || strings.ContainsAny(uid, "/ ") {
		return fmt.Errorf("claim UID %q cannot name a CDI device", uid)
	}
	return nil
}

// ClaimSpecFor builds the CDI spec of the units of pool p prepared for the
// claim with UID uid: the pool's kind, one device per unit named
// ClaimDeviceName with the edits SpecFor gives it, and, spec-wide, the
// SR-IOV device plugin's PCIDEVICE_<RESOURCE> and KubeVirt's
// PCI_RESOURCE_<RESOURCE> listing the claim's functions.
func ClaimSpecFor(p *pool.Pool, units []pool.Unit, h *sysfs.Host, root sysfs.Root, uid string, opts ...SpecOption) (*cdispec.Spec, error) {
	if err := checkClaimUID(uid); err != nil {
		return nil, err
	}
	sub := *p
	sub.Units = units
	spec, err := SpecFor(&sub, h, root, opts...)
	if err != nil {
		return nil, err
	}
	var addrs []sysfs.Address
	for i := range spec.Devices {
		spec.Devices[i].Name = ClaimDeviceName(uid, sysfs.Address(spec.Devices[i].Name))
	}
	for _, u := range units {
		addrs = append(addrs, u.Members...)
	}
	env := AllocateEnv(p.Resource, addrs)
	spec.ContainerEdits.Env = append(spec.ContainerEdits.Env, PCIDeviceEnv(p.Resource)+"="+env[PCIDeviceEnv(p.Resource)], PCIResourceEnv(p.Resource)+"="+env[PCIResourceEnv(p.Resource)])
	if spec.Version, err = cdispec.MinimumRequiredVersion(spec); err != nil {
		return nil, fmt.Errorf("pool %q: choose the CDI version: %w", p.Name, err)
	}
	return spec, nil
}

// ClaimSpecFileName is the file of claim uid's spec of kind.
func ClaimSpecFileName(uid, kind string) (string, error) {
	vendor, class, err := KindOf(kind)
	if err != nil {
		return "", err
	}
	return ClaimSpecFilePrefix + uid + "_" + vendor + "_" + class + ".json", nil
}

// WriteClaimSpecs validates every spec, then writes each atomically (temp
// file, fsync, rename) into dir, mode 0644, and returns the file names.
// Nothing is written when one spec is invalid; a failed write removes the
// files this call wrote.
func WriteClaimSpecs(dir, uid string, specs []*cdispec.Spec) ([]string, error) {
	names := make([]string, len(specs))
	data := make([][]byte, len(specs))
	for i, s := range specs {
		if err := Validate(s); err != nil {
			return nil, fmt.Errorf("CDI spec of claim %s: %w", uid, err)
		}
		n, err := ClaimSpecFileName(uid, s.Kind)
		if err != nil {
			return nil, fmt.Errorf("CDI spec of claim %s: %w", uid, err)
		}
		if data[i], err = json.Marshal(s); err != nil {
			return nil, fmt.Errorf("encode CDI spec %q: %w", n, err)
		}
		names[i] = n
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create CDI spec directory %q: %w", dir, err)
	}
	for i, n := range names {
		if err := writeAtomic(filepath.Join(dir, n), data[i], specMode); err != nil {
			_ = RemoveClaimSpecs(dir, names[:i])
			return nil, err
		}
	}
	return names, nil
}

// RemoveClaimSpecs removes the named per-claim spec files from dir; a file
// already gone is not an error. Only names with ClaimSpecFilePrefix and no
// path separator are touched.
func RemoveClaimSpecs(dir string, names []string) error {
	var errs []error
	for _, n := range names {
		if !strings.HasPrefix(n, ClaimSpecFilePrefix) || strings.ContainsRune(n, filepath.Separator) {
			errs = append(errs, fmt.Errorf("%q is not a per-claim CDI spec file of ours; left alone", n))
			continue
		}
		if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove CDI spec %q: %w", filepath.Join(dir, n), err))
		}
	}
	return errors.Join(errs...)
}

// writeAtomic replaces path with data (mode exactly, umask ignored): a
// reader (the CDI cache, a runtime) sees the old file or the new one.
func writeAtomic(path string, data []byte, mode fs.FileMode) error {
	if err := renameio.WriteFile(path, data, mode, renameio.WithStaticPermissions(mode)); err != nil {
		return fmt.Errorf("write %q: %w", path, err)
	}
	return nil
}
