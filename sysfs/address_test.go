package sysfs

import (
	"strings"
	"testing"
)

func TestParseAddress(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Address
		wantErr string
	}{
		{name: "canonical", in: "0000:3b:02.1", want: "0000:3b:02.1"},
		{name: "upper case is normalised", in: "0000:3B:1F.7", want: "0000:3b:1f.7"},
		{name: "vmd domain", in: "10000:00:00.0", want: "10000:00:00.0"},
		{name: "short form", in: "3b:02.1", wantErr: "missing domain"},
		{name: "empty", in: "", wantErr: "missing ':'"},
		{name: "device too big", in: "0000:3b:20.0", wantErr: "at most 1f"},
		{name: "function too big", in: "0000:3b:02.8", wantErr: "function"},
		{name: "two-digit function", in: "0000:3b:02.10", wantErr: "function"},
		{name: "non-hex bus", in: "0000:xx:02.0", wantErr: "bus"},
		{name: "short domain", in: "000:3b:02.0", wantErr: "domain"},
		{name: "trailing space", in: "0000:3b:02.0 ", wantErr: "function"},
		{name: "sign in device", in: "0000:3b:+1.0", wantErr: "device"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseAddress(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseAddress(%q) error = %v, want it to mention %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseAddress(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{"0000:3b:02.1", "0000:00:1f.7", "3b:02.1", "", "10000:00:00.0", "0000:3b:02.", "::."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddress(s)
		if err != nil {
			return
		}
		// Canonical form is a fixed point and round-trips.
		b, err := ParseAddress(string(a))
		if err != nil || a != b {
			t.Fatalf("ParseAddress(%q) = %q, re-parse = %q, %v", s, a, b, err)
		}
		if strings.ToLower(s) != string(a) {
			t.Fatalf("ParseAddress(%q) = %q changed more than case", s, a)
		}
	})
}
