package binding

import (
	"time"
)

// ReleaseRule says what counts as evidence that kubelet released a device.
// The device plugin API has no "deallocate": a device is free when
// kubelet's PodResources List stops showing it. One answer is not enough:
// right after a kubelet restart List answers before kubelet knows every
// pod, and an answer can be overtaken by a newer one.
type ReleaseRule struct {
	// Lists is how many consecutive answers (each asked later than the
	// one before) must lack the device.
	Lists int
	// Span is how long the absence must last, from the first answer that
	// lacked the device to now.
	Span time.Duration
	// Settle: no answer asked within Settle after a kubelet (re)start or
	// registration counts as absence, and nothing is released then.
	Settle time.Duration
}

// DefaultReleaseRule: absent from 3 consecutive answers spanning 30 s, and
// nothing counted within 2 minutes of a kubelet (re)start. With the
// watcher's 10 s poll a release takes 30-40 s, 2.5 minutes after a restart.
func DefaultReleaseRule() ReleaseRule {
	return ReleaseRule{Lists: 3, Span: 30 * time.Second, Settle: 2 * time.Minute}
}

// WithDefaults fills zero fields from DefaultReleaseRule.
func (r ReleaseRule) WithDefaults() ReleaseRule {
	d := DefaultReleaseRule()
	if r.Lists <= 0 {
		r.Lists = d.Lists
	}
	if r.Span <= 0 {
		r.Span = d.Span
	}
	if r.Settle <= 0 {
		r.Settle = d.Settle
	}
	return r
}

// ReleaseTracker decides from successive PodResources answers which
// devices were released, under a ReleaseRule. It is pure: inputs are the
// answers (assigned sets with the time each was asked), kubelet restart
// times and the current time; it reads no clock and does no I/O. Keys
// are whatever identifies a device to the caller (a unit address, a
// resource and device ID). Not safe for concurrent use.
type ReleaseTracker[K comparable] struct {
	rule      ReleaseRule
	restart   time.Time // last kubelet (re)start or registration known
	failed    bool      // the last List failed: kubelet may be restarting
	lastAsked time.Time // when the newest answer counted was asked
	absent    map[K]absence
}

type absence struct {
	since time.Time // asked time of the first answer that lacked it
	lists int       // consecutive answers that lacked it
}

// NewReleaseTracker starts tracking at start, which counts as a kubelet
// restart: what kubelet did before is unknown.
func NewReleaseTracker[K comparable](rule ReleaseRule, start time.Time) *ReleaseTracker[K] {
	return &ReleaseTracker[K]{rule: rule.WithDefaults(), restart: start, absent: map[K]absence{}}
}

// KubeletRestarted records that kubelet (re)started or that a device plugin
// (re)registered with it at `at`: the absence seen so far is forgotten and
// answers asked within the settle time do not count.
func (t *ReleaseTracker[K]) KubeletRestarted(at time.Time) {
	if at.After(t.restart) {
		t.restart = at
	}
	clear(t.absent)
}

// ListFailed records a failed List: kubelet may be down, so the next
// answer is treated as coming from a restarted kubelet.
func (t *ReleaseTracker[K]) ListFailed() { t.failed = true }

// Observe takes one successful answer, asked at `asked`, listing the
// assigned keys, and returns the candidates released as of now (in
// candidates' order). Candidates are the keys the caller would release if
// kubelet no longer held them; keys no longer candidates are forgotten.
// A candidate present in any answer, even a stale one, starts over; an
// absence counts only from an answer asked after the newest one counted
// and after the settle time following the last restart.
func (t *ReleaseTracker[K]) Observe(asked time.Time, assigned map[K]bool, candidates []K, now time.Time) []K {
	if t.failed {
		t.failed = false
		t.KubeletRestarted(asked)
	}
	fresh := asked.After(t.lastAsked)
	if fresh {
		t.lastAsked = asked
	}
	settled := t.restart.Add(t.rule.Settle)
	counts := fresh && !asked.Before(settled)
	keep := make(map[K]bool, len(candidates))
	var released []K
	for _, k := range candidates {
		keep[k] = true
		if assigned[k] {
			delete(t.absent, k)
			continue
		}
		a, seen := t.absent[k]
		if counts {
			if !seen {
				a.since = asked
			}
			a.lists++
			t.absent[k] = a
		}
		if a.lists >= t.rule.Lists && now.Sub(a.since) >= t.rule.Span && !now.Before(settled) {
			released = append(released, k)
		}
	}
	for k := range t.absent {
		if !keep[k] {
			delete(t.absent, k)
		}
	}
	return released
}
