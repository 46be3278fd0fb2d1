package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// TestReferenceCoversEveryField fails when a config field is missing from
// the reference in README.md.
func TestReferenceCoversEveryField(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []reflect.Type{reflect.TypeFor[Config](), reflect.TypeFor[Pool](), reflect.TypeFor[Selector](), reflect.TypeFor[VhostUser]()} {
		for f := range typ.Fields() {
			tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if tag == "" || tag == "-" {
				continue
			}
			if !strings.Contains(string(readme), "| `"+tag+"` |") {
				t.Errorf("README.md reference lacks %s.%s (`%s`)", typ.Name(), f.Name, tag)
			}
		}
	}
}
