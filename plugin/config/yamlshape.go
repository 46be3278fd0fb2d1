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
func shapeErrors(data []byte) []error {
	dec := yamlv3.NewDecoder(bytes.NewReader(data))
	var errs []error
	for docs := 0; ; {
		var doc yamlv3.Node
		if err := dec.Decode(&doc); err != nil {
			if !errors.Is(err, io.EOF) {
				return nil
			}
			return errs
		}
		if len(doc.Content) == 0 || isNull(doc.Content[0]) {
			continue // an empty document, e.g. after a trailing "---"
		}
		if docs++; docs > 1 {
			return append(errs, fmt.Errorf("line %d: a second YAML document (after \"---\"); a config file is one document: put every pool in one \"pools\" list", doc.Content[0].Line))
		}
		duplicateKeys(doc.Content[0], &errs)
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
