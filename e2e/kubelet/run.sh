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
LAB=e2e-kubelet
CACHE=${E2E_CACHE:-/var/cache/sriov-cdi-e2e}
# log, die, result, wait_for, ensure_packages, the cached builds (kubelet,
# containerd, images), stop_pid, kill_shims, unmount_under; K8S_VERSION,
# KUBE_DIR, CTRD_DIR, IMG_DIR, BUSYBOX_IMAGE, PAUSE_IMAGE.
# shellcheck source=../lib.sh
source "$REPO/e2e/lib.sh"
SNAPSHOT="$REPO/sysfs/sample/nvme-sriov-acs.tar.gz"

NODE=e2e-node
PREFIX=sriov-cdi.io
VFIO_POOL=vf
VFIO_DEV=0000:01:00.2
KERNEL_POOL=nvme
KERNEL_DEVS=(0000:02:00.1 0000:02:00.2)
VHOST_POOL=vhu
VHOST_CTR=/var/run/vhost-user
VHOST_BASE= # set by start_plugin when the binary knows vhost-user pools
DP_DIR=/var/lib/kubelet/device-plugins # fixed in kubelet
CDI_DIR=/var/run/cdi

[[ $(id -u) == 0 ]] || die "must run as root (kubelet, containerd, mknod)"
[[ -n $K8S_VERSION ]] || die "no k8s.io/kubernetes version in $K8S_MOD/go.mod"
command -v go >/dev/null || die "go is not installed"
[[ -f $SNAPSHOT ]] || die "missing $SNAPSHOT"

# ---------------------------------------------------------------------------
# Packages, builds, images (cached): e2e/lib.sh; the product binary here.

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
		kill_shims "$WORK/containerd/containerd.sock"
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

# ---------------------------------------------------------------------------
# containerd, kubelet, plugin.

