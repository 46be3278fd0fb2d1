#!/usr/bin/env bash
# shellcheck disable=SC2317 # functions run from traps and wait_for
# Lab 2: a real kubelet + containerd + runc with CDI, standalone (no API server).
#
# Builds kubelet (from the e2e/k8s module) and containerd into a cache keyed by
# version, builds busybox and pause OCI images by hand, starts containerd and a
# standalone kubelet with all state under a temp dir, runs `sriov-cdi plugin`
# against the real-kernel sysfs snapshot (sysfs/sample/nvme-sriov-acs.tar.gz)
# and checks what pods get. Needs root and Go; installs runc, busybox-static,
# curl and jq with apt-get when missing.
#
# Environment:
#   E2E_CACHE   build cache (default /var/cache/sriov-cdi-e2e)
#   E2E_KEEP=1  keep the work dir (logs, state) after the run
#   E2E_BIN     use this sriov-cdi binary instead of building ./cmd/sriov-cdi
#
# Output: one `E2E PASS|FAIL|SKIP <name> <detail>` line per scenario, then
# `e2e-kubelet: N passed, M failed, K skipped`. Exit status 1 on any FAIL.
set -euo pipefail
# No `cmd | grep -q` below: with pipefail, grep exiting early can fail the
# pipeline with SIGPIPE. Match on captured output instead.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
K8S_MOD="$REPO/e2e/k8s"
K8S_VERSION=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit }' "$K8S_MOD/go.mod")
CONTAINERD_VERSION=v2.4.2
CACHE=${E2E_CACHE:-/var/cache/sriov-cdi-e2e}
KUBE_DIR="$CACHE/k8s-$K8S_VERSION"
CTRD_DIR="$CACHE/containerd-$CONTAINERD_VERSION"
IMG_DIR="$CACHE/images-v2"
SNAPSHOT="$REPO/sysfs/sample/nvme-sriov-acs.tar.gz"

NODE=e2e-node
PREFIX=sriov-cdi.io
VFIO_POOL=vf
VFIO_DEV=0000:01:00.2
KERNEL_POOL=nvme
KERNEL_DEVS=(0000:02:00.1 0000:02:00.2)
BUSYBOX_IMAGE=docker.io/library/busybox:sriov-cdi-e2e
PAUSE_IMAGE=registry.k8s.io/pause:sriov-cdi-e2e
DP_DIR=/var/lib/kubelet/device-plugins # fixed in kubelet
CDI_DIR=/var/run/cdi

PASSED=0 FAILED=0 SKIPPED=0
T0=$(date +%s)

log() { printf '[%4ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() { # die REASON: the lab itself could not run; counts as a failure
	log "FATAL: $*"
	echo "E2E FAIL setup $*"
	echo "e2e-kubelet: $PASSED passed, $((FAILED + 1)) failed, $SKIPPED skipped"
	exit 1
}
result() { # result PASS|FAIL|SKIP name detail...
	local r=$1 name=$2
	shift 2
	echo "E2E $r $name $*"
	case $r in
	PASS) PASSED=$((PASSED + 1)) ;;
	FAIL) FAILED=$((FAILED + 1)) ;;
	SKIP) SKIPPED=$((SKIPPED + 1)) ;;
	esac
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll every 0.5 s.
wait_for() {
	local secs=$1 what=$2
	shift 2
	local deadline=$(($(date +%s) + secs))
	until "$@" >/dev/null 2>&1; do
		if (($(date +%s) >= deadline)); then
			log "timed out after ${secs}s waiting for $what"
			return 1
		fi
		sleep 0.5
	done
}

[[ $(id -u) == 0 ]] || die "must run as root (kubelet, containerd, mknod)"
[[ -n $K8S_VERSION ]] || die "no k8s.io/kubernetes version in $K8S_MOD/go.mod"
command -v go >/dev/null || die "go is not installed"
[[ -f $SNAPSHOT ]] || die "missing $SNAPSHOT"

# ---------------------------------------------------------------------------
# Packages, builds, images (cached).

