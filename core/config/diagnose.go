package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	yamlv3 "go.yaml.in/yaml/v3"
)

// diagnose explains why strict decoding of js into a value of type t
// failed, with every problem at once: each unknown field and each value of
// the wrong type, with its path (a list element named by its name field,
// e.g. pools[1] ("vf-b")), the line in the file when doc (the file's YAML
// node tree, may be nil) has it, and a hint.
func diagnose(js []byte, t reflect.Type, doc *yamlv3.Node) []error {
	return diagnoseAt(js, t, doc, nil, "")
}

// diagnoseAt is diagnose for a value found at path (field: the last
// field's name, for hints).
func diagnoseAt(js []byte, t reflect.Type, doc *yamlv3.Node, path []step, field string) []error {
	d := &diagnosis{doc: doc}
	d.value(json.RawMessage(js), t, path, field)
	// Converting to JSON sorted the keys: put the problems back in the
	// order of the file.
	slices.SortStableFunc(d.probs, func(a, b problem) int { return a.line - b.line })
	errs := make([]error, len(d.probs))
	for i, p := range d.probs {
		errs[i] = p.err
	}
	return errs
}

type diagnosis struct {
	doc   *yamlv3.Node
	probs []problem
}

type problem struct {
	line int // 0: unknown
	err  error
}

// step is one element of a path: a field name or a list index.
type step struct {
	field string
	index int
	name  string // of a list element, when it has one
}

func (d *diagnosis) report(path []step, format string, args ...any) {
	d.reportAt(path, path, format, args...)
}

// reportAt reports a problem of path whose line is that of linePath.
func (d *diagnosis) reportAt(path, linePath []step, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	at := pathString(path)
	if at != "" {
		msg = at + ": " + msg
	}
	line := lineOf(d.doc, linePath)
	if line > 0 {
		msg = fmt.Sprintf("line %d: %s", line, msg)
	}
	d.probs = append(d.probs, problem{line, errors.New(msg)})
}

func pathString(path []step) string {
	var b strings.Builder
	for _, s := range path {
		if s.field != "" {
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(s.field)
			continue
		}
		fmt.Fprintf(&b, "[%d]", s.index)
		if s.name != "" {
			fmt.Fprintf(&b, " (%q)", s.name)
		}
	}
	return b.String()
}

var (
	selectorListType = reflect.TypeFor[SelectorList]()
	rawType          = reflect.TypeFor[json.RawMessage]()
)

// listNames names the field that names an element of these lists.
var listNames = map[string]string{"pools": "name", "resourceList": "resourceName"}

func (d *diagnosis) value(raw json.RawMessage, t reflect.Type, path []step, hintField string) {
	raw = bytes.TrimSpace(raw)
	if bytes.Equal(raw, []byte("null")) || t == rawType {
		return
	}
	switch {
	case t == selectorListType:
		if len(raw) > 0 && raw[0] == '[' {
			d.value(raw, reflect.TypeFor[[]Selector](), path, hintField)
			return
		}
		d.value(raw, reflect.TypeFor[Selector](), append(path, step{index: 0}), hintField)
	case t.Kind() == reflect.Pointer:
		d.value(raw, t.Elem(), path, hintField)
	case t.Kind() == reflect.Struct:
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(raw, &fields); err != nil {
			d.report(path, "got %s, want an object", jsonKind(raw))
			return
		}
		known := map[string]reflect.StructField{}
		for f := range t.Fields() {
			tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if tag != "" && tag != "-" {
				known[tag] = f
			}
		}
		for _, k := range keysInOrder(raw) {
			f, ok := known[k]
			if !ok {
				d.reportAt(path, append(path, step{field: k}), "unknown field %q (check spelling; see the config reference in README.md)", k)
				continue
			}
			d.value(fields[k], f.Type, append(path, step{field: k}), k)
		}
	case t.Kind() == reflect.Slice:
		var elems []json.RawMessage
		if err := json.Unmarshal(raw, &elems); err != nil {
			d.report(path, "got %s, want a list%s", jsonKind(raw), hint(hintField, raw))
			return
		}
		for i, e := range elems {
			s := step{index: i}
			if nf, ok := listNames[hintField]; ok {
				var named map[string]any
				if json.Unmarshal(e, &named) == nil {
					s.name, _ = named[nf].(string)
				}
			}
			d.value(e, t.Elem(), append(path, s), hintField)
		}
	default:
		if err := json.Unmarshal(raw, reflect.New(t).Interface()); err != nil {
			d.report(path, "got %s, want %s%s", jsonKind(raw), kindName(t), hint(hintField, raw))
		}
	}
}

// keysInOrder lists an object's keys in the order of the input.
func keysInOrder(raw json.RawMessage) []string {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil {
		return nil
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return keys
		}
		k, _ := tok.(string)
		keys = append(keys, k)
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return keys
		}
	}
	return keys
}

func jsonKind(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '"':
		return "a string"
	case '[':
		return "a list"
	case '{':
		return "an object"
	case 't', 'f':
		return "true or false"
	default:
		return "a number"
	}
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a number"
	default:
		return t.String()
	}
}

// hint says how to write the value: IDs and addresses unquoted in YAML
// are numbers (8086) or worse (0x8086, 010 read as octal).
func hint(field string, raw json.RawMessage) string {
	if len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
		return ""
	}
	switch field {
	case "vendors", "devices":
		return `; quote IDs: "8086"`
	case "pciAddresses", "excludeAddresses", "rootDevices":
		return `; quote addresses: "0000:3b:02.1"`
	case "name", "resourceName", "drivers", "pfNames", "linkTypes", "allowUnbindFrom":
		return fmt.Sprintf("; quote it: %q", string(raw))
	}
	return ""
}

// lineOf finds the line of path in the YAML tree: the key's line for a
// field, the element's line for a list index. 0 when unknown.
func lineOf(doc *yamlv3.Node, path []step) int {
	if doc == nil {
		return 0
	}
	n, line := doc, doc.Line
	for _, s := range path {
		switch {
		case s.field != "" && n.Kind == yamlv3.MappingNode:
			found := false
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == s.field {
					line, n, found = n.Content[i].Line, n.Content[i+1], true
					break
				}
			}
			if !found {
				return line
			}
		case s.field == "" && n.Kind == yamlv3.SequenceNode && s.index < len(n.Content):
			n = n.Content[s.index]
			line = n.Line
		case s.field == "" && n.Kind == yamlv3.MappingNode && s.index == 0:
			// one selector object written without a list
		default:
			return line
		}
	}
	return line
}
