//go:build tools

// Package tools pins the Kubernetes commands the labs build from this module:
//
//	CGO_ENABLED=0 go build -trimpath -tags providerless k8s.io/kubernetes/cmd/<name>
//
// kubelet for e2e/kubelet/run.sh; kube-apiserver, kube-controller-manager,
// kube-scheduler and kubectl as well for e2e/cluster/run.sh. One module, one
// module cache, one build cache for all of them.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