ensure_packages() {
	local missing=() p
	for p in runc busybox-static curl jq; do
		[[ $(dpkg-query -W -f '${Status}' "$p" 2>/dev/null) == *"install ok installed"* ]] || missing+=("$p")
	done
	((${#missing[@]} == 0)) && return
	log "apt-get install ${missing[*]}"
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2; then
		apt-get update >&2 || true
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2 ||
			die "apt-get install ${missing[*]} failed"
	fi
}

build_kubelet() {
	if [[ -x $KUBE_DIR/kubelet ]]; then
		log "kubelet $K8S_VERSION: cached in $KUBE_DIR"
		return
	fi
	log "building kubelet $K8S_VERSION (cold: several minutes)"
	mkdir -p "$KUBE_DIR"
	(cd "$K8S_MOD" && CGO_ENABLED=0 go build -trimpath -tags providerless \
		-ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION" \
		-o "$KUBE_DIR/kubelet.tmp" k8s.io/kubernetes/cmd/kubelet) || die "go build kubelet $K8S_VERSION failed"
	mv "$KUBE_DIR/kubelet.tmp" "$KUBE_DIR/kubelet"
}

build_containerd() {
	local b
	if [[ -x $CTRD_DIR/bin/containerd && -x $CTRD_DIR/bin/containerd-shim-runc-v2 && -x $CTRD_DIR/bin/ctr ]]; then
		log "containerd $CONTAINERD_VERSION: cached in $CTRD_DIR"
		return
	fi
	log "building containerd $CONTAINERD_VERSION (cold: a few minutes)"
	rm -rf "$CTRD_DIR/bin.tmp"
	mkdir -p "$CTRD_DIR"
	CGO_ENABLED=0 GOBIN="$CTRD_DIR/bin.tmp" go install \
		"github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
		"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
		"github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION" || die "go install containerd $CONTAINERD_VERSION failed"
	for b in containerd containerd-shim-runc-v2 ctr; do [[ -x $CTRD_DIR/bin.tmp/$b ]] || die "go install did not produce $b"; done
	rm -rf "${CTRD_DIR:?}/bin"
	mv "$CTRD_DIR/bin.tmp" "$CTRD_DIR/bin"
}

sha256() { sha256sum "$1" | cut -d' ' -f1; }

# oci_image OUT.tar NAME ROOTFS_DIR ENTRYPOINT_JSON: an OCI image-layout
# tarball with one uncompressed layer, tagged NAME for `ctr images import`.
oci_image() {
	local out=$1 name=$2 rootfs=$3 entrypoint=$4
	local d
	d=$(mktemp -d)
	mkdir -p "$d/blobs/sha256"
	tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "$rootfs" -cf "$d/layer.tar" .
	local layer lsize
	layer=$(sha256 "$d/layer.tar")
	lsize=$(stat -c %s "$d/layer.tar")
	mv "$d/layer.tar" "$d/blobs/sha256/$layer"
	printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Entrypoint":%s},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
		"$entrypoint" "$layer" >"$d/config.json"
	local cfg csize
	cfg=$(sha256 "$d/config.json")
	csize=$(stat -c %s "$d/config.json")
	mv "$d/config.json" "$d/blobs/sha256/$cfg"
	printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
		"$cfg" "$csize" "$layer" "$lsize" >"$d/manifest.json"
	local man msize
	man=$(sha256 "$d/manifest.json")
	msize=$(stat -c %s "$d/manifest.json")
	mv "$d/manifest.json" "$d/blobs/sha256/$man"
	printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
		"$man" "$msize" "$name" "${name##*:}" >"$d/index.json"
	echo '{"imageLayoutVersion":"1.0.0"}' >"$d/oci-layout"
	tar --numeric-owner --owner=0 --group=0 -C "$d" -cf "$out.tmp" oci-layout index.json blobs
	mv "$out.tmp" "$out"
	rm -rf "$d"
}

build_images() {
	if [[ -f $IMG_DIR/busybox.tar && -f $IMG_DIR/pause.tar ]]; then
		log "images: cached in $IMG_DIR"
		return
	fi
	log "building busybox and pause OCI images"
	mkdir -p "$IMG_DIR"
	local d
	d=$(mktemp -d)
	# busybox: static busybox and the applets the test containers use.
	mkdir -p "$d/busybox/bin" "$d/busybox/dev" "$d/busybox/proc" "$d/busybox/sys" "$d/busybox/tmp" "$d/busybox/etc"
	cp /bin/busybox "$d/busybox/bin/busybox"
	local a
	for a in sh ls env sort sleep cat echo grep tr true; do ln -s busybox "$d/busybox/bin/$a"; done
	oci_image "$IMG_DIR/busybox.tar" "$BUSYBOX_IMAGE" "$d/busybox" '["/bin/sh"]'
	# pause: a static Go binary that sleeps until SIGTERM/SIGINT (it is PID 1:
	# it must handle the signal itself).
	mkdir -p "$d/pause-src" "$d/pause"
	cat >"$d/pause-src/main.go" <<'EOF'
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
EOF
	(cd "$d/pause-src" && CGO_ENABLED=0 GO111MODULE=off GOFLAGS='' go build -trimpath -ldflags '-s -w' -o "$d/pause/pause" main.go) ||
		die "go build pause failed"
	oci_image "$IMG_DIR/pause.tar" "$PAUSE_IMAGE" "$d/pause" '["/pause"]'
	rm -rf "$d"
}

build_sriov_cdi() { # sets SRIOV_CDI (empty if the product has no main package yet)
	SRIOV_CDI=
	if [[ -n ${E2E_BIN:-} ]]; then
		SRIOV_CDI=$E2E_BIN
		return
	fi
	if ! compgen -G "$REPO/cmd/sriov-cdi/*.go" >/dev/null; then
		NO_PRODUCT_REASON="cmd/sriov-cdi has no Go files yet"
		return
	fi
	log "building sriov-cdi"
	(cd "$REPO" && CGO_ENABLED=0 go build -trimpath -o "$WORK/bin/sriov-cdi" ./cmd/sriov-cdi) ||
		die "go build ./cmd/sriov-cdi failed"
	SRIOV_CDI=$WORK/bin/sriov-cdi
}

# has_subcommand NAME [FLAG]: the root help lists command NAME and
# `sriov-cdi NAME --help` succeeds (and mentions FLAG). A CLI may print the
# root help for an unknown command, hence the listing check.
has_subcommand() {
	[[ -n $SRIOV_CDI ]] || return 1
	local out
	out=$("$SRIOV_CDI" --help 2>&1) || true
	grep -Eq "^[[:space:]]+$1([,[:space:]]|\$)" <<<"$out" || return 1
	out=$("$SRIOV_CDI" "$1" --help 2>&1) || return 1
	[[ -z ${2:-} ]] || grep -q -e "$2" <<<"$out"
}

# ---------------------------------------------------------------------------
# Processes and cleanup.

WORK=
CONTAINERD_PID='' KUBELET_PID='' PLUGIN_PID='' NRI_PID=''
CDI_BEFORE='' DP_BEFORE=''
KUBELET_VAR_EXISTED=1
KUBELET_N=0

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	if [[ -n $WORK && -d $WORK ]]; then
		log "cleanup"
		# Let kubelet stop the pods, then stop everything we started.
		rm -f "$WORK"/manifests/*.yaml 2>/dev/null
		if [[ -n $KUBELET_PID ]] && kill -0 "$KUBELET_PID" 2>/dev/null; then
			wait_for 30 "kubelet to stop the pods" no_pod_containers
		fi
		stop_pid "$NRI_PID" nri-plugin
		stop_pid "$PLUGIN_PID" plugin
		stop_pid "$KUBELET_PID" kubelet
		if [[ -n $CONTAINERD_PID ]] && kill -0 "$CONTAINERD_PID" 2>/dev/null; then
			remove_all_containers
		fi
		stop_pid "$CONTAINERD_PID" containerd
		kill_shims
		unmount_under "$WORK"
		# CDI specs our plugin wrote into the host's /var/run/cdi.
		local f
		for f in "$CDI_DIR"/*; do
			[[ -e $f ]] || continue
			grep -qxF "$f" <<<"$CDI_BEFORE" || rm -f "$f"
		done
		# Host paths kubelet and containerd use whatever their flags say.
		if [[ $KUBELET_VAR_EXISTED == 0 ]]; then
			rm -rf /var/lib/kubelet
		else
			for f in "$DP_DIR"/*; do
				[[ -e $f ]] || continue
				grep -qxF "$f" <<<"$DP_BEFORE" || rm -f "$f"
			done
		fi
		if [[ ${E2E_KEEP:-} == 1 || $rc != 0 && ${E2E_KEEP:-} != 0 ]]; then
			log "kept $WORK"
		else
			rm -rf "$WORK"
		fi
	fi
	exit "$rc"
}

stop_pid() { # stop_pid PID NAME: SIGTERM, then SIGKILL after 15 s
	local pid=$1 name=$2 i
	[[ -n $pid ]] || return 0
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null
	for ((i = 0; i < 30; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.5
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "$name (pid $pid) ignored SIGTERM; killing"
		kill -KILL "$pid" 2>/dev/null
	fi
	wait "$pid" 2>/dev/null
	return 0
}

ctr_() { "$CTRD_DIR/bin/ctr" -a "$WORK/containerd/containerd.sock" -n k8s.io "$@"; }

no_pod_containers() {
	local t
	t=$(ctr_ tasks ls -q 2>/dev/null) || return 0
	[[ -z $t ]]
}

remove_all_containers() {
	local id
	for id in $(ctr_ tasks ls -q 2>/dev/null); do
		ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1
	done
	sleep 1
	for id in $(ctr_ tasks ls -q 2>/dev/null); do
		ctr_ tasks rm -f "$id" >/dev/null 2>&1
	done
	for id in $(ctr_ containers ls -q 2>/dev/null); do
		ctr_ containers rm "$id" >/dev/null 2>&1
	done
}

# kill_shims: shims our containerd started outlive it; they carry our socket
# path on their command line.
kill_shims() {
	local p
	for p in /proc/[0-9]*; do
		[[ -r $p/cmdline ]] || continue
		if [[ $(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) == *containerd-shim-runc-v2*"$WORK/containerd/containerd.sock"* ]]; then
			kill -KILL "${p#/proc/}" 2>/dev/null
		fi
	done
}

unmount_under() {
	local m
	# Deepest first.
	while read -r m; do
		umount -l "$m" 2>/dev/null || true
	done < <(awk -v p="$1" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r)
}

# ---------------------------------------------------------------------------
# containerd, kubelet, plugin.

start_containerd() {
	local c=$WORK/containerd
	mkdir -p "$c/root" "$c/state" "$(dirname "$NRI_SOCKET")" "$CDI_DIR"
	mkdir -p "$c/nri-plugins" "$c/nri-conf"
	# containerd 2.4's native format (version 4); CDI is always on in 2.x.
	cat >"$c/config.toml" <<EOF
version = 4
root = "$c/root"
state = "$c/state"
imports = []

[plugins.'io.containerd.server.v1.grpc']
  address = "$c/containerd.sock"
[plugins.'io.containerd.server.v1.ttrpc']
  address = "$c/containerd.sock.ttrpc"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$PAUSE_IMAGE"

[plugins.'io.containerd.cri.v1.runtime']
  cdi_spec_dirs = ["$CDI_DIR"]
  # This VM lacks CAP_SYS_RESOURCE: runc could not raise oom_score_adj.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$c/cni-bin"]
    conf_dir = "$c/cni-conf"
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      # Copied into every container spec (and the sandbox's): the path Kata
      # uses for cold plug, and the double injection our NRI plugin removes.
      pod_annotations = ["cdi.k8s.io/*"]
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false

[plugins.'io.containerd.nri.v1.nri']
  disable = false
  socket_path = "$NRI_SOCKET"
  plugin_path = "$c/nri-plugins"
  plugin_config_path = "$c/nri-conf"
EOF
	log "starting containerd"
	PATH="$CTRD_DIR/bin:$PATH" "$CTRD_DIR/bin/containerd" --config "$c/config.toml" --log-level debug \
		>"$WORK/logs/containerd.log" 2>&1 &
	CONTAINERD_PID=$!
	wait_for 30 "containerd socket" ctr_ version || fail_setup "containerd did not start"
	ctr_ images import --platform linux/amd64 "$IMG_DIR/busybox.tar" >/dev/null || fail_setup "import busybox image"
	ctr_ images import --platform linux/amd64 "$IMG_DIR/pause.tar" >/dev/null || fail_setup "import pause image"
}

start_kubelet() {
	KUBELET_N=$((KUBELET_N + 1))
	KUBELET_LOG=$WORK/logs/kubelet-$KUBELET_N.log
	mkdir -p "$WORK/kubelet" "$WORK/manifests" "$WORK/pod-logs"
	cat >"$WORK/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
containerRuntimeEndpoint: unix://$WORK/containerd/containerd.sock
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
staticPodPath: $WORK/manifests
fileCheckFrequency: 1s
syncFrequency: 5s
podLogsDir: $WORK/pod-logs
enforceNodeAllocatable: []
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
EOF
	log "starting kubelet #$KUBELET_N"
	"$KUBE_DIR/kubelet" --config "$WORK/kubelet-config.yaml" --root-dir "$WORK/kubelet" --cert-dir "$WORK/kubelet/pki" \
		--hostname-override "$NODE" --v 2 >"$KUBELET_LOG" 2>&1 &
	KUBELET_PID=$!
	wait_for 30 "kubelet.sock" test -S "$DP_DIR/kubelet.sock" || fail_setup "kubelet did not create $DP_DIR/kubelet.sock"
	wait_for 60 "kubelet API" kubelet_get /healthz || fail_setup "kubelet API not up"
}

restart_kubelet() {
	stop_pid "$KUBELET_PID" kubelet
	KUBELET_PID=
	start_kubelet
}

kubelet_get() { curl -skf --max-time 5 "https://127.0.0.1:10250$1"; }

# pods_json: kubelet's view of its pods (status merged for static pods).
pods_json() { kubelet_get /pods; }

pod_field() { # pod_field POD JQ-EXPR (empty when kubelet does not answer)
	{ pods_json | jq -r --arg n "$1-$NODE" ".items[] | select(.metadata.name == \$n) | $2"; } 2>/dev/null || true
}

# registered RESOURCE: the current kubelet received a device list for it.
registered() {
	grep -q "State pushed for device plugin.*resource=\"$1\"" "$KUBELET_LOG"
}

start_plugin() {
	FIX=$WORK/fixture
	mkdir -p "$FIX" "$WORK/plugin"
	tar -xzf "$SNAPSHOT" -C "$FIX"
	# The snapshot's /dev/vfio entries are empty files: make real char nodes.
	local name majmin mode
	while read -r name majmin mode; do
		[[ -n $name ]] || continue
		rm -f "$FIX/dev/vfio/$name"
		mknod -m "$mode" "$FIX/dev/vfio/$name" c "${majmin%%:*}" "${majmin##*:}"
	done <"$FIX/dev-vfio.txt"
	cat >"$WORK/plugin/config.yaml" <<EOF
resourcePrefix: $PREFIX
pools:
  - name: $VFIO_POOL
    mode: vfio
    selectors:
      pciAddresses: ["$VFIO_DEV"]
  - name: $KERNEL_POOL
    mode: kernel
    selectors:
      pciAddresses: ["${KERNEL_DEVS[0]}", "${KERNEL_DEVS[1]}"]
EOF
	log "starting sriov-cdi plugin"
	# Optional outputs stay in the work dir when the binary has the flag.
	local extra=()
	if [[ $("$SRIOV_CDI" plugin --help 2>&1) == *--device-info-dir* ]]; then
		extra+=(--device-info-dir "$WORK/devinfo")
	fi
	"$SRIOV_CDI" plugin --config "$WORK/plugin/config.yaml" \
		--device-plugin-dir "$DP_DIR" --cdi-dir "$CDI_DIR" \
		--state-file "$WORK/plugin/state.json" \
		--sysfs-root "$FIX/sys" --dev-root "$FIX/dev" \
		--health-addr 127.0.0.1:0 --log-level debug \
		"${extra[@]}" >"$WORK/logs/plugin.log" 2>&1 &
	PLUGIN_PID=$!
}

# ---------------------------------------------------------------------------
# Pods.

# pod NAME 'RESOURCE=N ...' [ANNOTATION=VALUE ...]: write a static pod whose
# container prints /dev/vfio and its environment, then sleeps.
pod() {
	local name=$1 res=$2
	shift 2
	local f=$WORK/manifests/$name.yaml tmp=$WORK/manifests/.$name.yaml.tmp r
	{
		echo "apiVersion: v1"
		echo "kind: Pod"
		echo "metadata:"
		echo "  name: $name"
		echo "  namespace: default"
		if (($# > 0)); then
			echo "  annotations:"
			for r in "$@"; do echo "    \"${r%%=*}\": \"${r#*=}\""; done
		fi
		echo "spec:"
		echo "  hostNetwork: true"
		echo "  restartPolicy: Never"
		echo "  terminationGracePeriodSeconds: 2"
		echo "  containers:"
		echo "  - name: c"
		echo "    image: $BUSYBOX_IMAGE"
		echo "    imagePullPolicy: Never"
		# The environment comes from /proc/1/environ (PID 1 is this sh, as runc
		# started it): a shell drops variables whose names are not identifiers
		# (PCIDEVICE_SRIOV-CDI_IO_VF) from what it passes on to `env`.
		cat <<'EOF'
    command:
    - /bin/sh
    - -c
    - |
      echo E2E-BEGIN
      ls -l /dev/vfio
      tr '\0' '\n' </proc/1/environ | sort
      echo E2E-END
      trap 'exit 0' TERM
      while :; do sleep 1; done
EOF
		echo "    resources:"
		echo "      limits:"
		for r in $res; do echo "        $r" | sed 's/=/: "/; s/$/"/'; done
	} >"$tmp"
	mv "$tmp" "$f"
}

delete_pod() { # delete_pod NAME: remove the manifest, wait until kubelet forgot the pod
	rm -f "$WORK/manifests/$1.yaml"
	wait_for 60 "pod $1 to go away" pod_gone "$1"
}

pod_gone() { [[ -z $(pod_field "$1" .metadata.name) ]]; }

pod_phase_is() { [[ $(pod_field "$1" .status.phase) == "$2" ]]; }

# pod_settled NAME: Running, or in a state it will not leave by itself
# (rejected, or its container cannot be created: kubelet retries those
# forever).
pod_settled() {
	local st
	st=$(pod_field "$1" '[.status.phase, (.status.containerStatuses[0].state.waiting.reason // "")] | join(" ")')
	case $st in
	Running* | Failed* | Succeeded* | *CreateContainerError | *CreateContainerConfigError | *RunContainerError | *ErrImageNeverPull) return 0 ;;
	esac
	return 1
}

pod_log() { # pod_log NAME: the container's output (CRI log format stripped)
	local f
	f=$(find "$WORK/pod-logs" -path "*_$1-${NODE}_*/c/*.log" 2>/dev/null | sort | tail -n1)
	[[ -n $f ]] || return 1
	sed -E 's/^[^ ]+ (stdout|stderr) [FP] //' "$f"
}

pod_log_complete() { [[ $(pod_log "$1") == *E2E-END* ]]; }

# container_info POD: `ctr containers info` of the pod's container c.
container_info() {
	local id
	id=$(ctr_ containers ls -q "labels.\"io.kubernetes.pod.name\"==$1-$NODE,labels.\"io.kubernetes.container.name\"==c")
	id=${id%%$'\n'*}
	[[ -n $id ]] || return 1
	ctr_ containers info "$id"
}

# env name of a resource as KubeVirt reads it: upper case, '.' and '/' as '_'
# ('-' stays: PCI_RESOURCE_SRIOV-CDI_IO_VF).
env_suffix() { tr 'a-z./' 'A-Z__' <<<"$1"; }

# run_pod NAME 'RESOURCES' [ANNOTATIONS...]: start a pod, wait until it runs
# and printed its output. Fails (returns 1) with a reason in POD_ERR.
run_pod() {
	local name=$1
	POD_ERR=
	pod "$@"
	wait_for 90 "pod $name Running" pod_settled "$name" || true
	if ! pod_phase_is "$name" Running; then
		POD_ERR="pod $name not Running: phase=$(pod_field "$name" .status.phase) reason=$(pod_field "$name" .status.reason) message=$(pod_field "$name" .status.message) waiting=$(pod_field "$name" '.status.containerStatuses[0].state.waiting // {} | tostring')"
		return 1
	fi
	if ! wait_for 30 "pod $name output" pod_log_complete "$name"; then
		POD_ERR="pod $name printed no complete output"
		return 1
	fi
}

# check_env NAME VAR WANT-ADDRESSES: VAR in the pod's output holds exactly the
# comma-separated addresses (any order).
check_env() {
	local got want
	got=$(pod_log "$1" | sed -n "s/^$2=//p" | tr ',' '\n' | sort | paste -sd,)
	want=$(tr ' ,' '\n' <<<"$3" | sort | paste -sd,)
	if [[ $got != "$want" ]]; then
		CHECK_ERR="$2=${got:-<unset>}, want $want"
		if [[ -z $got ]]; then
			CHECK_ERR+=" (PCI* variables in the container: $(pod_log "$1" | grep '^PCI' | paste -sd' '); KubeVirt keeps '-' in the name)"
		fi
		return 1
	fi
}

# check_vfio_node NAME GROUP: the pod's ls -l /dev/vfio shows a char node.
check_vfio_node() {
	if ! grep -Eq "^c.* $2\$" <<<"$(pod_log "$1")"; then
		CHECK_ERR="no char device /dev/vfio/$2 in the container; ls -l /dev/vfio printed: $(pod_log "$1" | sed -n '/E2E-BEGIN/,/=/p' | head -n 8 | tr '\n' '|')"
		return 1
	fi
}

failure_context() { # failure_context: log tails that explain a failure
	local f pat
	for f in "$KUBELET_LOG" "$WORK/logs/containerd.log" "$WORK/logs/plugin.log" "$WORK/logs/nri.log"; do
		[[ -f $f ]] || continue
		case ${f##*/} in
		kubelet*) pat='^E[0-9]{4} |^W[0-9]{4} .*(device|plugin|admission)|registration request' ;;
		containerd*) pat='level=(error|warning)|CDI devices from' ;;
		*) pat='"level":"(warn|error|fatal)"|"msg":"(allocated|registered with kubelet|wrote CDI spec)|level=(error|warning)' ;;
		esac
		echo "---- ${f#"$WORK"/}: last errors and device lines" >&2
		# Drop timestamps and pids so repeated lines collapse.
		grep -Ei "$pat" "$f" |
			grep -v -e 'cgroup v1 is deprecated' -e 'StatsCollector' -e 'fsverity' -e 'failed to load cni' |
			sed -E 's/^[IEW][0-9]{4} [0-9:.]+ +[0-9]+ //; s/^time="[^"]*" //; s/"ts":"[^"]*",//' |
			awk '!seen[$0]++' | tail -n 10 | cut -c1-400 >&2 || true
	done
}

