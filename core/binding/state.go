package binding

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sriov-cdi/sriov-cdi/sysfs"
)

// DefaultStatePath is where the state file lives unless --state-file says
// otherwise.
const DefaultStatePath = "/var/lib/sriov-cdi/state.json"

// Phase is where a function stands in a driver change.
type Phase string

const (
	// PhaseChanging: its original state is recorded and writes may have
	// started; a crash here is rolled back at the next start.
	PhaseChanging Phase = "changing"
	// PhaseDone: it is on its target driver, possibly in use by a pod.
	PhaseDone Phase = "done"
	// PhaseRestoring: it is being returned to its original state; a crash
	// here is completed at the next start.
	PhaseRestoring Phase = "restoring"
)

// Origin says who asked for a change.
type Origin string

const (
	OriginAllocate Origin = "allocate" // kubelet's Allocate (bindAt: allocate)
	OriginStartup  Origin = "startup"  // plugin start (bindAt: startup)
	OriginOperator Origin = "operator" // the bind/unbind commands
	// OriginDRA: the DRA driver's NodePrepareResources. The release
	// watcher leaves these alone: DRA devices are not in PodResources'
	// device lists, and NodeUnprepareResources says when a claim is done.
	OriginDRA Origin = "dra"
)

// Record is one function whose driver sriov-cdi changed.
type Record struct {
	Address sysfs.Address `json:"address"`
	// Unit is the device ID kubelet knows the function by (the lowest
	// address of its group's unit).
	Unit sysfs.Address `json:"unit"`
	Pool string        `json:"pool"`
	// Group is the IOMMU group at the time of the change, for messages
	// only: group numbers change when VFs are re-created.
	Group string `json:"group,omitempty"`
	// Original is the driver and driver_override read before the first
	// write; restoring returns to it.
	Original sysfs.State `json:"original"`
	// Target is the driver the change puts the function on ("" = none).
	Target           string    `json:"target"`
	Phase            Phase     `json:"phase"`
	Origin           Origin    `json:"origin"`
	RestoreOnRelease bool      `json:"restoreOnRelease,omitempty"`
	SeenAssigned     bool      `json:"seenAssigned,omitempty"`
	Since            time.Time `json:"since"`
}

// Op is the operation in flight, kept in the file until it ends.
type Op struct {
	Kind    string          `json:"kind"` // "bind", "unbind", "restore", "reconcile"
	Devices []sysfs.Address `json:"devices"`
	Started time.Time       `json:"started"`
	PID     int             `json:"pid"`
}

// stateData is the file's content.
type stateData struct {
	Version int       `json:"version"`
	Op      *Op       `json:"op,omitempty"`
	Devices []*Record `json:"devices"` // sorted by address
}

const stateVersion = 1

// stateFile holds the records in memory and writes them atomically. Not
// safe for concurrent use: the Manager serialises access.
type stateFile struct {
	path string
	data stateData
}

// ErrStateFile is returned (wrapped) when the state file cannot be used:
// unreadable, corrupt (truncated), another version, or a record that fails
// validation. Nothing was written.
var ErrStateFile = errors.New("state file unusable")

// stateFileError is a loadState failure: it names the file and says what
// to do, and matches ErrStateFile.
type stateFileError struct {
	path string
	err  error
}

func (e *stateFileError) Error() string {
	return fmt.Sprintf("state file %q is unusable, nothing was written: %v; inspect and repair or remove %s, and run `sriov-cdi restore --all` after repair", e.path, e.err, e.path)
}
func (e *stateFileError) Unwrap() error        { return e.err }
func (e *stateFileError) Is(target error) bool { return target == ErrStateFile }

func loadState(path string) (*stateFile, error) {
	s := &stateFile{path: path, data: stateData{Version: stateVersion}}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, &stateFileError{path, fmt.Errorf("read: %w", err)}
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return s, nil
	}
	if err := json.Unmarshal(b, &s.data); err != nil {
		return nil, &stateFileError{path, fmt.Errorf("corrupt (truncated?): %w", err)}
	}
	if s.data.Version != stateVersion {
		return nil, &stateFileError{path, fmt.Errorf("version %d, this sriov-cdi reads version %d", s.data.Version, stateVersion)}
	}
	if err := s.data.validate(); err != nil {
		return nil, &stateFileError{path, fmt.Errorf("refused: %w", err)}
	}
	return s, nil
}

