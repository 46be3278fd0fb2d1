package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	yamlv3 "go.yaml.in/yaml/v3"
)

// shapeErrors finds what converting YAML (or JSON, which is YAML) to JSON
// drops silently: a key given twice in one mapping (the later value would
// win) and every document after the first. Syntax errors are left to the
// conversion, which reports them.
// It also returns the first document's node tree, for the lines of later
// messages (nil when the YAML library cannot read the input).
func shapeErrors(data []byte) (*yamlv3.Node, []error) {
	dec := yamlv3.NewDecoder(bytes.NewReader(data))
	var errs []error
	var first *yamlv3.Node
	for {
		var doc yamlv3.Node
		if err := dec.Decode(&doc); err != nil {
			if !errors.Is(err, io.EOF) {
				return nil, nil
			}
			return first, errs
		}
		if len(doc.Content) == 0 || isNull(doc.Content[0]) {
			continue // an empty document, e.g. after a trailing "---"
		}
		if first != nil {
			return first, append(errs, fmt.Errorf("line %d: a second YAML document (after \"---\"); a config file is one document: put every pool in one \"pools\" list", doc.Content[0].Line))
		}
		first = doc.Content[0]
		duplicateKeys(first, &errs)
	}
}

func isNull(n *yamlv3.Node) bool {
	return n.Kind == yamlv3.ScalarNode && n.Tag == "!!null" && (n.Value == "" || n.Value == "~" || n.Value == "null")
}

// duplicateKeys reports every key given twice in a mapping of the tree.
func duplicateKeys(n *yamlv3.Node, errs *[]error) {
	if n.Kind == yamlv3.MappingNode {
		first := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind != yamlv3.ScalarNode || k.Value == "<<" {
				continue
			}
			if line, dup := first[k.Value]; dup {
				*errs = append(*errs, fmt.Errorf("line %d: key %q is given twice (first on line %d); only one value can count: keep one", k.Line, k.Value, line))
				continue
			}
			first[k.Value] = k.Line
		}
	}
	if n.Kind == yamlv3.AliasNode {
		return
	}
	for _, c := range n.Content {
		duplicateKeys(c, errs)
	}
}