fail() { # fail NAME DETAIL
	result FAIL "$1" "$2"
	failure_context
}

fail_setup() {
	failure_context
	die "$*"
}

# ---------------------------------------------------------------------------
# Scenarios.

VFIO_RES=$PREFIX/$VFIO_POOL
KERNEL_RES=$PREFIX/$KERNEL_POOL
VFIO_ENV=$(env_suffix "$VFIO_RES")
KERNEL_ENV=$(env_suffix "$KERNEL_RES")
VFIO_GROUP=

s1_single_device() {
	local n=s1-single-device
	if ! run_pod s1 "$VFIO_RES=1"; then fail $n "$POD_ERR"; return; fi
	local errs=()
	check_vfio_node s1 "$VFIO_GROUP" || errs+=("$CHECK_ERR")
	check_vfio_node s1 vfio || errs+=("$CHECK_ERR (KubeVirt and DPDK need the VFIO container device too)")
	check_env s1 "PCIDEVICE_$VFIO_ENV" "$VFIO_DEV" || errs+=("$CHECK_ERR")
	check_env s1 "PCI_RESOURCE_$VFIO_ENV" "$VFIO_DEV" || errs+=("$CHECK_ERR")
	if ((${#errs[@]})); then
		pod_log s1 | sed 's/^/  s1| /' >&2
		fail $n "$(IFS=';'; echo "${errs[*]}")"
	else
		result PASS $n "pod got /dev/vfio/$VFIO_GROUP and PCIDEVICE_$VFIO_ENV=PCI_RESOURCE_$VFIO_ENV=$VFIO_DEV"
	fi
}

# Runs while s1 holds the only vfio device.
s3_exhausted() {
	local n=s3-pool-exhausted
	pod s3 "$VFIO_RES=1"
	if ! wait_for 60 "pod s3 to be rejected" pod_phase_is s3 Failed; then
		fail $n "pod s3 was not rejected: phase=$(pod_field s3 .status.phase) reason=$(pod_field s3 .status.reason)"
		delete_pod s3 || true
		return
	fi
	local reason msg
	reason=$(pod_field s3 .status.reason)
	msg=$(pod_field s3 .status.message)
	log "s3 rejected: reason=$reason message=$msg"
	if [[ $reason == UnexpectedAdmissionError && $msg == *"$VFIO_RES"* ]]; then
		result PASS $n "kubelet rejected the pod: $reason: $msg"
	else
		fail $n "pod s3 failed, but not with kubelet's device admission error: reason=$reason message=$msg"
	fi
	delete_pod s3 || true
}

s2_two_pools() {
	local n=s2-two-pools
	if ! run_pod s2 "$VFIO_RES=1 $KERNEL_RES=1"; then fail $n "$POD_ERR"; return; fi
	local errs=() kdev
	check_vfio_node s2 "$VFIO_GROUP" || errs+=("$CHECK_ERR")
	check_env s2 "PCIDEVICE_$VFIO_ENV" "$VFIO_DEV" || errs+=("$CHECK_ERR")
	check_env s2 "PCI_RESOURCE_$VFIO_ENV" "$VFIO_DEV" || errs+=("$CHECK_ERR")
	kdev=$(pod_log s2 | sed -n "s/^PCIDEVICE_$KERNEL_ENV=//p")
	if [[ $kdev != "${KERNEL_DEVS[0]}" && $kdev != "${KERNEL_DEVS[1]}" ]]; then
		errs+=("PCIDEVICE_$KERNEL_ENV=${kdev:-<unset>}, want one of ${KERNEL_DEVS[*]}")
	else
		check_env s2 "PCI_RESOURCE_$KERNEL_ENV" "$kdev" || errs+=("$CHECK_ERR")
	fi
	if ((${#errs[@]})); then
		pod_log s2 | sed 's/^/  s2| /' >&2
		fail $n "$(IFS=';'; echo "${errs[*]}")"
	else
		result PASS $n "one container got $VFIO_RES=$VFIO_DEV (/dev/vfio/$VFIO_GROUP) and $KERNEL_RES=$kdev"
	fi
}

s4_kubelet_restart() {
	local n=s4-kubelet-restart
	restart_kubelet
	if ! wait_for 30 "re-registration" registered "$VFIO_RES"; then
		fail $n "plugin did not re-register $VFIO_RES within 30 s of the kubelet restart"
		return
	fi
	wait_for 10 "re-registration" registered "$KERNEL_RES" || true
	if ! run_pod s4 "$VFIO_RES=1"; then fail $n "$POD_ERR"; return; fi
	local errs=()
	check_vfio_node s4 "$VFIO_GROUP" || errs+=("$CHECK_ERR")
	check_env s4 "PCIDEVICE_$VFIO_ENV" "$VFIO_DEV" || errs+=("$CHECK_ERR")
	if ((${#errs[@]})); then
		fail $n "$(IFS=';'; echo "${errs[*]}")"
	else
		result PASS $n "plugin re-registered; new pod got /dev/vfio/$VFIO_GROUP"
	fi
}

# nri_check POD: sets NRI_ANN (cdi.k8s.io annotations in the container spec)
# and NRI_NODES (how often /dev/vfio/GROUP is in linux.devices).
nri_check() {
	local info
	info=$(container_info "$1") || return 1
	NRI_ANN=$(jq -r '.Spec.annotations // {} | keys[] | select(startswith("cdi.k8s.io/"))' <<<"$info" | paste -sd,)
	NRI_NODES=$(jq --arg p "/dev/vfio/$VFIO_GROUP" '[.Spec.linux.devices // [] | .[] | select(.path == $p)] | length' <<<"$info")
}

s5_nri() {
	local ann="cdi.k8s.io/sriov-cdi=$VFIO_RES=$VFIO_DEV"
	# Without our NRI plugin: the pod annotation is copied into the container
	# spec (pod_annotations) and the device is injected once (CdiDevices).
	local n=s5a-annotation-without-nri
	if ! run_pod s5a "$VFIO_RES=1" "$ann"; then
		fail $n "$POD_ERR"
	elif ! nri_check s5a; then
		fail $n "no container info for pod s5a"
	elif [[ -n $NRI_ANN && $NRI_NODES == 1 ]]; then
		result PASS $n "container spec keeps the outer annotation ($NRI_ANN), /dev/vfio/$VFIO_GROUP once"
	else
		fail $n "annotations=[${NRI_ANN}] /dev/vfio/$VFIO_GROUP entries=$NRI_NODES, want the annotation and 1 entry"
	fi
	delete_pod s5a || true

	n=s5b-nri-strips-annotation
	if ! has_subcommand nri; then
		result SKIP $n "sriov-cdi has no nri subcommand yet"
		return
	fi
	log "starting sriov-cdi nri"
	"$SRIOV_CDI" nri --socket "$NRI_SOCKET" --cdi-spec-dirs "$CDI_DIR" --log-level debug >"$WORK/logs/nri.log" 2>&1 &
	NRI_PID=$!
	if ! wait_for 30 "an NRI plugin to connect" grep -q 'connected and synchronized' "$WORK/logs/containerd.log"; then
		fail $n "sriov-cdi nri did not connect to containerd's NRI socket $NRI_SOCKET; its log: $(tail -n 5 "$WORK/logs/nri.log" | tr '\n' '|')"
		return
	fi
	if ! kill -0 "$NRI_PID" 2>/dev/null; then
		fail $n "sriov-cdi nri exited: $(tail -n 5 "$WORK/logs/nri.log" | tr '\n' '|')"
		NRI_PID=
		return
	fi
	if ! run_pod s5b "$VFIO_RES=1" "$ann"; then
		fail $n "$POD_ERR"
	elif ! nri_check s5b; then
		fail $n "no container info for pod s5b"
	elif [[ -z $NRI_ANN && $NRI_NODES == 1 ]]; then
		result PASS $n "NRI plugin removed the cdi.k8s.io annotation; /dev/vfio/$VFIO_GROUP once"
	else
		fail $n "annotations=[${NRI_ANN}] /dev/vfio/$VFIO_GROUP entries=$NRI_NODES, want no annotation and 1 entry"
	fi
	delete_pod s5b || true
	stop_pid "$NRI_PID" nri-plugin
	NRI_PID=
}

# ---------------------------------------------------------------------------

main() {
	ensure_packages
	build_kubelet
	build_containerd
	build_images

	WORK=$(mktemp -d /tmp/sriov-cdi-kubelet.XXXXXX)
	mkdir -p "$WORK/logs" "$WORK/bin"
	NRI_SOCKET=$WORK/nri/nri.sock
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	CDI_BEFORE=$(ls -1d "$CDI_DIR"/* 2>/dev/null || true)
	DP_BEFORE=$(ls -1d "$DP_DIR"/* 2>/dev/null || true)
	KUBELET_VAR_EXISTED=0
	[[ ! -e /var/lib/kubelet ]] || KUBELET_VAR_EXISTED=1
	log "work dir $WORK"

	NO_PRODUCT_REASON=
	build_sriov_cdi
	local all=(s1-single-device s2-two-pools s3-pool-exhausted s4-kubelet-restart s5a-annotation-without-nri s5b-nri-strips-annotation)
	if [[ -z $SRIOV_CDI ]] || ! has_subcommand plugin --device-plugin-dir; then
		local why=${NO_PRODUCT_REASON:-"sriov-cdi has no plugin subcommand yet"}
		local s
		for s in "${all[@]}"; do result SKIP "$s" "$why"; done
		finish
	fi

	if [[ -S $DP_DIR/kubelet.sock ]] && curl -sk --max-time 2 https://127.0.0.1:10250/healthz >/dev/null 2>&1; then
		die "a kubelet is already running on this host"
	fi
	start_containerd
	start_kubelet
	start_plugin
	VFIO_GROUP=$(basename "$(readlink "$FIX/sys/bus/pci/devices/$VFIO_DEV/iommu_group")")
	if ! wait_for 30 "registration of $VFIO_RES" registered "$VFIO_RES" ||
		! wait_for 10 "registration of $KERNEL_RES" registered "$KERNEL_RES"; then
		result FAIL registration "the plugin did not register $VFIO_RES and $KERNEL_RES with kubelet"
		failure_context
		for s in "${all[@]}"; do result SKIP "$s" "plugin not registered"; done
		finish
	fi
	log "plugin registered"

	s1_single_device
	s3_exhausted
	delete_pod s1 || true
	s2_two_pools
	delete_pod s2 || true
	s4_kubelet_restart
	delete_pod s4 || true
	s5_nri
	finish
}

finish() {
	echo "e2e-kubelet: $PASSED passed, $FAILED failed, $SKIPPED skipped"
	((FAILED == 0)) || exit 1
	exit 0
}

main "$@"
