# shellcheck shell=bash
# shellcheck disable=SC2317 # functions called indirectly (wait_for, traps)
# Shared shell of the labs that run Kubernetes pieces on this host
# (e2e/cluster/run.sh): logging and results, polling, process control, and
# the builds cached by version under $CACHE.
#
# The sourcing script sets REPO, LAB (the name in the summary line) and
# CACHE before sourcing, and WORK once it has a work dir.

K8S_MOD="$REPO/e2e/k8s"
K8S_VERSION=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit }' "$K8S_MOD/go.mod")
CONTAINERD_VERSION=v2.4.2
KUBE_DIR="$CACHE/k8s-$K8S_VERSION"
CTRD_DIR="$CACHE/containerd-$CONTAINERD_VERSION"
IMG_DIR="$CACHE/images-v2"
BUSYBOX_IMAGE=docker.io/library/busybox:sriov-cdi-e2e
PAUSE_IMAGE=registry.k8s.io/pause:sriov-cdi-e2e

PASSED=0 FAILED=0 SKIPPED=0
T0=$(date +%s)

log() { printf '[%4ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() { # die REASON: the lab itself could not run; counts as a failure
	log "FATAL: $*"
	echo "E2E FAIL setup $*"
	echo "$LAB: $PASSED passed, $((FAILED + 1)) failed, $SKIPPED skipped"
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

# host_lock: the kubelet and cluster labs use the host's fixed paths
# (/var/lib/kubelet, /var/run/cdi, ports 6443 and 23790): a second lab run on
# the same host (another checkout, another cache) waits here for the first
# instead of breaking it. Held on fd 9 until the script exits.
host_lock() {
	local lock=/run/sriov-cdi-e2e-host.lock
	exec 9>"$lock"
	if ! flock -n 9; then
		log "another lab holds $lock; waiting for it"
		flock 9
		log "lock taken"
	fi
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

# ensure_packages PKG...: apt-get install what is missing.
ensure_packages() {
	local missing=() p
	for p in "$@"; do
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

# build_kube NAME...: k8s.io/kubernetes/cmd/NAME from the e2e/k8s module into
# $KUBE_DIR/NAME, once per version.
build_kube() {
	local b t
	for b in "$@"; do
		if [[ -x $KUBE_DIR/$b ]]; then
			log "$b $K8S_VERSION: cached in $KUBE_DIR"
			continue
		fi
		log "building $b $K8S_VERSION (cold: minutes)"
		t=$(date +%s)
		mkdir -p "$KUBE_DIR"
		(cd "$K8S_MOD" && CGO_ENABLED=0 go build -trimpath -tags providerless \
			-ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION" \
			-o "$KUBE_DIR/$b.tmp" "k8s.io/kubernetes/cmd/$b") || die "go build $b $K8S_VERSION failed"
		mv "$KUBE_DIR/$b.tmp" "$KUBE_DIR/$b"
		log "built $b in $(($(date +%s) - t))s"
	done
}

build_containerd() {
	local b t
	if [[ -x $CTRD_DIR/bin/containerd && -x $CTRD_DIR/bin/containerd-shim-runc-v2 && -x $CTRD_DIR/bin/ctr ]]; then
		log "containerd $CONTAINERD_VERSION: cached in $CTRD_DIR"
		return
	fi
	log "building containerd $CONTAINERD_VERSION (cold: a few minutes)"
	t=$(date +%s)
	rm -rf "$CTRD_DIR/bin.tmp"
	mkdir -p "$CTRD_DIR"
	CGO_ENABLED=0 GOBIN="$CTRD_DIR/bin.tmp" go install \
		"github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
		"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
		"github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION" || die "go install containerd $CONTAINERD_VERSION failed"
	for b in containerd containerd-shim-runc-v2 ctr; do [[ -x $CTRD_DIR/bin.tmp/$b ]] || die "go install did not produce $b"; done
	rm -rf "${CTRD_DIR:?}/bin"
	mv "$CTRD_DIR/bin.tmp" "$CTRD_DIR/bin"
	log "built containerd in $(($(date +%s) - t))s"
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

# build_images: busybox (the test pods) and pause (the sandbox) OCI images,
# made by hand: no registry is reachable.
build_images() {
	if [[ -f $IMG_DIR/busybox.tar && -f $IMG_DIR/pause.tar ]]; then
		log "images: cached in $IMG_DIR"
		return
	fi
	log "building busybox and pause OCI images"
	mkdir -p "$IMG_DIR"
	local d a
	d=$(mktemp -d)
	mkdir -p "$d/busybox/bin" "$d/busybox/dev" "$d/busybox/proc" "$d/busybox/sys" "$d/busybox/tmp" "$d/busybox/etc"
	cp /bin/busybox "$d/busybox/bin/busybox"
	for a in sh ls env sort sleep cat echo grep tr true; do ln -s busybox "$d/busybox/bin/$a"; done
	oci_image "$IMG_DIR/busybox.tar" "$BUSYBOX_IMAGE" "$d/busybox" '["/bin/sh"]'
	# pause: a static Go binary that sleeps until SIGTERM/SIGINT (PID 1 must
	# handle the signal itself).
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

# kill_shims SOCKET: shims a containerd started outlive it; they carry its
# socket path on their command line.
kill_shims() {
	local p
	for p in /proc/[0-9]*; do
		[[ -r $p/cmdline ]] || continue
		if [[ $(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) == *containerd-shim-runc-v2*"$1"* ]]; then
			kill -KILL "${p#/proc/}" 2>/dev/null
		fi
	done
}

unmount_under() { # unmount_under DIR: every mount below DIR, deepest first
	local m
	while read -r m; do
		umount -l "$m" 2>/dev/null || true
	done < <(awk -v p="$1" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r)
}

# containerd_config DIR CNI_BIN CNI_CONF [RUNC_EXTRA [TAIL]]: DIR/config.toml for
# containerd 2.4 (its native version 4; CDI is always on in 2.x) with root, state
# and sockets under DIR, CDI specs from $CDI_DIR, the pinned $PAUSE_IMAGE, runc
# with cgroupfs. RUNC_EXTRA goes into the runc runtime table, TAIL after it all.
containerd_config() {
	local c=$1 cni_bin=$2 cni_conf=$3 runc_extra=${4:-} tail=${5:-}
	cat >"$c/config.toml" <<CONF
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
    bin_dirs = ["$cni_bin"]
    conf_dir = "$cni_conf"
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
$runc_extra
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false
$tail
CONF
}

# run_containerd DIR: starts containerd from $CTRD_DIR on DIR/config.toml (log in
# $WORK/logs/containerd.log, pid in CONTAINERD_PID) and waits for its socket.
run_containerd() {
	log "starting containerd"
	PATH="$CTRD_DIR/bin:$PATH" "$CTRD_DIR/bin/containerd" --config "$1/config.toml" --log-level debug \
		>"$WORK/logs/containerd.log" 2>&1 &
	CONTAINERD_PID=$!
	wait_for 30 "containerd socket" ctr_ version || fail_setup "containerd did not start"
}
