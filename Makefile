# sriov-cdi — build, test, end-to-end labs.
GO      ?= go
BIN     ?= bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/sriov-cdi/sriov-cdi/cmd/internal/version.Version=$(VERSION)

.PHONY: all build build-full build-dp image test vet fmt-check race fuzz bench bench-host e2e-kernel e2e-nic e2e-kubelet e2e-cluster e2e-dra test-kubelet-client clean

all: build

# Two binaries from the same source (the image ships both): sriov-cdi, the full one (device
# plugin + DRA driver in one process), and sriov-cdi-dp, built with -tags nodra (device plugin,
# CLI, NRI; no client-go): about half the resident memory. The chart runs sriov-cdi-dp unless
# a pool has api: dra (README "Image").
build: build-full build-dp

build-full:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/sriov-cdi ./cmd/sriov-cdi

build-dp:
	CGO_ENABLED=0 $(GO) build -tags nodra -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/sriov-cdi-dp ./cmd/sriov-cdi

# Container image without a container engine (deployments/imagebuild): an OCI image layout
# tar at $(IMAGE_TAR), reproducible, for `ctr -n k8s.io images import`; PUSH=1 also pushes
# $(IMAGE) (credentials from ~/.docker/config.json). Fails when it cannot build.
# deployments/image.sh builds the same image from deployments/Dockerfile with docker or buildah.
IMAGE     ?= ghcr.io/sriov-cdi/sriov-cdi:$(VERSION)
IMAGE_TAR ?= $(BIN)/sriov-cdi-image.tar
image:
	$(GO) -C deployments/imagebuild run . -repo "$(CURDIR)" -version '$(VERSION)' -image '$(IMAGE)' \
	  -out '$(abspath $(IMAGE_TAR))' $(if $(filter 1,$(PUSH)),-push)

# The test command (README, .ci/run): formatting, vet, then every unit test under the race detector.
test: fmt-check vet race

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...
	$(GO) vet -tags nodra ./cmd/...

race:
	$(GO) test -race -count=1 ./...
	$(GO) test -race -count=1 -tags nodra ./cmd/internal/cli -run 'NoDRA'

# Short fuzzing pass over every fuzz target (seed corpora run in `make test` already).
FUZZTIME ?= 10s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# The production path at 256 / 1,024 / 4,096 VFs: the static binary with the
# DaemonSet's settings over a synthetic tree bind-mounted on /sys, one link
# per netdev, in a private mount + network namespace (root only; skipped
# with a message otherwise). Not part of `make test`: slow and needs root.
bench-host:
	bash e2e/bench/host.sh

# Real kubelet device-plugin client code driving our plugin (separate module: k8s.io/kubernetes).
test-kubelet-client:
	cd e2e/k8s && $(GO) test -count=1 ./...

# Lab 1: a real 6.1 kernel under QEMU with an emulated IOMMU and SR-IOV NVMe controllers.
e2e-kernel:
	bash e2e/kernel/run.sh

# Lab 1b: the same kernel on a machine with emulated SR-IOV NICs (igb/igbvf); QEMU 10 from
# bookworm-backports, fetched into the lab's cache, never installed (e2e/kernel/README.md).
e2e-nic:
	bash e2e/kernel/run.sh --machine nic

# Lab 2: a real kubelet + containerd + runc with CDI, standalone.
e2e-kubelet:
	bash e2e/kubelet/run.sh

# Lab 3: a real cluster (etcd, API server, controller-manager, scheduler, kubelet, containerd,
# CNI); the image from `make image` installed with helm, as a user does (e2e/cluster/README.md).
e2e-cluster:
	bash e2e/cluster/run.sh

# The DRA scenarios (api: dra pools, ResourceClaims) on the same lab, after s1's install.
e2e-dra:
	bash e2e/cluster/run.sh --dra

clean:
	rm -rf $(BIN)
