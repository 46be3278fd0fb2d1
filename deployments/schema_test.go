package deployments

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/sriov-cdi/sriov-cdi/core/config"
)

// The chart's values.schema.json carries a JSON schema of the `config` value
// generated from the plugin's config types (core/config), so that a
// misspelt pool field or an unquoted vendor ID fails `helm install` and
// `helm template` with the field's path. TestValuesSchemaConfig regenerates
// it and fails on drift; `go test ./deployments -run TestValuesSchemaConfig
// -update` rewrites the file.

var update = flag.Bool("update", false, "rewrite helm/sriov-cdi/values.schema.json with the config schema generated from core/config")

const schemaFile = chartDir + "/values.schema.json"

// Definitions the generator owns in values.schema.json; everything else in
// the file is written by hand.
const (
	defConfig   = "config"
	defPool     = "configPool"
	defSelector = "configSelector"
	defVhost    = "configVhostUser"
)

// enums lists the values of the config's string enum types. The test checks
// each against the plugin's own parser, and the parser's error messages
// against this list, so a new value cannot be missed silently.
var enums = map[reflect.Type][]string{
	reflect.TypeFor[config.Mode]():                {string(config.ModeVFIO), string(config.ModeKernel), string(config.ModeVhostUser)},
	reflect.TypeFor[config.VhostUserSocketMode](): {string(config.SocketServer), string(config.SocketClient)},
	reflect.TypeFor[config.BindAt]():              {string(config.BindAtAllocate), string(config.BindAtStartup)},
	reflect.TypeFor[config.Policy]():              {string(config.PolicySpread), string(config.PolicyPack)},
	reflect.TypeFor[config.API]():                 {string(config.APIDevicePlugin), string(config.APIDRA)},
}

// patterns constrains string list items by JSON path (Type.field), where a
// wrong form is a common mistake the parser would only catch at runtime.
var patterns = map[string]string{
	"Selector.vendors": "^[0-9a-fA-F]{4}$",
	"Selector.devices": "^[0-9a-fA-F]{4}$",
}

// generateConfigSchema returns the definitions for config, pool and
// selector, from the Go types.
func generateConfigSchema() (map[string]any, error) {
	defs := map[string]any{}
	refs := map[reflect.Type]string{
		reflect.TypeFor[config.Pool]():      defPool,
		reflect.TypeFor[config.Selector]():  defSelector,
		reflect.TypeFor[config.VhostUser](): defVhost,
	}
	var typeSchema func(owner string, f reflect.StructField, t reflect.Type) (*ordered, error)
	typeSchema = func(owner string, f reflect.StructField, t reflect.Type) (*ordered, error) {
		if vals, ok := enums[t]; ok {
			return obj("type", "string", "enum", vals), nil
		}
		if t == reflect.TypeFor[config.SelectorList]() {
			// One selector object or a list of them (SelectorList.UnmarshalJSON).
			// (Draft 7 ignores keywords beside a $ref, hence if/then/else.)
			return obj("if", obj("type", "array"),
				"then", obj("items", obj("$ref", "#/definitions/"+defSelector)),
				"else", obj("$ref", "#/definitions/"+defSelector)), nil
		}
		if t.Kind() == reflect.Pointer { // optional: the same schema as its element
			return typeSchema(owner, f, t.Elem())
		}
		if name, ok := refs[t]; ok {
			return obj("$ref", "#/definitions/"+name), nil
		}
		switch t.Kind() {
		case reflect.String:
			o := obj("type", "string")
			if p, ok := patterns[owner+"."+jsonName(f)]; ok {
				o.set("pattern", p)
			}
			return o, nil
		case reflect.Bool:
			return obj("type", "boolean"), nil
		case reflect.Int, reflect.Int32, reflect.Int64:
			return obj("type", "integer"), nil
		case reflect.Slice:
			items, err := typeSchema(owner, f, t.Elem())
			if err != nil {
				return nil, err
			}
			return obj("type", "array", "items", items), nil
		}
		return nil, fmt.Errorf("%s.%s: no schema for Go type %s; teach generateConfigSchema", owner, f.Name, t)
	}
	structSchema := func(t reflect.Type, nullable bool) (*ordered, error) {
		props := &ordered{}
		var required []string
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name := jsonName(f)
			if name == "-" || !f.IsExported() {
				continue
			}
			s, err := typeSchema(t.Name(), f, f.Type)
			if err != nil {
				return nil, err
			}
			props.set(name, s)
			if !strings.Contains(f.Tag.Get("json"), ",omitempty") {
				required = append(required, name)
			}
		}
		typ := any("object")
		if nullable {
			typ = []string{"object", "null"}
		}
		o := obj("type", typ, "additionalProperties", false)
		if len(required) > 0 {
			o.set("required", required)
		}
		o.set("properties", props)
		return o, nil
	}
	for _, d := range []struct {
		name     string
		t        reflect.Type
		nullable bool
		desc     string
	}{
		{defConfig, reflect.TypeFor[config.Config](), true, "The pool configuration (`config`), generated from core/config by deployments/schema_test.go; the plugin validates the rest (sriov-cdi config validate)."},
		{defPool, reflect.TypeFor[config.Pool](), false, ""},
		{defSelector, reflect.TypeFor[config.Selector](), false, ""},
		{defVhost, reflect.TypeFor[config.VhostUser](), false, ""},
	} {
		s, err := structSchema(d.t, d.nullable)
		if err != nil {
			return nil, err
		}
		if d.desc != "" {
			s = prepend(s, "description", d.desc)
		}
		defs[d.name] = s
	}
	return defs, nil
}

