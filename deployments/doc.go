// Package deployments holds what an operator installs: the Helm chart
// (helm/sriov-cdi), plain manifests and examples (manifests), container
// runtime configuration (runtime) and the image recipe (Dockerfile). It has
// no Go code of its own; its tests decode every manifest and every object
// the chart renders strictly into the Kubernetes API types, so an unknown
// or misspelled field fails `make test`, and check that the pool
// configuration they carry passes the plugin's own config parser.
package deployments
