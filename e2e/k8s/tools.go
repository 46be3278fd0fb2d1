//go:build tools

// Package tools pins the kubelet command so that
//
//	CGO_ENABLED=0 go build -trimpath -tags providerless k8s.io/kubernetes/cmd/kubelet
//
// works from this module (e2e/kubelet/run.sh builds it that way).
package tools

import _ "k8s.io/kubernetes/cmd/kubelet"