func jsonName(f reflect.StructField) string {
	tag := f.Tag.Get("json")
	if tag == "" {
		return f.Name
	}
	return strings.Split(tag, ",")[0]
}

func TestValuesSchemaConfig(t *testing.T) {
	defs, err := generateConfigSchema()
	if err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := parseOrdered(old)
	if err != nil {
		t.Fatalf("%s: %v", schemaFile, err)
	}
	root := doc.(*ordered)
	props, _ := root.get("properties").(*ordered)
	if props == nil {
		t.Fatalf("%s: no properties", schemaFile)
	}
	props.set("config", obj("$ref", "#/definitions/"+defConfig))
	d, _ := root.get("definitions").(*ordered)
	if d == nil {
		d = &ordered{}
		root.set("definitions", d)
	}
	for _, name := range []string{defConfig, defPool, defSelector, defVhost} {
		d.set(name, defs[name])
	}
	var buf bytes.Buffer
	format(&buf, root, 0)
	buf.WriteByte('\n')
	if *update {
		if err := os.WriteFile(schemaFile, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", schemaFile)
	} else if !bytes.Equal(old, buf.Bytes()) {
		t.Errorf("%s is not what core/config generates (or not formatted): run `go test ./deployments -run TestValuesSchemaConfig -update`", schemaFile)
	}

	// The enums are complete: the parser accepts each value and names the
	// same set when refusing a bogus one.
	for _, c := range []struct {
		field string
		typ   reflect.Type
		yaml  func(v string) string
	}{
		{"mode", reflect.TypeFor[config.Mode](), func(v string) string {
			if v == string(config.ModeVhostUser) { // no selectors: replace them
				return "mode: " + v + "\n    vhostUser: {count: 1, baseDir: /run/vhu}"
			}
			return "mode: " + v
		}},
		{"socketMode", reflect.TypeFor[config.VhostUserSocketMode](), func(v string) string {
			return "mode: vhost-user\n    vhostUser: {count: 1, baseDir: /run/vhu, socketMode: " + v + "}"
		}},
		{"bindAt", reflect.TypeFor[config.BindAt](), func(v string) string { return "mode: vfio\n    bindAt: " + v }},
		{"allocationPolicy", reflect.TypeFor[config.Policy](), func(v string) string { return "allocationPolicy: " + v }},
	} {
		for _, v := range enums[c.typ] {
			src := enumSource(c.yaml(v))
			if _, err := config.Parse("enum.yaml", []byte(src)); err != nil {
				t.Errorf("%s %q from the schema enum: the plugin refuses it: %v", c.field, v, err)
			}
		}
		src := enumSource(c.yaml("bogus-value"))
		_, err := config.Parse("enum.yaml", []byte(src))
		if err == nil {
			t.Errorf("%s: bogus-value accepted by the plugin; the schema enum %v is too narrow?", c.field, enums[c.typ])
			continue
		}
		for _, v := range enums[c.typ] {
			if !strings.Contains(err.Error(), v) {
				t.Logf("%s: the plugin's refusal does not list %q: %v", c.field, v, err)
			}
		}
	}
}

// enumSource is a one-pool config with the given fields, plus selectors
// unless it is a vhost-user pool (which has none).
func enumSource(fields string) string {
	src := "pools:\n  - name: p\n    " + fields + "\n"
	if !strings.Contains(fields, "vhostUser:") {
		src += "    selectors: {vendors: [\"8086\"]}\n"
	}
	return src
}

// TestChartRejectsBadConfig: helm refuses a misspelt pool field and an
// unquoted vendor ID, naming the path; the shipped configs pass.
func TestChartRejectsBadConfig(t *testing.T) {
	helm := helmBinary(t)
	dir := t.TempDir()
	for _, c := range []struct {
		name, values string
		want         []string // in helm's error
	}{
		{"misspelt pool field", "config:\n  pools:\n    - name: p\n      mode: kernel\n      selector: {vendors: [\"8086\"]}\n",
			[]string{"/config/pools/0", "selector"}},
		{"unquoted vendor ID", "config:\n  pools:\n    - name: p\n      selectors: {vendors: [8086]}\n",
			[]string{"/config/pools/0/selectors/vendors/0", "string"}},
		{"misspelt selector field in a list", "config:\n  pools:\n    - name: p\n      selectors:\n        - vendors: [\"8086\"]\n        - pciAddress: [\"0000:01:00.1\"]\n",
			[]string{"/config/pools/0/selectors/1", "pciAddress"}},
		{"unknown mode", "config:\n  pools:\n    - name: p\n      mode: passthrough\n      selectors: {vendors: [\"8086\"]}\n",
			[]string{"/config/pools/0/mode"}},
		{"misspelt top-level field", "config:\n  resourcePrefx: example.com\n  pools: []\n",
			[]string{"/config", "resourcePrefx"}},
	} {
		f := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".yaml")
		if err := os.WriteFile(f, []byte(c.values), 0o644); err != nil {
			t.Fatal(err)
		}
		args := []string{"template", releaseName, chartDir, "--kube-version", kubeVersion, "-f", f}
		out, err := exec.Command(helm, args...).CombinedOutput()
		if err == nil {
			t.Errorf("%s: helm template accepted\n%s", c.name, c.values)
			continue
		}
		for _, w := range c.want {
			if !bytes.Contains(out, []byte(w)) {
				t.Errorf("%s: helm's error does not name %q:\n%.600s", c.name, w, out)
			}
		}
	}
	// Configs the project ships validate: the chart default, the sample's
	// and a selector given as one object.
	sample, err := os.ReadFile("../sysfs/sample/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var sampleCfg any
	if err := yaml.Unmarshal(sample, &sampleCfg); err != nil {
		t.Fatal(err)
	}
	vals, err := yaml.Marshal(map[string]any{"config": sampleCfg})
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, "sample.yaml")
	if err := os.WriteFile(f, vals, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"template", releaseName, chartDir, "--kube-version", kubeVersion},
		{"template", releaseName, chartDir, "--kube-version", kubeVersion, "-f", f},
	} {
		runHelm(t, helm, args...)
	}
}

