package dra

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/google/renameio/v2"

	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// CheckpointFile is the checkpoint's name in the plugin data directory.
const CheckpointFile = "checkpoint.json"

const checkpointVersion = 1

// Checkpoint is what NodeUnprepareResources needs after a restart: every
// prepared claim with its devices, the functions its preparation bound and
// its CDI spec files. kubelet keeps none of it, and may unprepare in
// another process than the one that prepared.
type Checkpoint struct {
	Version int                       `json:"version"`
	Claims  map[string]*PreparedClaim `json:"claims"` // by claim UID
}

// PreparedClaim is one prepared claim.
type PreparedClaim struct {
	Namespace string           `json:"namespace"`
	Name      string           `json:"name"`
	Devices   []PreparedDevice `json:"devices"`
	// SpecFiles are the claim's CDI spec files (in the CDI directory).
	SpecFiles []string `json:"specFiles,omitempty"`
}

// PreparedDevice is one allocated device of a prepared claim.
type PreparedDevice struct {
	Requests []string        `json:"requests"`
	Pool     string          `json:"pool"`
	Device   string          `json:"device"`
	Unit     sysfs.Address   `json:"unit"`
	Members  []sysfs.Address `json:"members"`
	Group    string          `json:"iommuGroup,omitempty"`
	CDIIDs   []string        `json:"cdiDeviceIDs"`
	// Bound are the functions this claim's preparation moved to vfio-pci;
	// Restore says whether unpreparing returns them to their original
	// driver (the pool's restoreOnRelease when prepared).
	Bound   []sysfs.Address `json:"bound,omitempty"`
	Restore bool            `json:"restore,omitempty"`
	// VhostUser is the directory prepared for a vhost-user slot.
	VhostUser *PreparedVhostUser `json:"vhostUser,omitempty"`
}

// PreparedVhostUser is what unpreparing a vhost-user slot removes, and
// what the claim's device metadata says.
type PreparedVhostUser struct {
	// BaseDir and Prefix locate the directory: BaseDir/<Prefix><Slot>
	// (HostDir, recorded for people).
	BaseDir string `json:"baseDir"`
	Prefix  string `json:"prefix"`
	Slot    string `json:"slot"`
	HostDir string `json:"hostDir"`
	// ContainerSocket and SocketMode go into the device metadata.
	ContainerSocket string `json:"containerSocket"`
	SocketMode      string `json:"socketMode"`
	// DeviceInfo is the device-info file written for the slot; "": none.
	DeviceInfo string `json:"deviceInfo,omitempty"`
}

// loadCheckpoint reads path; a missing file is an empty checkpoint.
func loadCheckpoint(path string) (*Checkpoint, error) {
	cp := &Checkpoint{Version: checkpointVersion, Claims: map[string]*PreparedClaim{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cp, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read DRA checkpoint: %w", err)
	}
	if err := json.Unmarshal(b, cp); err != nil {
		return nil, fmt.Errorf("DRA checkpoint %q is not valid JSON (move it away to start over; claims it lists must then be unprepared by hand with `sriov-cdi restore`): %w", path, err)
	}
	if cp.Version != checkpointVersion {
		return nil, fmt.Errorf("DRA checkpoint %q has version %d, this sriov-cdi reads %d", path, cp.Version, checkpointVersion)
	}
	if cp.Claims == nil {
		cp.Claims = map[string]*PreparedClaim{}
	}
	return cp, nil
}

// save writes the checkpoint atomically (temp file, fsync, rename, fsync
// of the directory).
func (cp *Checkpoint) save(path string) error {
	b, err := json.MarshalIndent(cp, "", "  ")
	if err != nil {
		return fmt.Errorf("encode DRA checkpoint: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("create DRA checkpoint directory: %w", err)
	}
	if err := renameio.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("write DRA checkpoint %q: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// preparedFor returns the claim (by UID) holding function a, or "".
func (cp *Checkpoint) preparedFor(a sysfs.Address) (string, *PreparedClaim) {
	for uid, c := range cp.Claims {
		for _, d := range c.Devices {
			for _, m := range d.Members {
				if m == a {
					return uid, c
				}
			}
		}
	}
	return "", nil
}

// preparedSlot returns the claim (by UID) holding vhost-user slot id of
// pool poolName, or "".
func (cp *Checkpoint) preparedSlot(poolName string, id sysfs.Address) (string, *PreparedClaim) {
	for uid, c := range cp.Claims {
		for _, d := range c.Devices {
			if d.VhostUser != nil && d.Pool == poolName && d.Unit == id {
				return uid, c
			}
		}
	}
	return "", nil
}
