package vhostuser

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/sriov-cdi/sriov-cdi/core/config"
)

// ErrBaseMissing is wrapped when the base directory does not exist or is
// not a directory.
var ErrBaseMissing = errors.New("vhost-user base directory unusable")

// maxDepth bounds how deep Release descends into what a container made
// in its directory (each level holds a descriptor).
const maxDepth = 32

// selinuxXattr is the extended attribute holding a file's SELinux label.
const selinuxXattr = "security.selinux"

// Dirs creates and removes the allocation directories of one Layout. It
// is safe for concurrent use; operations on one Dirs are serialised.
type Dirs struct {
	Layout
	uid, gid int    // -1: leave as created
	perm     uint32 // directory mode
	label    string // SELinux label; "": none
	log      *zap.Logger

	mu sync.Mutex
}

// Option adjusts New.
type Option func(*Dirs)

// WithOwner gives every directory this owner (fchown).
func WithOwner(uid, gid int) Option { return func(d *Dirs) { d.uid, d.gid = uid, gid } }

// WithPermissions sets the directory mode (default 0770); only the
// permission bits are used.
func WithPermissions(perm uint32) Option { return func(d *Dirs) { d.perm = perm & 0o777 } }

// WithSELinuxLabel labels every directory (security.selinux).
func WithSELinuxLabel(label string) Option { return func(d *Dirs) { d.label = label } }

// WithLogger logs every directory made and removed.
func WithLogger(log *zap.Logger) Option { return func(d *Dirs) { d.log = log } }

// New returns the Dirs of a layout; it checks the layout but touches
// nothing (Check tells whether the base directory is usable).
func New(l Layout, opts ...Option) (*Dirs, error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	d := &Dirs{Layout: l, uid: -1, gid: -1, perm: 0o770, log: zap.NewNop()}
	for _, o := range opts {
		o(d)
	}
	return d, nil
}

// ForPool returns the Dirs of a device-plugin vhost-user pool, with the
// owner, permissions and label of its config.
func ForPool(resource string, p *config.Pool, log *zap.Logger) (*Dirs, error) {
	return ForPoolPrefix(resource, p, config.VhostUserDirPrefix(p.Name), log)
}

// ForPoolPrefix is ForPool with another directory name prefix (the DRA
// front door's per-claim prefix, config.VhostUserDRADirPrefix + claim).
func ForPoolPrefix(resource string, p *config.Pool, prefix string, log *zap.Logger) (*Dirs, error) {
	if p.Mode != config.ModeVhostUser || p.VhostUser == nil {
		return nil, fmt.Errorf("pool %q is not a vhost-user pool", p.Name)
	}
	v := p.VhostUser
	opts := []Option{WithSELinuxLabel(v.SELinuxLabel)}
	if log != nil {
		opts = append(opts, WithLogger(log))
	}
	if uid, gid, ok := config.ParseOwner(v.Owner); ok {
		opts = append(opts, WithOwner(uid, gid))
	}
	if perm, ok := config.ParsePermissions(v.Permissions); ok {
		opts = append(opts, WithPermissions(perm))
	}
	l := LayoutFor(resource, p)
	l.Prefix = prefix
	d, err := New(l, opts...)
	if err != nil {
		return nil, fmt.Errorf("pool %q: %w", p.Name, err)
	}
	return d, nil
}