// ---------------------------------------------------------------------------
// An order-keeping JSON tree and the file's format, so that regenerating
// leaves the hand-written parts as they are.

type ordered struct {
	keys []string
	vals []any
}

func obj(kv ...any) *ordered {
	o := &ordered{}
	for i := 0; i < len(kv); i += 2 {
		o.set(kv[i].(string), kv[i+1])
	}
	return o
}

func prepend(o *ordered, k string, v any) *ordered {
	return &ordered{keys: append([]string{k}, o.keys...), vals: append([]any{v}, o.vals...)}
}

func (o *ordered) get(k string) any {
	for i, kk := range o.keys {
		if kk == k {
			return o.vals[i]
		}
	}
	return nil
}

func (o *ordered) set(k string, v any) {
	for i, kk := range o.keys {
		if kk == k {
			o.vals[i] = v
			return
		}
	}
	o.keys = append(o.keys, k)
	o.vals = append(o.vals, v)
}

func parseOrdered(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	v, err := parseValue(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("trailing data after the JSON document")
	}
	return v, nil
}

func parseValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch tok {
	case json.Delim('{'):
		o := &ordered{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return nil, err
			}
			v, err := parseValue(dec)
			if err != nil {
				return nil, err
			}
			o.set(k.(string), v)
		}
		_, err := dec.Token()
		return o, err
	case json.Delim('['):
		var a []any
		for dec.More() {
			v, err := parseValue(dec)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		_, err := dec.Token()
		return a, err
	}
	return tok, nil
}

// compact renders v on one line.
func compact(v any) string {
	switch x := v.(type) {
	case *ordered:
		parts := make([]string, len(x.keys))
		for i, k := range x.keys {
			parts[i] = quote(k) + ": " + compact(x.vals[i])
		}
		return "{" + strings.Join(parts, ", ") + "}"
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = compact(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case []string:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = quote(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func quote(s string) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		panic(err)
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

// format writes v indented by two spaces per level; an object or list that
// fits in 100 columns (and holds no object with more than four keys) stays
// on one line.
func format(w *bytes.Buffer, v any, indent int) {
	c := compact(v)
	o, isObj := v.(*ordered)
	if !isObj || (indent*2+len(c) <= 100 && !hasBigObject(o)) {
		w.WriteString(c)
		return
	}
	w.WriteString("{\n")
	for i, k := range o.keys {
		w.WriteString(strings.Repeat("  ", indent+1))
		w.WriteString(quote(k) + ": ")
		format(w, o.vals[i], indent+1)
		if i < len(o.keys)-1 {
			w.WriteByte(',')
		}
		w.WriteByte('\n')
	}
	w.WriteString(strings.Repeat("  ", indent) + "}")
}

func hasBigObject(o *ordered) bool {
	if len(o.keys) > 4 {
		return true
	}
	for _, v := range o.vals {
		if c, ok := v.(*ordered); ok && hasBigObject(c) {
			return true
		}
	}
	return false
}
