package vhostuser

import (
	"os"
	"testing"
)

// BenchmarkPrepareRelease: one slot's life on the host, a fresh directory
// (owner and mode set) and its removal with a socket-sized file in it.
func BenchmarkPrepareRelease(b *testing.B) {
	d, err := New(testLayout(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		a, err := d.PrepareFresh("slot-0")
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(a.HostSocket, nil, 0o600); err != nil {
			b.Fatal(err)
		}
		if err := d.Release("slot-0"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkChangedAt: what the release poll costs per slot.
func BenchmarkChangedAt(b *testing.B) {
	d, err := New(testLayout(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := d.PrepareFresh("slot-0"); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, ok, err := d.ChangedAt("slot-0"); err != nil || !ok {
			b.Fatal(err)
		}
	}
}