start_containerd() {
	local c=$WORK/containerd
	mkdir -p "$c/root" "$c/state" "$(dirname "$NRI_SOCKET")" "$CDI_DIR"
	mkdir -p "$c/nri-plugins" "$c/nri-conf"
	containerd_config "$c" "$c/cni-bin" "$c/cni-conf" \
		'      # Copied into every container spec (and the sandbox'"'"'s): the path Kata
      # uses for cold plug, and the double injection our NRI plugin removes.
      pod_annotations = ["cdi.k8s.io/*"]' \
		"[plugins.'io.containerd.nri.v1.nri']
  disable = false
  socket_path = \"$NRI_SOCKET\"
  plugin_path = \"$c/nri-plugins\"
  plugin_config_path = \"$c/nri-conf\""
	run_containerd "$c"
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
	# A vhost-user pool when the binary knows them (s6).
	if "$SRIOV_CDI" config validate /dev/stdin >/dev/null 2>&1 <<<"pools: [{name: v, mode: vhost-user, vhostUser: {count: 1, baseDir: /tmp}}]"; then
		VHOST_BASE=$WORK/vhost-user
		mkdir -p "$VHOST_BASE"
		cat >>"$WORK/plugin/config.yaml" <<EOF
  - name: $VHOST_POOL
    mode: vhost-user
    vhostUser: {count: 2, baseDir: $VHOST_BASE, containerPath: $VHOST_CTR}
EOF
	fi
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
		--pod-resources-socket "$WORK/kubelet/pod-resources/kubelet.sock" \
		--release-poll 1s --release-grace 5s --release-lists 2 --release-span 2s --release-settle 5s \
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
VHOST_RES=$PREFIX/$VHOST_POOL
VHOST_ENV=SRIOV_CDI_VHOSTUSER_$(tr 'a-z./-' 'A-Z___' <<<"$VHOST_RES")
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

# vhost_pod NAME SCRIPT: a static pod asking for one vhost-user slot whose
# container runs SCRIPT (sh), with the lab's unixlisten helper at
# /e2e-bin/unixlisten (a hostPath volume: busybox's nc has no unix
# sockets).
vhost_pod() {
	local f=$WORK/manifests/$1.yaml tmp=$WORK/manifests/.$1.yaml.tmp
	{
		cat <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $1
  namespace: default
spec:
  hostNetwork: true
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  volumes:
  - name: e2e-bin
    hostPath: {path: $WORK/helper, type: Directory}
  containers:
  - name: c
    image: $BUSYBOX_IMAGE
    imagePullPolicy: Never
    volumeMounts:
    - {name: e2e-bin, mountPath: /e2e-bin, readOnly: true}
    resources:
      limits:
        $VHOST_RES: "1"
    command:
    - /bin/sh
    - -c
    - |
EOF
		sed 's/^/      /' <<<"$2"
	} >"$tmp"
	mv "$tmp" "$f"
}

# run_vhost_pod NAME SCRIPT: vhost_pod, then wait until it runs and printed
# its output (POD_ERR says why not).
run_vhost_pod() {
	POD_ERR=
	vhost_pod "$1" "$2"
	wait_for 90 "pod $1 Running" pod_settled "$1" || true
	if ! pod_phase_is "$1" Running; then
		POD_ERR="pod $1 not Running: phase=$(pod_field "$1" .status.phase) message=$(pod_field "$1" .status.message) waiting=$(pod_field "$1" '.status.containerStatuses[0].state.waiting // {} | tostring')"
		return 1
	fi
	if ! wait_for 30 "pod $1 output" pod_log_complete "$1"; then
		POD_ERR="pod $1 printed no complete output"
		return 1
	fi
}

# vhost_slot POD: the slot the pod's socket variable names ("" if none).
vhost_slot() {
	pod_log "$1" | sed -n "s|^$VHOST_ENV=$VHOST_CTR/\([^/]*\)/vhost.sock\$|\1|p" | head -n1
}

# s6: pod A gets its own socket directory (a CDI mount) and makes a socket
# in it, which shows on the host; pod B (the other slot) cannot see it;
# deleting A removes A's directory.
s6_vhost_user() {
	local n=s6-vhost-user
	if [[ -z $VHOST_BASE ]]; then
		result SKIP $n "sriov-cdi has no vhost-user pools yet"
		return
	fi
	if ! wait_for 30 "registration of $VHOST_RES" registered "$VHOST_RES"; then
		fail $n "the plugin did not register $VHOST_RES"
		return
	fi
	mkdir -p "$WORK/helper"
	if ! (cd "$REPO" && CGO_ENABLED=0 go build -trimpath -o "$WORK/helper/unixlisten" ./e2e/kubelet/unixlisten); then
		fail $n "go build ./e2e/kubelet/unixlisten failed"
		return
	fi
	local script_a script_b
	script_a=$(
		cat <<EOF
echo E2E-BEGIN
tr '\0' '\n' </proc/1/environ | sort
/e2e-bin/unixlisten "\$$VHOST_ENV" &
while [ ! -S "\$$VHOST_ENV" ]; do sleep 0.2; done
ls -l "\$(dirname "\$$VHOST_ENV")"
echo E2E-END
trap 'exit 0' TERM
while :; do sleep 1; done
EOF
	)
	script_b=$(
		cat <<EOF
echo E2E-BEGIN
tr '\0' '\n' </proc/1/environ | sort
echo TREE:
ls -lR $VHOST_CTR
echo "SOCKETS:\$(find $VHOST_CTR -type s | paste -sd, -)"
echo E2E-END
trap 'exit 0' TERM
while :; do sleep 1; done
EOF
	)
	if ! run_vhost_pod s6a "$script_a"; then
		fail $n "$POD_ERR"
		delete_pod s6a || true
		return
	fi
	local slot_a slot_b dir_a errs=()
	slot_a=$(vhost_slot s6a)
	dir_a=$VHOST_BASE/sriov-cdi.$VHOST_POOL.$slot_a
	if [[ -z $slot_a ]]; then
		errs+=("pod s6a has no $VHOST_ENV=$VHOST_CTR/<slot>/vhost.sock")
	elif [[ ! -S $dir_a/vhost.sock ]]; then
		errs+=("the socket pod s6a made is not at $dir_a/vhost.sock on the host: $(ls -la "$dir_a" 2>&1 | tr '\n' '|')")
	fi
	if [[ -n $slot_a && -d $WORK/devinfo ]]; then
		local devinfo=$WORK/devinfo/$PREFIX-$VHOST_POOL-$slot_a-device.json
		local want="{\"type\":\"vhost-user\",\"version\":\"1.1.0\",\"vhost-user\":{\"mode\":\"server\",\"path\":\"$VHOST_CTR/$slot_a/vhost.sock\"}}"
		[[ $(cat "$devinfo" 2>&1) == "$want" ]] || errs+=("device-info $devinfo: $(cat "$devinfo" 2>&1), want $want")
	fi
	if ! run_vhost_pod s6b "$script_b"; then
		errs+=("$POD_ERR")
	else
		local sockets
		slot_b=$(vhost_slot s6b)
		sockets=$(pod_log s6b | sed -n 's/^SOCKETS://p')
		[[ -n $slot_b && $slot_b != "$slot_a" ]] || errs+=("pod s6b got slot '$slot_b', want the one s6a ('$slot_a') does not hold")
		[[ -z $sockets ]] || errs+=("pod s6b sees sockets: $sockets")
		[[ -z $slot_a || $(pod_log s6b | sed -n '/^TREE:/,/^SOCKETS:/p') != *"$slot_a"* ]] ||
			errs+=("pod s6b sees s6a's slot $slot_a: $(pod_log s6b | sed -n '/^TREE:/,/^SOCKETS:/p' | tr '\n' '|')")
	fi
	LOG_A=$(pod_log s6a || true) LOG_B=$(pod_log s6b || true) # the logs go with the pods
	delete_pod s6a || true
	if [[ -n $slot_a ]] && ! wait_for 60 "s6a's directory to go" test ! -e "$dir_a"; then
		errs+=("$dir_a still there 60 s after pod s6a was deleted")
	fi
	delete_pod s6b || true
	if ((${#errs[@]})); then
		echo "$LOG_A" | sed 's/^/  s6a| /' >&2
		echo "$LOG_B" | sed 's/^/  s6b| /' >&2
		fail $n "$(IFS=';'; echo "${errs[*]}")"
	else
		result PASS $n "pod s6a got $dir_a mounted at $VHOST_CTR/$slot_a and made its socket there (seen on the host); s6b got $slot_b and no socket of s6a; deleting s6a removed the directory"
	fi
}

# ---------------------------------------------------------------------------

main() {
	ensure_packages runc busybox-static curl jq
	build_kube kubelet
	build_containerd
	build_images

	host_lock
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
	local all=(s1-single-device s2-two-pools s3-pool-exhausted s4-kubelet-restart s5a-annotation-without-nri s5b-nri-strips-annotation s6-vhost-user)
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
	s6_vhost_user
	finish
}

finish() {
	echo "e2e-kubelet: $PASSED passed, $FAILED failed, $SKIPPED skipped"
	((FAILED == 0)) || exit 1
	exit 0
}

main "$@"