// openBase opens the base directory. Links in its own path are followed
// (it is the operator's path); everything below is reached through the
// descriptor without following links.
func (d *Dirs) openBase() (int, error) {
	fd, err := unix.Open(d.BaseDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	switch {
	case err == nil:
		return fd, nil
	case errors.Is(err, unix.ENOENT):
		return -1, fmt.Errorf("%w: %q does not exist: create it (the switch's socket directory) or fix vhostUser.baseDir", ErrBaseMissing, d.BaseDir)
	case errors.Is(err, unix.ENOTDIR):
		return -1, fmt.Errorf("%w: %q is not a directory: fix vhostUser.baseDir", ErrBaseMissing, d.BaseDir)
	default:
		return -1, fmt.Errorf("%w: open %q: %w", ErrBaseMissing, d.BaseDir, err)
	}
}

// Check reports whether the base directory is usable.
func (d *Dirs) Check() error {
	fd, err := d.openBase()
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

// PrepareFresh makes an empty directory for key: whatever had its name (a
// leftover of a released allocation not yet cleaned up, or anything
// planted there) is removed first, without following links. The device
// plugin uses it: kubelet allocates a slot only when no container holds
// it, so anything in its directory belongs to an earlier pod.
func (d *Dirs) PrepareFresh(key string) (Allocation, error) {
	return d.prepare(key, true)
}

// Prepare makes the directory of key if it does not exist and (re)applies
// owner, mode and label; an existing directory and its content are kept,
// so calling it again is harmless (DRA's NodePrepareResources may repeat).
// An entry of that name that is not a directory (e.g. a link) is removed
// first.
func (d *Dirs) Prepare(key string) (Allocation, error) {
	return d.prepare(key, false)
}

func (d *Dirs) prepare(key string, fresh bool) (Allocation, error) {
	a, err := d.Describe(key)
	if err != nil {
		return Allocation{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	base, err := d.openBase()
	if err != nil {
		return Allocation{}, fmt.Errorf("prepare vhost-user directory for %q: %w", key, err)
	}
	defer unix.Close(base)
	name := d.Prefix + key
	var st unix.Stat_t
	err = unix.Fstatat(base, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	exists := err == nil
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return Allocation{}, fmt.Errorf("prepare vhost-user directory %q: %w", a.HostDir, err)
	}
	if exists && (fresh || st.Mode&unix.S_IFMT != unix.S_IFDIR) {
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			d.log.Warn("removing an entry named like a vhost-user directory that is not a directory", zap.String("path", a.HostDir), zap.String("device", key))
		}
		if err := removeEntry(base, name, 0); err != nil {
			return Allocation{}, fmt.Errorf("clear leftover vhost-user directory %q: %w", a.HostDir, err)
		}
		exists = false
	}
	if !exists {
		if err := unix.Mkdirat(base, name, 0o700); err != nil {
			return Allocation{}, fmt.Errorf("create vhost-user directory %q: %w", a.HostDir, err)
		}
	}
	if err := d.own(base, name); err != nil {
		if !exists {
			_ = removeEntry(base, name, 0) // never leave a half-made directory
		}
		return Allocation{}, fmt.Errorf("prepare vhost-user directory %q: %w", a.HostDir, err)
	}
	d.log.Info("vhost-user directory ready", zap.String("device", key), zap.String("path", a.HostDir), zap.Bool("kept", exists))
	return a, nil
}

// own applies owner, mode and label through a descriptor of the directory
// opened without following links.
func (d *Dirs) own(base int, name string) error {
	fd, err := unix.Openat(base, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer unix.Close(fd)
	if d.uid >= 0 || d.gid >= 0 {
		if err := unix.Fchown(fd, d.uid, d.gid); err != nil {
			return fmt.Errorf("chown %d:%d: %w", d.uid, d.gid, err)
		}
	}
	if err := unix.Fchmod(fd, d.perm); err != nil {
		return fmt.Errorf("chmod %o: %w", d.perm, err)
	}
	if d.label != "" {
		if err := unix.Fsetxattr(fd, selinuxXattr, append([]byte(d.label), 0), 0); err != nil {
			return fmt.Errorf("set SELinux label %q: %w", d.label, err)
		}
	}
	return nil
}

// Release removes the directory of key and everything in it, never
// following a link; an absent directory is not an error.
func (d *Dirs) Release(key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.release(key)
}

func (d *Dirs) release(key string) error {
	base, err := d.openBase()
	if err != nil {
		return fmt.Errorf("release vhost-user directory of %q: %w", key, err)
	}
	defer unix.Close(base)
	if err := removeEntry(base, d.Prefix+key, 0); err != nil {
		return fmt.Errorf("remove vhost-user directory %q: %w", d.hostDir(key), err)
	}
	d.log.Info("vhost-user directory removed", zap.String("device", key), zap.String("path", d.hostDir(key)))
	return nil
}

// ReleaseUnchangedSince removes the directory of key only if it has not
// changed (status change time) after t, and reports whether it did: a
// release decided from an answer asked at t must not remove a directory
// that a newer allocation made after it.
func (d *Dirs) ReleaseUnchangedSince(key string, t time.Time) (bool, error) {
	if err := ValidateKey(key); err != nil {
		return false, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	at, ok, err := d.changedAt(key)
	if err != nil || !ok || at.After(t) {
		return false, err
	}
	return true, d.release(key)
}

// ChangedAt returns when the directory of key last changed status (made,
// chowned, an entry added or removed), and false when there is none.
func (d *Dirs) ChangedAt(key string) (time.Time, bool, error) {
	if err := ValidateKey(key); err != nil {
		return time.Time{}, false, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.changedAt(key)
}

func (d *Dirs) changedAt(key string) (time.Time, bool, error) {
	base, err := d.openBase()
	if err != nil {
		return time.Time{}, false, err
	}
	defer unix.Close(base)
	var st unix.Stat_t
	if err := unix.Fstatat(base, d.Prefix+key, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return time.Time{}, false, nil
		}
		return time.Time{}, false, fmt.Errorf("stat vhost-user directory %q: %w", d.hostDir(key), err)
	}
	return time.Unix(st.Ctim.Unix()), true, nil
}

// Keys lists the keys that have an entry in the base directory (a
// directory, or anything else named like one), sorted.
func (d *Dirs) Keys() ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.keys()
}

func (d *Dirs) keys() ([]string, error) {
	entries, err := os.ReadDir(d.BaseDir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %q does not exist", ErrBaseMissing, d.BaseDir)
		}
		return nil, fmt.Errorf("list vhost-user base directory %q: %w", d.BaseDir, err)
	}
	var out []string
	for _, e := range entries {
		key, ok := strings.CutPrefix(e.Name(), d.Prefix)
		if ok && ValidateKey(key) == nil {
			out = append(out, key)
		}
	}
	slices.Sort(out)
	return out, nil
}

// Reconcile removes the directories of every key keep rejects (after a
// restart: allocations no longer held) and returns those keys; the others
// and foreign files are left alone. It stops at the first failure.
func (d *Dirs) Reconcile(keep func(key string) bool) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	keys, err := d.keys()
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, k := range keys {
		if keep(k) {
			continue
		}
		if err := d.release(k); err != nil {
			return removed, err
		}
		removed = append(removed, k)
	}
	return removed, nil
}

func (d *Dirs) hostDir(key string) string { return d.BaseDir + "/" + d.Prefix + key }

// removeEntry removes name in the directory open as parent: a directory
// with everything in it, anything else (a link included) by unlinking it.
// It never follows a link and never leaves parent's tree.
func removeEntry(parent int, name string, depth int) error {
	var st unix.Stat_t
	if err := unix.Fstatat(parent, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := unix.Unlinkat(parent, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unlink %q: %w", name, err)
		}
		return nil
	}
	if depth >= maxDepth {
		return fmt.Errorf("%q: nested deeper than %d directories; remove it by hand", name, maxDepth)
	}
	fd, err := unix.Openat(parent, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %q: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	names, err := f.Readdirnames(-1) // all first: removing while listing may skip entries
	if err != nil {
		return fmt.Errorf("list %q: %w", name, err)
	}
	for _, n := range names {
		if err := removeEntry(fd, n, depth+1); err != nil {
			return fmt.Errorf("in %q: %w", name, err)
		}
	}
	if err := unix.Unlinkat(parent, name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove %q: %w", name, err)
	}
	return nil
}
