package sysfs

import (
	"os"
	"path/filepath"
	"strings"
)

// BlockUsage tells whether the host depends on a block device behind a
// PCI function (a storage controller's disks): a mounted filesystem, swap,
// or a device-mapper/md holder. It returns the reason, or "".
type BlockUsage interface {
	BlockHostUse(a Address) string
}

// LiveBlockUsage answers BlockUsage from root's /sys/class/block and the
// mount table and swaps of procRoot ("/proc" on a host). It reads the
// tables once, when created: make one per binding operation.
type LiveBlockUsage struct {
	root   Root
	mounts map[string]string // "major:minor" -> mount point
	swaps  map[string]bool   // block device name -> in use as swap
}

var _ BlockUsage = (*LiveBlockUsage)(nil)

// NewLiveBlockUsage reads procRoot/self/mountinfo and procRoot/swaps.
// Missing files mean "nothing mounted", not an error.
func NewLiveBlockUsage(root Root, procRoot string) *LiveBlockUsage {
	l := &LiveBlockUsage{root: root, mounts: map[string]string{}, swaps: map[string]bool{}}
	if b, err := os.ReadFile(filepath.Join(procRoot, "self", "mountinfo")); err == nil {
		for line := range strings.Lines(string(b)) {
			f := strings.Fields(line)
			if len(f) >= 5 {
				if _, ok := l.mounts[f[2]]; !ok {
					l.mounts[f[2]] = f[4]
				}
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(procRoot, "swaps")); err == nil {
		for i, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); i > 0 && len(f) > 0 {
				l.swaps[filepath.Base(f[0])] = true
			}
		}
	}
	return l
}

// BlockHostUse implements BlockUsage.
func (l *LiveBlockUsage) BlockHostUse(a Address) string {
	dev, err := filepath.EvalSymlinks(l.root.PCIDevicePath(a))
	if err != nil {
		return ""
	}
	classDir := filepath.Join(l.root.Sys, "class", "block")
	names, err := readDirNames(classDir)
	if err != nil {
		return ""
	}
	for _, n := range names {
		p, err := filepath.EvalSymlinks(filepath.Join(classDir, n))
		if err != nil || !strings.HasPrefix(p, dev+string(filepath.Separator)) {
			continue
		}
		if l.swaps[n] {
			return "block device " + n + " is in use as swap"
		}
		if b, err := os.ReadFile(filepath.Join(p, "dev")); err == nil {
			if mp, ok := l.mounts[strings.TrimSpace(string(b))]; ok {
				return "block device " + n + " is mounted on " + mp
			}
		}
		if hs, err := readDirNames(filepath.Join(p, "holders")); err == nil && len(hs) > 0 {
			return "block device " + n + " is held by " + strings.Join(hs, ",")
		}
	}
	return ""
}
