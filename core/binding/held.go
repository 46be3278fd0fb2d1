package binding

import (
	"os"
	"sync"
	"syscall"

	"github.com/sriov-cdi/sriov-cdi/core/pool"
)

// Holdings reads, from the state file, which functions sriov-cdi bound and
// for which pool, for the pool planner (pool.WithHeld): a unit must stay in
// its pool while binding takes away what its selectors read (driver,
// netdevs). It shares no lock with the Manager — a rescan never waits for
// a bind — and re-reads the file only when it was replaced (every save
// renames a new file into place), so a rescan costs one stat. Changes made
// by another process (the bind command) are seen too.
type Holdings struct {
	path string

	mu   sync.Mutex
	key  fileKey
	held pool.Held
}

type fileKey struct{ ino, size, mtime int64 }

// NewHoldings reads the state file at path (DefaultStatePath in a
// DaemonSet).
func NewHoldings(path string) *Holdings { return &Holdings{path: path} }

// Held returns every function whose driver sriov-cdi changed or is
// changing (records are written before the first driver write) and the
// pool it did so for. A file that cannot be read or parsed yields the last
// good answer; the binding manager reports such a file itself.
func (h *Holdings) Held() pool.Held {
	h.mu.Lock()
	defer h.mu.Unlock()
	var key fileKey
	if fi, err := os.Stat(h.path); err == nil {
		key = fileKey{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			key.ino = int64(st.Ino)
		}
	}
	if h.held != nil && key == h.key {
		return h.held
	}
	s, err := loadState(h.path)
	if err != nil {
		if h.held == nil {
			return pool.Held{}
		}
		return h.held
	}
	held := make(pool.Held, len(s.data.Devices))
	for _, r := range s.data.Devices {
		held[r.Address] = r.Pool
	}
	h.key, h.held = key, held
	return held
}