// validate checks every field that reaches a sysfs path or value: the file
// is data another process wrote, and an address like ../../x would make a
// restore write outside bus/pci/devices. Every problem is named by record
// and field.
func (d *stateData) validate() error {
	var errs []error
	if op := d.Op; op != nil {
		if !slices.Contains([]string{"bind", "unbind", "restore", "release", "reconcile", "rollback", "retry-restore"}, op.Kind) {
			errs = append(errs, fmt.Errorf("op.kind: unknown operation %q", op.Kind))
		}
		for i, a := range op.Devices {
			if err := checkAddress(a); err != nil {
				errs = append(errs, fmt.Errorf("op.devices[%d]: %w", i, err))
			}
		}
	}
	seen := map[sysfs.Address]int{}
	for i, r := range d.Devices {
		if r == nil {
			errs = append(errs, fmt.Errorf("devices[%d]: null record", i))
			continue
		}
		if err := checkAddress(r.Address); err != nil {
			errs = append(errs, fmt.Errorf("devices[%d]: address: %w", i, err))
			continue
		}
		bad := func(field string, err error) {
			errs = append(errs, fmt.Errorf("devices[%d] (%q): %s: %w", i, r.Address, field, err))
		}
		if j, dup := seen[r.Address]; dup {
			bad("address", fmt.Errorf("also devices[%d]", j))
		}
		seen[r.Address] = i
		if err := checkAddress(r.Unit); err != nil {
			bad("unit", err)
		}
		for _, f := range []struct{ name, v string }{{"original.driver", r.Original.Driver}, {"original.override", r.Original.Override}, {"target", r.Target}} {
			if err := checkDriverName(f.v); err != nil {
				bad(f.name, err)
			}
		}
		if !slices.Contains([]Phase{PhaseChanging, PhaseDone, PhaseRestoring}, r.Phase) {
			bad("phase", fmt.Errorf("unknown phase %q", r.Phase))
		}
		if !slices.Contains([]Origin{OriginAllocate, OriginStartup, OriginOperator, OriginDRA}, r.Origin) {
			bad("origin", fmt.Errorf("unknown origin %q", r.Origin))
		}
		if strings.Trim(r.Group, "0123456789") != "" || len(r.Group) > 10 {
			bad("group", fmt.Errorf("%q is not an IOMMU group number", r.Group))
		}
	}
	return errors.Join(errs...)
}

// checkAddress accepts a PCI address in the canonical form sysfs names
// functions by (dddd:bb:dd.f, lower case).
func checkAddress(a sysfs.Address) error {
	p, err := sysfs.ParseAddress(string(a))
	if err != nil {
		return err
	}
	if p != a {
		return fmt.Errorf("PCI address %q is not in lower case, as sysfs names functions", a)
	}
	return nil
}

// maxDriverName bounds a driver name; the kernel's longest are a few dozen
// characters (module names stop at 55).
const maxDriverName = 64

// checkDriverName accepts "" (no driver, no override) or a name a kernel
// driver can have: printable ASCII without space or '/', not "." or "..",
// at most maxDriverName long. It becomes a path element
// (bus/pci/drivers/<name>/bind) and a driver_override value.
func checkDriverName(s string) error {
	switch {
	case s == "":
		return nil
	case len(s) > maxDriverName:
		return fmt.Errorf("driver name %.20q... is %d bytes long (at most %d)", s, len(s), maxDriverName)
	case s == "." || s == ".." || strings.Contains(s, ".."):
		return fmt.Errorf("driver name %q contains \"..\"", s)
	case strings.Contains(s, "/"):
		return fmt.Errorf("driver name %q contains \"/\"", s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return fmt.Errorf("driver name %q is not printable ASCII without spaces", s)
		}
	}
	return nil
}

func (s *stateFile) get(a sysfs.Address) *Record {
	for _, r := range s.data.Devices {
		if r.Address == a {
			return r
		}
	}
	return nil
}

func (s *stateFile) put(r *Record) {
	for i, old := range s.data.Devices {
		if old.Address == r.Address {
			s.data.Devices[i] = r
			return
		}
	}
	s.data.Devices = append(s.data.Devices, r)
	slices.SortFunc(s.data.Devices, func(a, b *Record) int { return strings.Compare(string(a.Address), string(b.Address)) })
}

func (s *stateFile) drop(a sysfs.Address) {
	s.data.Devices = slices.DeleteFunc(s.data.Devices, func(r *Record) bool { return r.Address == a })
}

// records returns copies of every record.
func (s *stateFile) records() []Record {
	out := make([]Record, 0, len(s.data.Devices))
	for _, r := range s.data.Devices {
		out = append(out, *r)
	}
	return out
}

// save writes the file atomically: a temporary file in the same
// directory, fsync, rename over the old one, fsync of the directory.
func (s *stateFile) save() error {
	if s.data.Devices == nil {
		s.data.Devices = []*Record{}
	}
	b, err := json.MarshalIndent(&s.data, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	dir := filepath.Dir(s.path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	f, err := os.CreateTemp(dir, ".state-*.tmp")
	if err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write state file %q: %w", s.path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// lockPoll is how often a lock wait retries a held lock. flock(2) cannot
// wait with a deadline, so the wait polls with LOCK_NB; operator commands
// hold the lock for seconds at most.
const lockPoll = 20 * time.Millisecond

// lock takes an exclusive flock on the state file's lock file, so that the
// plugin and an operator's command never change drivers at the same time.
// It waits until the other process is done or ctx ends; then it returns
// ctx's error (wrapped) and the caller must write nothing.
func (s *stateFile) lock(ctx context.Context) (func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("wait for state lock: %w", err)
	}
	p := s.path + ".lock"
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open state lock: %w", err)
	}
	var t *time.Ticker
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == unix.EINTR {
			continue
		}
		if err != unix.EWOULDBLOCK {
			break
		}
		if t == nil {
			t = time.NewTicker(lockPoll)
			defer t.Stop()
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for state lock %q (another sriov-cdi process holds it): %w", p, ctx.Err())
		case <-t.C:
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %q: %w", p, err)
	}
	if err := ctx.Err(); err != nil { // cancelled while the lock was freed
		f.Close()
		return nil, fmt.Errorf("wait for state lock %q: %w", p, err)
	}
	return func() { f.Close() }, nil // closing releases the lock
}

// reload re-reads the file: another process may have changed it.
func (s *stateFile) reload() error {
	n, err := loadState(s.path)
	if err != nil {
		return err
	}
	s.data = n.data
	return nil
}
