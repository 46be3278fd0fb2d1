package binding

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// step is one input to a ReleaseTracker: a kubelet restart, a failed List,
// or an answer (asked at At, seen at At+Late) with the keys it lists
// assigned; want is what that answer releases.
type step struct {
	restart bool
	fail    bool
	at      time.Duration // since t0; the answer's asked time or the restart time
	late    time.Duration // how long after asking the answer is processed
	has     []string
	want    []string
}

func TestReleaseTracker(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 1, 0, 0, 0, time.UTC)
	s := time.Second
	rule := ReleaseRule{Lists: 3, Span: 30 * s, Settle: 2 * time.Minute}
	at := func(d time.Duration, has []string, want ...string) step { return step{at: d, has: has, want: want} }
	a, none := []string{"a"}, []string{}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"nothing within the settle time after start", []step{
			at(0, none), at(10*s, none), at(60*s, none), at(119*s, none)}},
		{"released after settle, 3 lists, 30 s", []step{
			at(110*s, none), at(120*s, none), at(130*s, none), at(140*s, none), at(150*s, none, "a")}},
		{"3 lists are not enough within 30 s", []step{
			at(120*s, none), at(125*s, none), at(130*s, none), at(149*s, none), at(150*s, none, "a")}},
		{"30 s are not enough with 2 lists", []step{
			at(120*s, none), at(200*s, none), at(210*s, none, "a")}},
		{"present once: starts over", []step{
			at(120*s, none), at(130*s, none), at(140*s, a), at(150*s, none), at(160*s, none), at(170*s, none), at(180*s, none, "a")}},
		{"a restart forgets the absence and settles again", []step{
			at(120*s, none), at(130*s, none), {restart: true, at: 135 * s}, at(150*s, none), at(250*s, none), at(260*s, none), at(270*s, none),
			at(280*s, none), at(290*s, none, "a")}},
		{"a failed List counts as a restart at the next answer", []step{
			at(120*s, none), at(130*s, none), {fail: true}, at(140*s, none), at(150*s, none), at(250*s, none), at(260*s, none),
			at(270*s, none), at(280*s, none), at(290*s, none, "a")}},
		{"a stale absence does not count", []step{
			at(120*s, none), at(130*s, none), at(125*s, none), at(130*s, none), at(140*s, none), at(150*s, none, "a")}},
		{"a stale presence starts over", []step{
			at(120*s, none), at(130*s, none), at(140*s, none), at(100*s, a), at(160*s, none), at(170*s, none), at(180*s, none), at(190*s, none, "a")}},
		{"a slow answer counts from when it was asked", []step{
			at(120*s, none), at(130*s, none), {at: 140 * s, late: 10 * s, has: none, want: []string{"a"}}}},
		{"released again while still a candidate", []step{
			at(120*s, none), at(130*s, none), at(150*s, none, "a"), at(160*s, none, "a")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := NewReleaseTracker[string](rule, t0)
			for i, st := range tc.steps {
				switch {
				case st.restart:
					tr.KubeletRestarted(t0.Add(st.at))
				case st.fail:
					tr.ListFailed()
				default:
					assigned := map[string]bool{}
					for _, k := range st.has {
						assigned[k] = true
					}
					got := tr.Observe(t0.Add(st.at), assigned, []string{"a"}, t0.Add(st.at+st.late))
					if !slices.Equal(got, st.want) {
						t.Errorf("step %d (%s): released %v, want %v", i, fmt.Sprint(st.at), got, st.want)
					}
				}
			}
		})
	}
}

// A key that stops being a candidate (restored, or its file removed) is
// forgotten: when it comes back its absence starts over.
func TestReleaseTrackerForgetsNonCandidates(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 1, 0, 0, 0, time.UTC)
	tr := NewReleaseTracker[string](ReleaseRule{Lists: 2, Span: time.Second, Settle: time.Second}, t0)
	obs := func(d time.Duration, cands ...string) []string {
		return tr.Observe(t0.Add(d), nil, cands, t0.Add(d))
	}
	obs(2*time.Second, "a", "b")
	obs(3*time.Second, "b")
	if got := obs(4*time.Second, "a", "b"); !slices.Equal(got, []string{"b"}) {
		t.Errorf("got %v, want only b (a was forgotten at 3 s)", got)
	}
}
