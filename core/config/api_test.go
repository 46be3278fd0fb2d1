package config

import (
	"strings"
	"testing"
)

func TestParseAPI(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []API    // per pool, when valid
		wantErr []string // each must appear in the error
		notErr  string   // must not appear in the error
	}{
		{
			name: "default is deviceplugin, dra accepted",
			in: `pools:
  - {name: a, selectors: {vendors: ["8086"]}}
  - {name: b, api: dra, mode: vfio, selectors: {vendors: ["15b3"]}}
  - {name: c, api: deviceplugin, selectors: {vendors: ["1af4"]}}`,
			want: []API{APIDevicePlugin, APIDRA, APIDevicePlugin},
		},
		{
			name:    "unknown api",
			in:      `pools: [{name: a, api: csi, selectors: {vendors: ["8086"]}}]`,
			wantErr: []string{`pools[0] ("a").api: "csi" is not an API; use "deviceplugin"`},
		},
		{
			name: "dra pool name must be a DNS label",
			in: `pools:
  - {name: Vf_Big, api: dra, selectors: {vendors: ["8086"]}}
  - {name: Vf_Big2, selectors: {vendors: ["15b3"]}}`,
			wantErr: []string{`pools[0] ("Vf_Big").name: "Vf_Big": a DRA pool's name is its DRA pool and DeviceClass name, so it must be a DNS label`},
		},
		{
			name: "allocate-only answers refused on dra pools",
			in: `pools:
  - {name: a, api: dra, mode: vfio, deviceNodes: true, cdiAnnotations: true, selectors: {vendors: ["8086"]}}`,
			wantErr: []string{
				`pools[0] ("a").deviceNodes: a DRA pool hands devices out through CDI only`,
				`pools[0] ("a").cdiAnnotations: a DRA pool hands devices out through CDI device IDs only`,
			},
		},
		{
			name: "dra pool names unique across prefixes",
			in: `pools:
  - {name: a, api: dra, selectors: {vendors: ["8086"]}}
  - {name: a, api: dra, resourcePrefix: other.example.com, selectors: {vendors: ["15b3"]}}`,
			wantErr: []string{`pools[1] ("a").name: DRA pool "a" is already defined by pools[0] ("a")`},
		},
		{
			name: "driver name too long",
			in: `resourcePrefix: ` + strings.Repeat("a", 60) + `.example.com
pools:
  - {name: a, api: dra, selectors: {vendors: ["8086"]}}`,
			wantErr: []string{`it is also the DRA driver name, which may have at most 63`},
			notErr:  "device plugin socket", // a DRA pool has none
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("c.yaml", []byte(tc.in))
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatal("Parse succeeded, want an error")
				}
				if tc.notErr != "" && strings.Contains(err.Error(), tc.notErr) {
					t.Errorf("error has %q:\n%v", tc.notErr, err)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error lacks %q:\n%v", w, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i, w := range tc.want {
				if c.Pools[i].API != w {
					t.Errorf("pools[%d].api = %q, want %q", i, c.Pools[i].API, w)
				}
			}
			if got, want := c.DRAPools(), tc.want != nil && contains(tc.want, APIDRA); got != want {
				t.Errorf("DRAPools() = %v, want %v", got, want)
			}
		})
	}
}

func contains(as []API, a API) bool {
	for _, x := range as {
		if x == a {
			return true
		}
	}
	return false
}
