// Package deployments holds what an operator installs: the Helm chart
// (helm/sriov-cdi), plain manifests and examples (manifests), container
// runtime configuration (runtime) and the image: imagebuild (`make image`, a
// module of its own that builds it without a container engine) and the
// Dockerfile. This package has no Go code of its own; its tests decode every
// manifest and every object the chart renders strictly into the Kubernetes
// API types, so an unknown or misspelled field fails `make test`, check that
// the pool configuration they carry passes the plugin's own config parser,
// that values.schema.json holds the config schema generated from
// core/config (schema_test.go, -update), and that two image builds are
// byte for byte the same (image_test.go).
package deployments
