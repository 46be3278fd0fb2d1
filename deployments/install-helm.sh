#!/usr/bin/env bash
# Installs the helm binary the chart tests use (deployments/deployments_test.go
# renders and lints the chart when `helm` is on PATH, and skips otherwise).
#
# Built from the Go module proxy with `go install`, pinned, into $(go env GOPATH)/bin
# (GOBIN if set) - .ci/run puts ~/go/bin on PATH. About 2 minutes of CPU cold;
# a no-op when the pinned version is already there.
#
# The link flags are the ones helm's own Makefile sets: without them `helm version`
# prints no patch version and helm assumes Kubernetes 1.20 when no cluster is given,
# which fails charts that require a newer one.
set -euo pipefail

HELM_VERSION=v3.22.0 # `go list -m -versions helm.sh/helm/v3`
K8S_MINOR=37         # helm v3.22.0 is built on k8s.io/* v0.37

command -v go >/dev/null 2>&1 || { echo "install-helm: go is not installed" >&2; exit 1; }
bindir=$(go env GOBIN)
[[ -n $bindir ]] || bindir=$(go env GOPATH)/bin
helm=$bindir/helm

if [[ -x $helm ]] && [[ $("$helm" version --template '{{.Version}}' 2>/dev/null) == "$HELM_VERSION" ]]; then
	echo "install-helm: $helm is $HELM_VERSION already"
	exit 0
fi

echo "install-helm: go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION into $bindir (a few minutes cold)"
start=$(date +%s)
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
	ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$K8S_MINOR"
done
CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
echo "install-helm: $("$helm" version --short) in $(($(date +%s) - start))s at $helm"
case ":$PATH:" in
*":$bindir:"*) ;;
*) echo "install-helm: note: $bindir is not on PATH; add it (or set HELM=$helm) for the chart tests" ;;
esac
