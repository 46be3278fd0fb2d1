#!/usr/bin/env bash
# shellcheck disable=SC2317 # functions run from traps and wait_for
# Lab 3: a real one-node cluster, and sriov-cdi installed into it the way a
# user does: the image from `make image` imported into containerd, a
# namespace with the pod-security label, `helm install` with a pools file.
#
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and
# kubectl are built from the Go module proxy (e2e/cluster/etcd, e2e/k8s),
# containerd likewise; runc and the CNI plugins (bridge, host-local,
# loopback) are Debian's. Everything is cached by version under $E2E_CACHE.
# The host has no SR-IOV: the chart's hostPaths.sys/hostPaths.dev point the
# plugin at the real-kernel sysfs snapshot (sysfs/sample); every other value
# is the chart's default.
#
# Environment:
#   E2E_CACHE   build cache (default /var/cache/sriov-cdi-e2e)
#   E2E_KEEP=1  keep the work dir (logs, state) after the run (kept on failure unless 0)
#   E2E_IMAGE   use this image archive (OCI layout tar) instead of `make image`
#               (whose archive is cached in $E2E_CACHE/image by a digest of its inputs)
#
# Usage: run.sh          the cluster scenarios s1-s6 (make e2e-cluster)
#        run.sh --dra    the DRA scenarios on the same lab (make e2e-dra):
#                        s1's install, then dra1-dra7, with s6's uninstall
#
# Output: one `E2E PASS|FAIL <name> <detail>` line per scenario, with log
# tails on failure, then `e2e-cluster: N passed, M failed, K skipped`
# (`e2e-dra: ...` with --dra).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LAB=e2e-cluster
case ${1:-} in
--dra) LAB=e2e-dra ;;
'') ;;
*)
	echo "usage: $0 [--dra]" >&2
	exit 2
	;;
esac
CACHE=${E2E_CACHE:-/var/cache/sriov-cdi-e2e}
# shellcheck source=../lib.sh
source "$REPO/e2e/lib.sh"

ETCD_MOD="$REPO/e2e/cluster/etcd"
ETCD_VERSION=$(awk '{ for (i = 1; i < NF; i++) if ($i == "go.etcd.io/etcd/server/v3" && $(i + 1) ~ /^v/) { print $(i + 1); exit } }' "$ETCD_MOD/go.mod")
ETCD_DIR="$CACHE/etcd-$ETCD_VERSION"
SNAPSHOT="$REPO/sysfs/sample/nvme-sriov-acs.tar.gz"
CHART="$REPO/deployments/helm/sriov-cdi"

NODE=e2e-node
NS=sriov-cdi
RELEASE=sriov-cdi
PREFIX=sriov-cdi.io
KPOOL=nvme # kernel pool: 0000:02:00.1, 0000:02:00.2 (nvme driver)
KDEVS=(0000:02:00.1 0000:02:00.2)
VPOOL=vf # vfio pool: 0000:01:00.2 (group 8, vfio-pci); grown in s2
MPOOL=misc # kernel pool from s2 on: 0000:00:03.0 (virtio-pci); 00:1f.2, 00:1f.3 have no driver: unhealthy
BPOOL=bulk # kernel pool from s2 on: the VFs of the synthetic PF 0000:03:00.0 (e2e/cluster/fixture)
BULK_VFS=47 # its VFs (nvme driver): s5's rounds are 2 + 1 + 47 = 50 pods, 4 rounds = 200 cycles
DRA_POOL=dra-nvme  # DRA kernel pool from the dra scenarios on: the VFs of two synthetic PFs
DRA_PF_A=0000:04:00.0 DRA_VFS_A=160 # NUMA node 0
DRA_PF_B=0000:05:00.0 DRA_VFS_B=64  # NUMA node 1
DRA_VPOOL=dra-vfio # DRA vfio pool: two VFs of 0000:06:00.0 on vfio-pci without /dev/vfio nodes
ETCD_PORT=23790
# The control plane's feature gates: DRA is GA in 1.35 (resource.k8s.io/v1 on by
# default); the chart's dra.deviceTaints (unhealthy devices published with a NoSchedule
# taint, which a claim may tolerate: dra4) needs the alpha DRADeviceTaints in the API
# server (the field), the scheduler (taints and tolerations) and the controller-manager.
CP_GATES=DRADeviceTaints=true
APISERVER_PORT=6443
DP_DIR=/var/lib/kubelet/device-plugins # fixed in kubelet, the chart's default
CDI_DIR=/var/run/cdi                   # the chart's default
DEVINFO_DIR=/var/run/k8s.cni.cncf.io/devinfo/dp
STATE_DIR=/var/lib/sriov-cdi

[[ $(id -u) == 0 ]] || die "must run as root"
[[ -n $K8S_VERSION && -n $ETCD_VERSION ]] || die "no kubernetes/etcd version in e2e/k8s/go.mod, e2e/cluster/etcd/go.mod"
command -v go >/dev/null || die "go is not installed"

# ---------------------------------------------------------------------------
# Builds (cached by version).

build_etcd() {
	if [[ -x $ETCD_DIR/etcd ]]; then
		log "etcd $ETCD_VERSION: cached in $ETCD_DIR"
		return
	fi
	log "building etcd $ETCD_VERSION (cold: a few minutes)"
	local t
	t=$(date +%s)
	mkdir -p "$ETCD_DIR"
	(cd "$ETCD_MOD" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$ETCD_DIR/etcd.tmp" go.etcd.io/etcd/server/v3) ||
		die "go build etcd $ETCD_VERSION failed"
	mv "$ETCD_DIR/etcd.tmp" "$ETCD_DIR/etcd"
	log "built etcd in $(($(date +%s) - t))s"
}

build_helm() {
	bash "$REPO/deployments/install-helm.sh" >&2 || die "deployments/install-helm.sh failed"
	HELM=$(go env GOBIN)
	[[ -n $HELM ]] || HELM=$(go env GOPATH)/bin
	HELM=$HELM/helm
}

# start_image: sets IMAGE_TAR and TAG. Unless E2E_IMAGE names an archive, the
# archive of `make image` is cached under $CACHE/image by a digest of its inputs (every
# file of the checkout git does not ignore but the labs under e2e/, the tag, the Go
# toolchain, pci.ids):
# imagebuild is reproducible, the same inputs give the same bytes. On a miss
# `make image` starts in the background (it overlaps the control plane's start-up;
# wait_image waits for it before containerd imports the archive).
IMAGE_PID='' IMAGE_NEW=''
start_image() {
	TAG=$(git -C "$REPO" describe --tags --always --dirty 2>/dev/null || echo dev)
	if [[ -n ${E2E_IMAGE:-} ]]; then
		IMAGE_TAR=$E2E_IMAGE
		TAG=$(tar -xOf "$IMAGE_TAR" index.json | jq -r '.manifests[0].annotations["io.containerd.image.name"]')
		TAG=${TAG##*:}
		return
	fi
	local key
	key=$({
		(cd "$REPO" && git ls-files -z -co --exclude-standard -- . ':!e2e' | xargs -0 sha256sum 2>&1)
		echo "$TAG $(go env GOVERSION) $(dpkg-query -W -f '${Version}' pci.ids 2>/dev/null)"
	} | sha256sum | cut -c1-16)
	IMAGE_TAR=$CACHE/image/sriov-cdi-$key.tar
	if [[ -f $IMAGE_TAR ]]; then
		log "image (tag $TAG): cached in $IMAGE_TAR (same inputs)"
		return
	fi
	mkdir -p "$CACHE/image"
	IMAGE_NEW=$WORK/sriov-cdi-image.tar
	log "make image (tag $TAG), in the background: $WORK/logs/make-image.log"
	make -C "$REPO" --no-print-directory image VERSION="$TAG" IMAGE_TAR="$IMAGE_NEW" >"$WORK/logs/make-image.log" 2>&1 &
	IMAGE_PID=$!
}

wait_image() {
	[[ -n $IMAGE_PID ]] || return 0
	local rc=0
	wait "$IMAGE_PID" || rc=$?
	IMAGE_PID=
	if ((rc != 0)); then
		tail -n 20 "$WORK/logs/make-image.log" >&2
		die "make image failed (exit $rc)"
	fi
	log "make image done: $(tail -n 1 "$WORK/logs/make-image.log" | cut -c1-160)"
	# Into the cache; older archives go (one per checkout state, the last three kept).
	mv "$IMAGE_NEW" "$IMAGE_TAR.tmp" && mv "$IMAGE_TAR.tmp" "$IMAGE_TAR" || die "cannot write $IMAGE_TAR"
	ls -1t "$CACHE"/image/sriov-cdi-*.tar 2>/dev/null | tail -n +4 | xargs -r rm -f
}

# ---------------------------------------------------------------------------
# Processes and cleanup.

WORK=
ETCD_PID='' APISERVER_PID='' CM_PID='' SCHED_PID='' CONTAINERD_PID='' KUBELET_PID=''
CDI_BEFORE='' DEVINFO_BEFORE='' DP_BEFORE='' PLUGINS_BEFORE=''
KUBELET_VAR_EXISTED=1 STATE_EXISTED=1 DEVINFO_EXISTED=1 CDI_EXISTED=1 MADE_SHARED=0
KUBELET_N=0

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	if [[ -n $WORK && -d $WORK ]]; then
		log "cleanup"
		[[ -z $IMAGE_PID ]] || wait "$IMAGE_PID" 2>/dev/null
		[[ -z $FIXTURE_PID ]] || wait "$FIXTURE_PID" 2>/dev/null
		if [[ -n $APISERVER_PID ]] && kill -0 "$APISERVER_PID" 2>/dev/null; then
			k delete pod --all -n default --wait=false >/dev/null 2>&1
			"$HELM" --kubeconfig "$KCFG" uninstall "$RELEASE" -n "$NS" --wait --timeout 60s >/dev/null 2>&1
			wait_for 60 "pods to go" no_pod_containers
		fi
		stop_pid "$KUBELET_PID" kubelet
		if [[ -n $CONTAINERD_PID ]] && kill -0 "$CONTAINERD_PID" 2>/dev/null; then
			remove_all_containers
		fi
		stop_pid "$CONTAINERD_PID" containerd
		kill_shims "$WORK/containerd/containerd.sock"
		# The control plane stops together (each takes its time to shut down); etcd last.
		local pid
		for pid in "$SCHED_PID" "$CM_PID" "$APISERVER_PID"; do
			[[ -z $pid ]] || kill -TERM "$pid" 2>/dev/null
		done
		stop_pid "$SCHED_PID" kube-scheduler
		stop_pid "$CM_PID" kube-controller-manager
		stop_pid "$APISERVER_PID" kube-apiserver
		stop_pid "$ETCD_PID" etcd
		unmount_under "$WORK"
		unmount_under /var/lib/kubelet/pods
		ip link del cni0 2>/dev/null
		local f
		for f in "$CDI_DIR"/*; do
			[[ -e $f ]] || continue
			grep -qxF "$f" <<<"$CDI_BEFORE" || rm -f "$f"
		done
		for f in "$DEVINFO_DIR"/*; do
			[[ -e $f ]] || continue
			grep -qxF "$f" <<<"$DEVINFO_BEFORE" || rm -f "$f"
		done
		[[ $DEVINFO_EXISTED == 1 ]] || rm -rf "$DEVINFO_DIR"
		[[ $CDI_EXISTED == 1 ]] || rmdir "$CDI_DIR" 2>/dev/null
		[[ $STATE_EXISTED == 1 ]] || rm -rf "$STATE_DIR"
		if [[ $KUBELET_VAR_EXISTED == 0 ]]; then
			rm -rf /var/lib/kubelet
		else
			for f in "$DP_DIR"/*; do
				[[ -e $f ]] || continue
				grep -qxF "$f" <<<"$DP_BEFORE" || rm -f "$f"
			done
			# The DRA driver's directory (socket, checkpoint) and registration socket.
			for f in /var/lib/kubelet/plugins/* /var/lib/kubelet/plugins_registry/*; do
				[[ -e $f ]] || continue
				grep -qxF "$f" <<<"$PLUGINS_BEFORE" || rm -rf "$f"
			done
		fi
		[[ $MADE_SHARED == 0 ]] || mount --make-rprivate / 2>/dev/null
		log "cleanup done"
		if [[ ${E2E_KEEP:-} == 1 || $rc != 0 && ${E2E_KEEP:-} != 0 ]]; then
			log "kept $WORK"
		else
			rm -rf "$WORK"
		fi
	fi
	exit "$rc"
}

ctr_() { "$CTRD_DIR/bin/ctr" -a "$WORK/containerd/containerd.sock" -n k8s.io "$@"; }
k() { "$KUBE_DIR/kubectl" --kubeconfig "$KCFG" "$@"; }

no_pod_containers() {
	local t
	t=$(ctr_ tasks ls -q 2>/dev/null) || return 0
	[[ -z $t ]]
}

remove_all_containers() {
	local id
	for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1; done
	sleep 1
	for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks rm -f "$id" >/dev/null 2>&1; done
	for id in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers rm "$id" >/dev/null 2>&1; done
}

# ---------------------------------------------------------------------------
# The control plane.

make_pki() {
	local p=$WORK/pki
	mkdir -p "$p"
	(
		cd "$p"
		# P-256 keys: RSA key generation takes seconds on a loaded host.
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt -days 2 -subj "/CN=sriov-cdi-e2e-ca" 2>/dev/null
		cat >apiserver.ext <<EOF
subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$NODE_IP,IP:10.96.0.1
extendedKeyUsage=serverAuth
EOF
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
		openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 2 -extfile apiserver.ext 2>/dev/null
		openssl ecparam -name prime256v1 -genkey -noout -out sa.key 2>/dev/null
		openssl ec -in sa.key -pubout -out sa.pub 2>/dev/null
	) || die "openssl failed"
	ADMIN_TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
	local kubelet_token
	kubelet_token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
	printf '%s,admin,admin,"system:masters"\n%s,system:node:%s,kubelet-%s,"system:nodes"\n' \
		"$ADMIN_TOKEN" "$kubelet_token" "$NODE" "$NODE" >"$p/tokens.csv"
	kubeconfig "$WORK/admin.kubeconfig" admin "$ADMIN_TOKEN"
	kubeconfig "$WORK/kubelet.kubeconfig" "system:node:$NODE" "$kubelet_token"
	KCFG=$WORK/admin.kubeconfig
}

kubeconfig() { # kubeconfig FILE USER TOKEN
	cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $WORK/pki/ca.crt
users:
- name: $2
  user:
    token: $3
contexts:
- name: e2e
  context: {cluster: e2e, user: "$2"}
current-context: e2e
EOF
}

start_etcd() {
	log "starting etcd"
	"$ETCD_DIR/etcd" --name e2e --data-dir "$WORK/etcd" \
		--listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
		--initial-cluster "e2e=http://127.0.0.1:$((ETCD_PORT + 10))" --unsafe-no-fsync \
		--log-level warn >"$WORK/logs/etcd.log" 2>&1 &
	ETCD_PID=$!
	wait_for 30 "etcd" curl -sf "http://127.0.0.1:$ETCD_PORT/health" || fail_setup "etcd did not start"
}

# start_apiserver: started, not waited for (containerd starts meanwhile).
start_apiserver() {
	local p=$WORK/pki
	log "starting kube-apiserver"
	"$KUBE_DIR/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
		--secure-port "$APISERVER_PORT" --advertise-address "$NODE_IP" \
		--tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" \
		--client-ca-file "$p/ca.crt" --token-auth-file "$p/tokens.csv" \
		--service-account-issuer https://kubernetes.default.svc --service-account-key-file "$p/sa.pub" \
		--service-account-signing-key-file "$p/sa.key" --service-cluster-ip-range 10.96.0.0/16 \
		--authorization-mode Node,RBAC --allow-privileged=true --kubelet-preferred-address-types InternalIP,Hostname \
		--enable-priority-and-fairness=false --feature-gates "$CP_GATES" --profiling=false --v 1 >"$WORK/logs/kube-apiserver.log" 2>&1 &
	APISERVER_PID=$!
}

# start_controllers: once the API server is ready, kube-controller-manager and
# kube-scheduler (not waited for: main waits for the node and the default service account).
start_controllers() {
	local p=$WORK/pki
	wait_for 120 "kube-apiserver /readyz" api /readyz || fail_setup "kube-apiserver not ready"
	log "kube-apiserver ready; starting kube-controller-manager and kube-scheduler"
	"$KUBE_DIR/kube-controller-manager" --kubeconfig "$KCFG" --authentication-kubeconfig "$KCFG" --authorization-kubeconfig "$KCFG" \
		--service-account-private-key-file "$p/sa.key" --root-ca-file "$p/ca.crt" \
		--use-service-account-credentials=true --leader-elect=false --bind-address 127.0.0.1 \
		--feature-gates "$CP_GATES" --profiling=false --v 1 >"$WORK/logs/kube-controller-manager.log" 2>&1 &
	CM_PID=$!
	# A pod the scheduler could not place waits out a back-off that doubles per
	# attempt (1 s .. 10 s by default). s5 creates each round's pods while the
	# last round's still hold every device, so a freed device would wait up to
	# 10 s for its pod: the lab's scheduler retries within 1 s (the plugin's
	# timing is what the lab measures, not the scheduler's back-off).
	cat >"$WORK/kube-scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $KCFG
leaderElection:
  leaderElect: false
podInitialBackoffSeconds: 1
podMaxBackoffSeconds: 1
EOF
	"$KUBE_DIR/kube-scheduler" --config "$WORK/kube-scheduler.yaml" --authentication-kubeconfig "$KCFG" --authorization-kubeconfig "$KCFG" \
		--bind-address 127.0.0.1 --feature-gates "$CP_GATES" --profiling=false --v 1 >"$WORK/logs/kube-scheduler.log" 2>&1 &
	SCHED_PID=$!
}

# ---------------------------------------------------------------------------
# The node: containerd with CNI, kubelet.

start_containerd() {
	local c=$WORK/containerd
	mkdir -p "$c/root" "$c/state" "$CDI_DIR" "$WORK/cni/net.d" "$WORK/cni/ipam"
	# bridge + host-local from Debian's containernetworking-plugins; no masquerade (no
	# iptables rules on the host), the bridge is the pods' gateway.
	cat >"$WORK/cni/net.d/10-e2e.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "sriov-cdi-e2e",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$WORK/cni/ipam", "ranges": [[{"subnet": "10.88.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "loopback"}
  ]
}
EOF
	containerd_config "$c" /usr/lib/cni "$WORK/cni/net.d"
	run_containerd "$c"
	local img
	for img in "$IMG_DIR/busybox.tar" "$IMG_DIR/pause.tar"; do
		import_image "$img"
	done
}

import_image() { # import_image TAR: into containerd's k8s.io namespace
	ctr_ images import --platform linux/amd64 "$1" >/dev/null 2>"$WORK/logs/ctr-import.log" || fail_setup "ctr -n k8s.io images import $1"
}

start_kubelet() {
	KUBELET_N=$((KUBELET_N + 1))
	KUBELET_LOG=$WORK/logs/kubelet-$KUBELET_N.log
	mkdir -p "$WORK/pod-logs"
	cat >"$WORK/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
readOnlyPort: 0
containerRuntimeEndpoint: unix://$WORK/containerd/containerd.sock
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
syncFrequency: 5s
# Node status (allocatable) reaches the API within 2 s of a change, so the lab measures
# the plugin's re-registration, not kubelet's 10 s default report period.
nodeStatusUpdateFrequency: 2s
# s5 kills the plugin process many times: restart it after 1 s, not after kubelet's
# doubling crash back-off (10 s .. 5 min), which would dominate the run.
featureGates:
  KubeletCrashLoopBackOffMax: true
  # DRA (resource.k8s.io/v1) is GA in 1.35; the driver serves the resource health
  # API (dra/health.go), which kubelet reads with this alpha gate only.
  ResourceHealthStatus: true
crashLoopBackOff:
  maxContainerRestartPeriod: 1s
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
	"$KUBE_DIR/kubelet" --config "$WORK/kubelet-config.yaml" --kubeconfig "$WORK/kubelet.kubeconfig" \
		--cert-dir "$WORK/kubelet-pki" --hostname-override "$NODE" --node-ip "$NODE_IP" --v 2 >"$KUBELET_LOG" 2>&1 &
	KUBELET_PID=$!
	wait_for 30 "kubelet.sock" test -S "$DP_DIR/kubelet.sock" || fail_setup "kubelet did not create $DP_DIR/kubelet.sock"
}

restart_kubelet() {
	stop_pid "$KUBELET_PID" kubelet
	KUBELET_PID=
	start_kubelet
}

# ---------------------------------------------------------------------------
# The fixture (the host's "sysfs" and "dev") and the pools.

# start_fixture: make_fixture in the background (the cluster starts meanwhile);
# wait_fixture waits for it and takes the tree's digest (FIX_DIGEST, for s6).
FIXTURE_PID=''
start_fixture() {
	FIX=$WORK/fixture
	make_fixture >"$WORK/logs/fixture.log" 2>&1 &
	FIXTURE_PID=$!
}

wait_fixture() {
	local rc=0
	wait "$FIXTURE_PID" || rc=$?
	FIXTURE_PID=
	((rc == 0)) || { cat "$WORK/logs/fixture.log" >&2; die "the fixture tree could not be made (exit $rc)"; }
	FIX_DIGEST=$(fixture_digest)
}

make_fixture() {
	mkdir -p "$FIX" && tar -xzf "$SNAPSHOT" -C "$FIX" || return 1
	# Next to the snapshot's devices: a synthetic SR-IOV NVMe PF with $BULK_VFS VFs
	# (sysfs/sysfstest, the real kernel's layout; IOMMU groups from 100), so that
	# s5 runs many pods at once.
	go -C "$REPO" build -o "$WORK/fixture-bin" ./e2e/cluster/fixture || return 1
	"$WORK/fixture-bin" -dir "$FIX" -port 0000:00:04.0 -bus 3 -vfs "$BULK_VFS" -group 100 || return 1
	# The DRA pools' PFs (pools-3.yaml, the dra scenarios): dra-nvme's two (NUMA 0 and
	# 1: $DRA_VFS_A + $DRA_VFS_B VFs, several ResourceSlices) and dra-vfio's, whose VFs are
	# bound to vfio-pci with no /dev/vfio/<group> node: a host without a working IOMMU.
	"$WORK/fixture-bin" -dir "$FIX" -port 0000:00:05.0 -bus 4 -vfs "$DRA_VFS_A" -group 200 -numa 0 || return 1
	"$WORK/fixture-bin" -dir "$FIX" -port 0000:00:06.0 -bus 5 -vfs "$DRA_VFS_B" -group 400 -numa 1 || return 1
	"$WORK/fixture-bin" -dir "$FIX" -port 0000:00:07.0 -bus 6 -vfs 2 -group 600 -driver vfio-pci || return 1
	rm -f "$FIX"/dev/vfio/60[0-9]
	# The snapshot's /dev/vfio entries are empty files: make real char nodes.
	local name majmin mode
	while read -r name majmin mode; do
		[[ -n $name ]] || continue
		rm -f "$FIX/dev/vfio/$name"
		mknod -m "$mode" "$FIX/dev/vfio/$name" c "${majmin%%:*}" "${majmin##*:}" || return 1
	done <"$FIX/dev-vfio.txt"
	cat >"$WORK/pools.yaml" <<EOF
resourcePrefix: $PREFIX
pools:
  - name: $KPOOL
    mode: kernel
    selectors:
      rootDevices: ["0000:02:00.0"]
  - name: $VPOOL
    mode: vfio
    allowUnbindFrom: [nvme]
    selectors:
      pciAddresses: ["0000:01:00.2"]
EOF
	# s2: the vfio pool grows by one VF; pools vf-spare, misc and bulk appear.
	cat >"$WORK/pools-2.yaml" <<EOF
resourcePrefix: $PREFIX
pools:
  - name: $KPOOL
    mode: kernel
    selectors:
      rootDevices: ["0000:02:00.0"]
  - name: $VPOOL
    mode: vfio
    allowUnbindFrom: [nvme]
    selectors:
      pciAddresses: ["0000:01:00.2", "0000:01:00.3"]
  - name: $VPOOL-spare
    mode: vfio
    selectors:
      pciAddresses: ["0000:01:00.4"]
  - name: $MPOOL
    mode: kernel
    selectors:
      pciAddresses: ["0000:00:03.0", "0000:00:1f.2", "0000:00:1f.3"]
  - name: $BPOOL
    mode: kernel
    selectors:
      rootDevices: ["0000:03:00.0"]
EOF
	# The dra scenarios: pools-2 and two DRA pools of the driver $PREFIX (api: dra):
	# dra-nvme (kernel, with vhostNet so that its CDI specs carry device nodes) and
	# dra-vfio (no IOMMU: its devices are unhealthy, published with a taint).
	{
		cat "$WORK/pools-2.yaml"
		cat <<EOF
  - name: $DRA_POOL
    mode: kernel
    api: dra
    vhostNet: true
    selectors:
      rootDevices: ["$DRA_PF_A", "$DRA_PF_B"]
  - name: $DRA_VPOOL
    mode: vfio
    api: dra
    selectors:
      rootDevices: ["0000:06:00.0"]
EOF
	} >"$WORK/pools-3.yaml"
}

fixture_digest() { (cd "$FIX" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16); }

# ---------------------------------------------------------------------------
# Queries.

# api PATH: GET from the API server with curl (the polls: a kubectl process costs
# ten times the CPU, and the lab polls a lot on a loaded host).
api() {
	curl -sf --max-time 10 --cacert "$WORK/pki/ca.crt" -H "Authorization: Bearer $ADMIN_TOKEN" \
		"https://127.0.0.1:$APISERVER_PORT$1"
}

# api_delete_pods NAME...: delete those pods of the default namespace, all in one curl, in
# parallel (a delete-collection call deletes one pod after the other); fails unless
# every answer is 200 OK (API_ERR: the answers).
api_delete_pods() {
	local n args=() codes
	for n in "$@"; do
		((${#args[@]} == 0)) || args+=(--next)
		args+=(-s --max-time 60 --cacert "$WORK/pki/ca.crt" -H "Authorization: Bearer $ADMIN_TOKEN"
			-X DELETE -o /dev/null -w '%{http_code}\n' "https://127.0.0.1:$APISERVER_PORT/api/v1/namespaces/default/pods/$n")
	done
	codes=$(curl -Z -s "${args[@]}" 2>/dev/null) || true
	API_ERR=$(sort <<<"$codes" | uniq -c | tr -s ' \n' ' ')
	[[ $(grep -c '^200$' <<<"$codes") == "$#" ]]
}

no_pods() { [[ $(api /api/v1/namespaces/default/pods | jq '.items | length') == 0 ]]; }

# api_create PATH FILE...: POST each YAML file to PATH, all in one curl, in parallel;
# fails unless every answer is 201 Created (API_ERR: the answers).
api_create() {
	local path=$1 f args=() codes
	shift
	for f in "$@"; do
		((${#args[@]} == 0)) || args+=(--next)
		args+=(-s --max-time 60 --cacert "$WORK/pki/ca.crt" -H "Authorization: Bearer $ADMIN_TOKEN"
			-H "Content-Type: application/yaml" --data-binary "@$f" -o /dev/null -w '%{http_code}\n'
			"https://127.0.0.1:$APISERVER_PORT$path")
	done
	codes=$(curl -Z -s "${args[@]}" 2>/dev/null) || true
	API_ERR=$(sort <<<"$codes" | uniq -c | tr -s ' \n' ' ')
	[[ $(grep -c '^201$' <<<"$codes") == "$#" ]]
}

allocatable() { # allocatable RESOURCE: the node's allocatable count (empty if none)
	{ api "/api/v1/nodes/$NODE" 2>/dev/null | jq -r --arg r "$1" '.status.allocatable[$r] // empty'; } || true
}
allocatable_is() { [[ $(allocatable "$1") == "$2" ]]; }
allocatable_gone() { local a; a=$(allocatable "$1"); [[ -z $a || $a == 0 ]]; }

# The plugin pod (the first of the DaemonSet's, by name) and a field of it (a jq path).
plugin_pod() { plugin_pod_field .metadata.name; }
plugin_pod_field() {
	{ api "/api/v1/namespaces/$NS/pods?labelSelector=app.kubernetes.io%2Fname%3Dsriov-cdi" | jq -r ".items[0]$1 // empty"; } 2>/dev/null || true
}
ds_ready() {
	[[ $(api "/apis/apps/v1/namespaces/$NS/daemonsets/$RELEASE" 2>/dev/null |
		jq -r '.status | "\(.desiredNumberScheduled) \(.numberReady) \(.updatedNumberScheduled)"' 2>/dev/null) == "1 1 1" ]]
}

pod_field() { k get pod "$1" -n default -o jsonpath="$2" 2>/dev/null || true; }
pod_running() { [[ $(api "/api/v1/namespaces/default/pods/$1" | jq -r .status.phase) == Running ]]; }
container_id() { pod_field "$1" '{.status.containerStatuses[0].containerID}/{.status.containerStatuses[0].restartCount}'; }
pod_logs() { api "/api/v1/namespaces/default/pods/$1/log" 2>/dev/null || true; }
pod_printed() { [[ $(pod_logs "$1") == *E2E-END* ]]; }

# pod_yaml NAME LABELS RESOURCE=N...: a busybox pod (LABELS a YAML map, e.g.
# '{}') that prints /dev/vfio and its environment (from /proc/1/environ: a shell
# drops names with '-') and sleeps until SIGTERM. POD_HOSTNET=1: on the host's
# network (no CNI).
pod_yaml() {
	local name=$1 labels=$2 r
	shift 2
	cat <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $name
  namespace: default
  labels: $labels
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  hostNetwork: $([[ ${POD_HOSTNET:-} == 1 ]] && echo true || echo false)
  # No API access needed: no token volume to mount and unmount (nor token to sign).
  automountServiceAccountToken: false
  enableServiceLinks: false
  containers:
  - name: c
    image: $BUSYBOX_IMAGE
    imagePullPolicy: Never
    command:
    - /bin/sh
    - -c
    - |
$(if [[ ${POD_QUIET:-} == 1 ]]; then echo "      # (s5: nothing printed, no ls/tr/sort to start)"; else cat <<'CMD'
      echo E2E-BEGIN
      ls -l /dev/vfio 2>&1
      tr '\0' '\n' </proc/1/environ | sort
      echo E2E-END
CMD
fi)
      trap 'exit 0' TERM
      sleep 86400 &
      wait
    resources:
      limits:
EOF
	for r in "$@"; do printf '        %s: "%s"\n' "${r%%=*}" "${r#*=}"; done
}

# pod NAME RESOURCE=N...: create that pod.
pod() {
	local name=$1
	shift
	pod_yaml "$name" '{}' "$@" | k apply -f - >/dev/null
}

# run_pod NAME RESOURCE=N...: start it, wait until it runs and printed.
run_pod() {
	POD_ERR=
	pod "$@" || { POD_ERR="kubectl apply failed"; return 1; }
	wait_pod "$1"
}

# wait_pod NAME: until it runs and printed; POD_ERR says why not.
wait_pod() {
	local name=$1
	POD_ERR=
	if ! wait_for 120 "pod $name Running" pod_running "$name"; then
		POD_ERR="pod $name not Running: $(pod_field "$name" '{.status.phase} {.status.reason} {.status.message} {.status.containerStatuses[0].state.waiting}') events: $(k get events -n default --field-selector "involvedObject.name=$name" -o jsonpath='{range .items[*]}{.reason}: {.message}; {end}' | tail -c 600)"
		return 1
	fi
	wait_for 30 "pod $name output" pod_printed "$name" || { POD_ERR="pod $name printed no complete output"; return 1; }
}

pod_env() { pod_logs "$1" | sed -n "s/^$2=//p" || true; }

# kubelet's checkpoint: every device it has assigned, one "RESOURCE ID" per line
# (the same source the PodResources API answers from).
assigned_devices() {
	jq -r '.Data.PodDeviceEntries // [] | .[] | .ResourceName as $r | .DeviceIDs | to_entries[] | .value[] | "\($r) \(.)"' \
		"$DP_DIR/kubelet_internal_checkpoint" 2>/dev/null || true
}

env_suffix() { tr 'a-z./' 'A-Z__' <<<"$1"; }

metric() { # metric NAME{LABELS}: the plugin's metric value (host network, port 8082)
	{ curl -sf --max-time 3 http://127.0.0.1:8082/metrics | awk -v m="$1" 'index($0, m) == 1 { print $2 }'; } || true
}

failure_context() {
	local f pat
	echo "---- kubectl get pods -A -o wide" >&2
	k get pods -A -o wide 2>&1 | tail -n 10 >&2 || true
	echo "---- plugin pod log (last 15 lines)" >&2
	k logs -n "$NS" -l app.kubernetes.io/name=sriov-cdi --tail 15 2>&1 | cut -c1-300 >&2 || true
	for f in "$KUBELET_LOG" "$WORK/logs/containerd.log" "$WORK/logs/kube-apiserver.log" "$WORK/logs/kube-controller-manager.log" "$WORK/logs/kube-scheduler.log"; do
		[[ -f $f ]] || continue
		case ${f##*/} in
		kubelet*) pat='^E[0-9]{4} |^W[0-9]{4} .*(device|plugin|admission)|registration request' ;;
		containerd*) pat='level=(error|warning)|CDI devices from' ;;
		*) pat='^E[0-9]{4} ' ;;
		esac
		echo "---- ${f#"$WORK"/}: last errors" >&2
		grep -Ei "$pat" "$f" |
			grep -v -e 'cgroup v1 is deprecated' -e 'StatsCollector' -e 'fsverity' |
			sed -E 's/^[IEW][0-9]{4} [0-9:.]+ +[0-9]+ //; s/^time="[^"]*" //' |
			awk '!seen[$0]++' | tail -n 8 | cut -c1-400 >&2 || true
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

KRES=$PREFIX/$KPOOL
VRES=$PREFIX/$VPOOL
MRES=$PREFIX/$MPOOL
BRES=$PREFIX/$BPOOL
KENV=$(env_suffix "$KRES")

# s1: install as a user does -> DaemonSet Ready -> allocatable -> a pod with a device.
s1_install() {
	local n=s1-install-pod-with-device t
	t=$(date +%s)
	k create namespace "$NS" >/dev/null || { fail $n "kubectl create namespace failed"; return 1; }
	k label namespace "$NS" pod-security.kubernetes.io/enforce=privileged >/dev/null || { fail $n "label namespace failed"; return 1; }
	local out
	if ! out=$("$HELM" --kubeconfig "$KCFG" install "$RELEASE" "$CHART" -n "$NS" \
		--set-file configFile="$WORK/pools.yaml" --set image.tag="$TAG" \
		--set hostPaths.sys="$FIX/sys" --set hostPaths.dev="$FIX/dev" 2>&1); then
		fail $n "helm install failed: $(tail -n 5 <<<"$out" | tr '\n' '|')"
		return 1
	fi
	if ! wait_for 180 "DaemonSet Ready" ds_ready; then
		fail $n "DaemonSet not Ready within 180 s: $(k get pods -n "$NS" -o wide 2>&1 | tail -n 2 | tr '\n' '|')"
		return 1
	fi
	log "DaemonSet Ready $(($(date +%s) - t))s after helm install"
	if ! wait_for 30 "allocatable" allocatable_is "$KRES" 2 || ! wait_for 10 "allocatable" allocatable_is "$VRES" 1; then
		fail $n "node allocatable $KRES=$(allocatable "$KRES") $VRES=$(allocatable "$VRES"), want 2 and 1"
		return 1
	fi
	if ! run_pod s1 "$KRES=1"; then fail $n "$POD_ERR"; return 1; fi
	local errs=() dev res ip
	dev=$(pod_env s1 "PCIDEVICE_$KENV")
	res=$(pod_env s1 "PCI_RESOURCE_$KENV")
	[[ $dev == "${KDEVS[0]}" || $dev == "${KDEVS[1]}" ]] || errs+=("PCIDEVICE_$KENV=${dev:-<unset>}, want one of ${KDEVS[*]}")
	[[ -n $dev && $res == "$dev" ]] || errs+=("PCI_RESOURCE_$KENV=${res:-<unset>}, want $dev")
	# CDI: containerd resolved the device from our spec in /var/run/cdi, and the
	# spec's per-device edit (an env variable) is in the container.
	local cdienv="PCIDEVICE_${KENV}_${dev//[:.]/_}"
	[[ -n $dev && $(pod_env s1 "$cdienv") == "$dev" ]] || errs+=("$cdienv (the CDI spec's edit) not set in the container")
	grep -q "CDI devices from CRI Config.CDIDevices: \[$KRES=$dev\]" "$WORK/logs/containerd.log" ||
		errs+=("containerd did not inject CDI device $KRES=$dev (no 'CDI devices from CRI Config.CDIDevices' line)")
	ip=$(pod_field s1 '{.status.podIP}')
	[[ $ip == 10.88.* ]] || errs+=("pod IP ${ip:-<none>} is not from the CNI bridge network 10.88.0.0/16")
	S1_DEV=$dev
	S1_CID=$(container_id s1)
	if ((${#errs[@]})); then
		pod_logs s1 | sed 's/^/  s1| /' >&2
		fail $n "$(IFS=';'; echo "${errs[*]}")"
		return 1
	fi
	result PASS $n "helm install -> Ready in $(($(date +%s) - t))s, allocatable $KRES=2 $VRES=1; pod s1 (IP $ip via CNI bridge) got CDI device $KRES=$dev (its edit $cdienv is set) and PCIDEVICE_$KENV=PCI_RESOURCE_$KENV=$dev"
}

# s2: helm upgrade with other pools -> allocatable follows, the plugin is not restarted.
s2_upgrade_pools() {
	local n=s2-upgrade-pools uid0 restarts0 t out
	uid0=$(plugin_pod_field .metadata.uid)
	restarts0=$(plugin_pod_field '.status.containerStatuses[0].restartCount')
	t=$(date +%s)
	if ! out=$("$HELM" --kubeconfig "$KCFG" upgrade "$RELEASE" "$CHART" -n "$NS" --reuse-values \
		--set-file configFile="$WORK/pools-2.yaml" 2>&1); then
		fail $n "helm upgrade failed: $(tail -n 5 <<<"$out" | tr '\n' '|')"
		return 0
	fi
	if ! wait_for 150 "allocatable to follow the new pools" allocatable_is "$VRES" 2 ||
		! wait_for 10 "new pool" allocatable_is "$VRES-spare" 1 || ! wait_for 10 "new pool" allocatable_is "$MRES" 1 ||
		! wait_for 10 "new pool" allocatable_is "$BRES" "$BULK_VFS"; then
		fail $n "after helm upgrade: allocatable $VRES=$(allocatable "$VRES") $VRES-spare=$(allocatable "$VRES-spare") $MRES=$(allocatable "$MRES") $BRES=$(allocatable "$BRES"), want 2, 1, 1 (one healthy of three) and $BULK_VFS"
		return 0
	fi
	local took=$(($(date +%s) - t)) errs=()
	[[ $(plugin_pod_field .metadata.uid) == "$uid0" ]] || errs+=("the plugin pod was replaced")
	[[ $(plugin_pod_field '.status.containerStatuses[0].restartCount') == "$restarts0" ]] || errs+=("the plugin container restarted")
	allocatable_is "$KRES" 2 || errs+=("$KRES allocatable $(allocatable "$KRES"), want 2")
	[[ $(container_id s1) == "$S1_CID" ]] && pod_running s1 || errs+=("pod s1 was disturbed: $(container_id s1) vs $S1_CID")
	if ((${#errs[@]})); then
		fail $n "$(IFS=';'; echo "${errs[*]}")"
	else
		result PASS $n "ConfigMap changed by helm upgrade; allocatable $VRES=2 $VRES-spare=1 $MRES=1 (two of its three functions have no driver: unhealthy) $BRES=$BULK_VFS after ${took}s, same plugin pod, no restart, pod s1 untouched"
	fi
}

# s3: the plugin pod is deleted (the DaemonSet makes a new one) -> running pods untouched,
# allocatable back within 10 s of the new pod being Ready, a new pod gets the free device
# and no device is assigned twice (kubelet's checkpoint, what PodResources reports).
s3_plugin_pod_deleted() {
	local n=s3-plugin-pod-deleted old t errs=()
	old=$(plugin_pod)
	t=$(date +%s)
	k delete pod -n "$NS" "$old" --wait=false >/dev/null
	wait_for 120 "a new plugin pod Ready" ds_ready_new "$old" || { fail $n "no new plugin pod Ready within 120 s"; return 0; }
	local ready=$(($(date +%s) - t)) back
	if ! wait_for 10 "allocatable back" allocatable_is "$KRES" 2; then
		errs+=("allocatable $KRES=$(allocatable "$KRES") 10 s after the new plugin pod was Ready, want 2")
	fi
	back=$(($(date +%s) - t))
	# A new pod asks for the last free device of the kernel pool.
	if run_pod s3 "$KRES=1"; then
		local d3
		d3=$(pod_env s3 "PCIDEVICE_$KENV")
		[[ -n $d3 && $d3 != "$S1_DEV" ]] || errs+=("pod s3 got ${d3:-nothing}; s1 holds $S1_DEV")
	else
		errs+=("$POD_ERR")
	fi
	[[ $(container_id s1) == "$S1_CID" ]] && pod_running s1 || errs+=("pod s1 was disturbed")
	local dup
	dup=$(assigned_devices | sort | uniq -d | paste -sd,)
	[[ -z $dup ]] || errs+=("kubelet assigned $dup twice")
	if ((${#errs[@]})); then
		fail $n "$(IFS=';'; echo "${errs[*]}")"
	else
		result PASS $n "new plugin pod Ready ${ready}s after the delete, allocatable back at ${back}s; s1 untouched; s3 got $(pod_env s3 "PCIDEVICE_$KENV") (no device assigned twice)"
	fi
	k delete pod s3 -n default --wait=true --timeout 60s >/dev/null 2>&1 || true
}

ds_ready_new() { [[ $(plugin_pod) != "$1" ]] && ds_ready; }

# s4: kubelet restarts -> the plugin re-registers, running pods untouched.
s4_kubelet_restart() {
	local n=s4-kubelet-restart uid0 restarts0 reg0 t errs=()
	uid0=$(plugin_pod_field .metadata.uid)
	restarts0=$(plugin_pod_field '.status.containerStatuses[0].restartCount')
	reg0=$(metric "sriov_cdi_registrations_total{resource=\"$KRES\"}")
	t=$(date +%s)
	restart_kubelet
	if ! wait_for 60 "re-registration" registered_again "${reg0:-0}"; then
		fail $n "sriov_cdi_registrations_total{resource=\"$KRES\"} stayed ${reg0:-<none>} after the kubelet restart"
		return 0
	fi
	local reg=$(($(date +%s) - t))
	wait_for 60 "allocatable" allocatable_is "$KRES" 2 || errs+=("allocatable $KRES=$(allocatable "$KRES") after the restart, want 2")
	[[ $(plugin_pod_field .metadata.uid) == "$uid0" && $(plugin_pod_field '.status.containerStatuses[0].restartCount') == "$restarts0" ]] ||
		errs+=("the plugin pod was restarted or replaced")
	# A new pod asks for the other device; it starts while s1 is watched. It is
	# created once kubelet has taken its first pod list from the API: a pod in that
	# first list is admitted before kubelet counts its sources as seen, so the
	# device of a pod deleted before the restart (s3's, still in kubelet's
	# checkpoint until the next admission) is not reclaimed and the pod fails with
	# UnexpectedAdmissionError "Requested: 1, Available: 0" -- kubelet's race
	# (kubernetes/kubernetes#109595, #133382; README, Troubleshooting),
	# not the plugin's, which had re-registered in time.
	wait_for 30 "kubelet's first pod list" kubelet_listed_pods || errs+=("kubelet logged no SyncLoop ADD from the API within 30 s")
	pod s4 "$KRES=1" || errs+=("kubectl apply of pod s4 failed")
	sleep 5 # kubelet's first pod sync after the restart
	[[ $(container_id s1) == "$S1_CID" ]] && pod_running s1 || errs+=("pod s1 was disturbed: $(container_id s1) vs $S1_CID")
	if wait_pod s4; then
		local d4
		d4=$(pod_env s4 "PCIDEVICE_$KENV")
		[[ -n $d4 && $d4 != "$S1_DEV" ]] || errs+=("pod s4 got ${d4:-nothing}; s1 holds $S1_DEV")
	else
		errs+=("$POD_ERR")
	fi
	if ((${#errs[@]})); then
		fail $n "$(IFS=';'; echo "${errs[*]}")"
	else
		result PASS $n "re-registered ${reg}s after the kubelet restart (registrations $reg0 -> $(metric "sriov_cdi_registrations_total{resource=\"$KRES\"}")); plugin pod and s1 untouched; new pod s4 got $(pod_env s4 "PCIDEVICE_$KENV")"
	fi
}

# kubelet_listed_pods: the running kubelet has handled its first pod list from the API
# (after which its sources are ready and admission reclaims devices of deleted pods).
kubelet_listed_pods() { grep -q '"SyncLoop ADD" source="api"' "$KUBELET_LOG"; }

registered_again() {
	local v
	v=$(metric "sriov_cdi_registrations_total{resource=\"$KRES\"}")
	[[ -n $v ]] && (($(printf '%.0f' "$v") > $(printf '%.0f' "$1")))
}

# s5: chaos. At least E2E_CHAOS_CYCLES (default 200) pod create/delete cycles on the
# kernel pools, in rounds that ask for every healthy kernel device at once, one pod
# each (nvme: 2, misc: 1, bulk: $BULK_VFS): a round's pods are created at once and
# deleted, not waited for, with one label-selector delete when the next round starts
# (the new pods wait for the devices). Once a round's pods run, while they hold every
# device, at random from a fixed seed, kubelet restarts or the plugin is killed
# (SIGKILL of the plugin process: the container restarts): one draw in five per three
# cycles of the round, the odds per cycle of rounds of three pods (the same draws: 6
# restarts and 7 kills). Checked: kubelet never assigns a device twice (its checkpoint,
# what PodResources answers from; after every round and after the last restarts),
# after every restart allocatable equals the healthy devices within 10 s, and at the
# end no CDI spec or device-info file is left beyond what the pools need.
s5_chaos() {
	local n=s5-chaos cycles=${E2E_CHAOS_CYCLES:-200} errs=() kills=0 restarts=0 admitted=0 refused=0 slow=0 t
	local ask=("$KRES" "$KRES" "$MRES") round=0 i=0 d r tr tc ts tmpl names=()
	for ((d = 0; d < BULK_VFS; d++)); do ask+=("$BRES"); done
	# Host network: these pods are about devices, and CNI's veth and IPAM per pod
	# would double a round on a busy host (s1 checks the pod network).
	# Nothing printed either: s5 checks what kubelet assigned, not what a pod saw
	# (s1-s4 do), and every process started costs on this VM.
	tmpl=$(POD_HOSTNET=1 POD_QUIET=1 pod_yaml @NAME@ '{e2e-chaos-round: "@ROUND@"}' @RESOURCE@=1)
	mkdir -p "$WORK/chaos"
	if ((cycles == 0)); then
		result SKIP $n "E2E_CHAOS_CYCLES=0"
		return 0
	fi
	k delete pod s1 s4 -n default --wait=true --timeout 60s >/dev/null 2>&1 || true
	t=$SECONDS
	cpu_snapshot >"$WORK/cpu-s5-start"
	RANDOM=12 # the same sequence on every run
	while ((i < cycles)); do
		round=$((round + 1))
		tr=$SECONDS
		# The previous round's pods go, at once (not waited for: the new ones wait for
		# the devices).
		((${#names[@]} == 0)) || api_delete_pods "${names[@]}" ||
			errs+=("round $round: deleting the pods of round $((round - 1)) failed: $API_ERR")
		# The round's pods, created at once (one curl, the POSTs in parallel).
		local y files=()
		names=()
		for r in "${ask[@]}"; do
			i=$((i + 1))
			names+=("chaos-$i")
			y=${tmpl//@NAME@/chaos-$i}
			y=${y//@ROUND@/$round}
			printf '%s\n' "${y//@RESOURCE@/$r}" >"$WORK/chaos/$i.yaml"
			files+=("$WORK/chaos/$i.yaml")
		done
		api_create /api/v1/namespaces/default/pods "${files[@]}" || { errs+=("round $round: creating its pods failed: $API_ERR"); break; }
		tc=$((SECONDS - tr))
		if ! wait_for 300 "the pods of round $round to settle" round_settled "$round" "${#ask[@]}"; then
			errs+=("round $round: pods did not settle within 300 s: $(round_unsettled "$round")")
			break
		fi
		admitted=$((admitted + ROUND_RAN))
		refused=$((refused + ROUND_REFUSED))
		ts=$SECONDS
		chaos_no_dup "round $round" || break
		# Restarts and kills while the round's pods hold every device.
		for ((d = 0; d < ${#ask[@]}; d += 3)); do
			((RANDOM % 5 == 0)) || continue
			chaos_disrupt "$round" || break 2
		done
		log "s5 round $round: $ROUND_RAN pods ran, $ROUND_REFUSED refused, $((SECONDS - tr))s (delete and create ${tc}s, until settled $((ts - tr - tc))s, restarts and kills $((SECONDS - ts))s; $(round_breakdown "$round"))"
	done
	((${#errs[@]})) || chaos_no_dup "after the last restarts" || true
	((${#names[@]} == 0)) || api_delete_pods "${names[@]}" || errs+=("deleting the pods of the last round failed: $API_ERR")
	wait_for 180 "the pods to go" no_pods || errs+=("pods left 180 s after the last round's delete: $(api /api/v1/namespaces/default/pods | jq -r '[.items[].metadata.name] | .[:5] | join(" ")')")
	cpu_snapshot >"$WORK/cpu-s5-end"
	log "s5 CPU seconds by process: $(cpu_diff "$WORK/cpu-s5-start" "$WORK/cpu-s5-end")"
	((slow == 0)) || errs+=("allocatable took more than 10 s to come back after $slow of $((kills + restarts)) restarts")
	local specs
	specs=$(ours "$CDI_DIR"/sriov-cdi_* | wc -w)
	((specs == 5)) || errs+=("$specs CDI spec files of ours, want 5 (one per pool)")
	local di
	di=$(find "$DEVINFO_DIR" -type f 2>/dev/null | wc -l || true)
	((di == 0)) || errs+=("$di device-info files left")
	if ((${#errs[@]})); then
		fail $n "$(IFS=';'; echo "${errs[*]:0:5}")"
	else
		result PASS $n "$((admitted + refused)) cycles (E2E_CHAOS_CYCLES=$cycles, $round rounds of ${#ask[@]} pods) in $((SECONDS - t))s: $admitted pods ran, $refused refused at admission, $restarts kubelet restarts, $kills plugin kills; no device assigned twice, allocatable back within 10 s every time, $specs CDI specs (one per pool), no device-info file"
	fi
	return 0
}

# chaos_no_dup WHEN: kubelet's checkpoint has no device twice (else an error of s5_chaos's).
chaos_no_dup() {
	local dup
	dup=$(assigned_devices | sort | uniq -d | paste -sd,)
	[[ -z $dup ]] || { errs+=("$1: kubelet assigned $dup twice"); return 1; }
}

# chaos_disrupt ROUND: a kubelet restart or a plugin kill (RANDOM picks), then
# allocatable must be every healthy device again within 10 s. Counts in s5_chaos's
# locals (restarts, kills, slow, errs); non-zero when allocatable never came back.
chaos_disrupt() {
	local what
	if ((RANDOM % 2 == 0)); then
		what="kubelet restart"
		restart_kubelet
		restarts=$((restarts + 1))
	else
		what="plugin kill"
		local rc0
		rc0=$(plugin_pod_field '.status.containerStatuses[0].restartCount')
		kill_plugin || errs+=("round $1: no plugin process to kill")
		kills=$((kills + 1))
		# kubelet restarts the container after its crash back-off; count from then.
		wait_for 120 "the plugin container to restart" plugin_restarted "$rc0" ||
			errs+=("round $1: the plugin container did not restart")
	fi
	local t1=$SECONDS
	if ! wait_for 120 "registration" allocatable_all; then
		errs+=("round $1: allocatable $KRES=$(allocatable "$KRES") $MRES=$(allocatable "$MRES") $BRES=$(allocatable "$BRES") 120 s after the $what, want 2, 1 and $BULK_VFS")
		return 1
	fi
	log "s5 round $1: $what, allocatable back after $((SECONDS - t1))s"
	((SECONDS - t1 <= 10)) || slow=$((slow + 1))
}

# allocatable_all: the node's allocatable is every healthy device of s5's pools.
allocatable_all() {
	api "/api/v1/nodes/$NODE" | jq -e --arg k "$KRES" --arg m "$MRES" --arg b "$BRES" --arg nb "$BULK_VFS" \
		'.status.allocatable | .[$k] == "2" and .[$m] == "1" and .[$b] == $nb' >/dev/null
}

# round_settled ROUND N: the N pods of s5's round are all Running, or Failed or
# Succeeded (kubelet's admission refused them); the counts in ROUND_RAN and ROUND_REFUSED.
round_settled() {
	local c
	c=$(api "/api/v1/namespaces/default/pods?labelSelector=e2e-chaos-round%3D$1" |
		jq -r '[.items[].status.phase] | "\(length) \(map(select(. == "Running")) | length) \(map(select(. == "Failed" or . == "Succeeded")) | length)"') || return 1
	read -r c ROUND_RAN ROUND_REFUSED <<<"$c"
	((c == $2 && ROUND_RAN + ROUND_REFUSED == $2))
}

# cpu_snapshot: "busy TICKS" (all CPUs, /proc/stat) and "COMM TICKS" (user +
# system) per process name, summed; cpu_diff A B: what each long-lived component
# used between two snapshots, in seconds, and the rest (processes that came and
# went: runc, shims, the pods) as busy minus those.
cpu_snapshot() {
	awk '/^cpu / { print "busy", $2 + $3 + $4 + $7 + $8; exit }' /proc/stat
	for f in /proc/[0-9]*/stat; do cat "$f" 2>/dev/null; echo; done |
		awk '{ c = $0; sub(/^[0-9]+ \(/, "", c); n = c; sub(/\).*/, "", n); sub(/^.*\) /, "", c); split(c, f, " ");
			if (n != "") t[n] += f[12] + f[13] } END { for (n in t) print n, t[n] }'
}

cpu_diff() {
	awk -v hz="$(getconf CLK_TCK)" 'NR == FNR { a[$1] = $2; next } { b[$1] = $2 }
		END { busy = (b["busy"] - a["busy"]) / hz; out = ""; named = 0
			split("kube-apiserver etcd kubelet containerd kube-scheduler kube-controller sriov-cdi sriov-cdi-dp", names, " ")
			for (i in names) { n = names[i]; if (!(n in b)) continue; d = (b[n] - a[n]) / hz; if (d < 0) d = b[n] / hz; named += d; out = out sprintf("%s %.0f, ", n, d) }
			printf "%sother (runc, shims, pods, the kubelets and plugins killed before) %.0f of %.0f busy", out, busy - named, busy }' "$1" "$2"
}

# round_breakdown ROUND: where a round's pods spent their time (API timestamps,
# 1 s resolution): created -> scheduled and scheduled -> container started,
# median and maximum.
round_breakdown() {
	api "/api/v1/namespaces/default/pods?labelSelector=e2e-chaos-round%3D$1" | jq -r '
		def t: if . == null then null else fromdateiso8601 end;
		def med: sort | if length == 0 then "-" else .[(length / 2 | floor)] end;
		[.items[] | {c: (.metadata.creationTimestamp | t),
			s: ([.status.conditions[]? | select(.type == "PodScheduled" and .status == "True") | .lastTransitionTime][0] | t),
			r: (.status.containerStatuses[0].state.running.startedAt | t)}] as $p |
		[$p[] | select(.s != null) | .s - .c] as $sched |
		[$p[] | select(.s != null and .r != null) | .r - .s] as $start |
		"created->scheduled median \($sched | med)s max \($sched | max // "-")s, scheduled->started median \($start | med)s max \($start | max // "-")s"' 2>/dev/null || echo "no breakdown"
}

round_unsettled() { # round_unsettled ROUND: "name phase reason" of its pods not settled
	api "/api/v1/namespaces/default/pods?labelSelector=e2e-chaos-round%3D$1" |
		jq -r '[.items[] | select(.status.phase != "Running" and .status.phase != "Failed" and .status.phase != "Succeeded") |
			"\(.metadata.name) \(.status.phase) \(.status.reason // "") \(.status.containerStatuses[0].state.waiting.reason // "")"] | .[:5] | join(", ")' 2>/dev/null || true
}

plugin_restarted() { # plugin_restarted COUNT: restartCount grew and the container runs
	(($(plugin_pod_field '.status.containerStatuses[0].restartCount') > $1)) &&
		[[ -n $(plugin_pod_field '.status.containerStatuses[0].state.running.startedAt') ]]
}

# kill_plugin: SIGKILL the plugin process (found by its container's cgroup
# membership, never by name alone).
kill_plugin() {
	local cid pid
	cid=$(plugin_pod_field '.status.containerStatuses[0].containerID')
	cid=${cid#containerd://}
	[[ -n $cid ]] || return 1
	pid=$(ctr_ tasks ls 2>/dev/null | awk -v c="$cid" '$1 == c { print $2 }')
	[[ -n $pid && $pid != 0 ]] || return 1
	kill -KILL "$pid"
}

# s6: helm uninstall -> our sockets, CDI specs and device-info files are gone; the
# host's (another plugin's socket, another vendor's CDI spec, another device-info
# file, the sysfs tree) are untouched.
s6_uninstall() {
	local n=s6-uninstall errs=() f
	k delete pod --all -n default --wait=true --timeout 60s >/dev/null 2>&1 || true
	# Things of the host's, made now (kubelet empties its directory when it starts).
	local decoys=("$DP_DIR/other-vendor.sock" "$CDI_DIR/e2e-host-vendor.yaml" "$DEVINFO_DIR/e2e-host-other-device.json")
	mkdir -p "$DEVINFO_DIR"
	: >"${decoys[0]}"
	printf 'cdiVersion: 0.6.0\nkind: example.com/host\ndevices:\n  - name: d\n    containerEdits:\n      env: ["E2E_HOST=1"]\n' >"${decoys[1]}"
	echo '{"type":"pci"}' >"${decoys[2]}"
	local ours_before
	ours_before=$(ours "$DP_DIR"/sriov-cdi-*.sock "$CDI_DIR"/sriov-cdi_* "$DEVINFO_DIR"/*sriov-cdi*)
	local out
	if ! out=$("$HELM" --kubeconfig "$KCFG" uninstall "$RELEASE" -n "$NS" --wait --timeout 120s 2>&1); then
		fail $n "helm uninstall failed: $(tail -n 3 <<<"$out" | tr '\n' '|')"
		return 0
	fi
	wait_for 60 "the plugin pod to go" no_plugin_pod || errs+=("the plugin pod is still there 60 s after helm uninstall")
	local left cdi_left
	left=$(ours "$DP_DIR"/sriov-cdi-*.sock)
	[[ -z $left ]] || errs+=("sockets left: $left")
	cdi_left=$(ours "$CDI_DIR"/sriov-cdi_*)
	left=$(find "$DEVINFO_DIR" -type f ! -name "${decoys[2]##*/}" 2>/dev/null | paste -sd' ' || true)
	[[ -z $left ]] || errs+=("device-info files left: $left")
	for f in "${decoys[@]}"; do [[ -e $f ]] || errs+=("the host's $f was removed"); done
	[[ $(fixture_digest) == "$FIX_DIGEST" ]] || errs+=("the host's sysfs tree changed")
	# The plugin's last lists were empty; kubelet reports that with its next node
	# status (every 2 s here), which may come after the pod is gone.
	wait_for 10 "allocatable $KRES 0" allocatable_gone "$KRES" || errs+=("allocatable $KRES=$(allocatable "$KRES") 10 s after uninstall, want 0")
	rm -f "${decoys[@]}"
	if ((${#errs[@]})); then
		fail $n "$(IFS=';'; echo "${errs[*]}") (ours before: $ours_before)"
	else
		result PASS $n "no socket or device-info file of ours left (before: $ours_before); kept the host's socket, CDI spec, device-info file and sysfs tree"
	fi
	# Reported apart: the plugin keeps its CDI specs when it stops (deployments/README.md,
	# "Uninstall"); issue 12 wants them gone after an uninstall.
	if [[ -n $cdi_left ]]; then
		fail s6-uninstall-cdi-specs "CDI specs left in $CDI_DIR after helm uninstall: $cdi_left (the plugin does not remove its specs when it stops)"
	else
		result PASS s6-uninstall-cdi-specs "no CDI spec of ours left in $CDI_DIR"
	fi
}

no_plugin_pod() { [[ -z $(plugin_pod) ]]; }

ours() { # ours GLOB...: the names of the files that exist, space-separated
	local f out=()
	for f in "$@"; do [[ -e $f ]] && out+=("${f##*/}"); done
	echo "${out[*]}"
}

# ---------------------------------------------------------------------------
# The DRA scenarios (dra1-dra7).

# shellcheck source=dra.sh
source "$REPO/e2e/cluster/dra.sh"

# ---------------------------------------------------------------------------

# The scenarios, in order, one "FUNCTION NAME" a line. Each prints its own E2E
# lines; a non-zero status means the cluster cannot go on (s1: the install failed),
# and the rest are skipped. A new scenario is a function and a line here.
# make e2e-cluster runs the cluster's (s1-s6); make e2e-dra the DRA ones, on a
# fresh lab of their own after s1's install: two labs of about 4 and 1.5 minutes
# rather than one of 5.5, each a target of its own.
if [[ $LAB == e2e-dra ]]; then
	SCENARIOS=(
		"s1_install s1-install-pod-with-device"
		"dra1_install dra1-install-slices"
		"dra2_claim_pod dra2-claim-template-pod"
		"dra3_cel dra3-cel-selectors"
		"dra4_vfio_refused dra4-vfio-no-iommu-refused"
		"dra5_delete dra5-delete-unprepares"
		"dra6_plugin_restart dra6-plugin-restart"
		"s6_uninstall s6-uninstall"
		"dra7_uninstall dra7-uninstall-slices"
	)
else
	SCENARIOS=(
		"s1_install s1-install-pod-with-device"
		"s2_upgrade_pools s2-upgrade-pools"
		"s3_plugin_pod_deleted s3-plugin-pod-deleted"
		"s4_kubelet_restart s4-kubelet-restart"
		"s5_chaos s5-chaos"
		"s6_uninstall s6-uninstall"
	)
fi

TIMES=() # "phase seconds", printed by finish

run_scenarios() {
	local s fn name t stop=''
	for s in "${SCENARIOS[@]}"; do
		read -r fn name <<<"$s"
		if [[ -n $stop ]]; then
			result SKIP "$name" "$stop failed"
			continue
		fi
		t=$SECONDS
		"$fn" || stop=$name
		TIMES+=("$name $((SECONDS - t))s")
	done
}

finish() {
	echo "$LAB times: $(IFS=,; echo "${TIMES[*]}" | sed 's/,/, /g')"
	echo "$LAB: $PASSED passed, $FAILED failed, $SKIPPED skipped ($(($(date +%s) - T0))s)"
	((FAILED == 0)) || exit 1
	exit 0
}

main() {
	ensure_packages runc busybox-static curl jq openssl containernetworking-plugins pci.ids
	NODE_IP=$(ip -4 route get 1.1.1.1 2>/dev/null | awk '{ for (i = 1; i < NF; i++) if ($i == "src") { print $(i + 1); exit } }')
	[[ -n $NODE_IP ]] || NODE_IP=$(hostname -I 2>/dev/null | awk '{ print $1 }')
	[[ -n $NODE_IP ]] || die "no IPv4 address for the node (kubelet refuses loopback)"

	build_kube kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl
	build_etcd
	build_containerd
	build_images
	build_helm

	local t
	t=$SECONDS
	host_lock
	TIMES+=("lock-wait $((SECONDS - t))s")
	# Checked under the lock: another lab's kubelet is waited for, not a failure.
	if [[ -S $DP_DIR/kubelet.sock ]] && curl -sk --max-time 2 https://127.0.0.1:10250/healthz >/dev/null 2>&1; then
		die "a kubelet is already running on this host"
	fi
	t=$SECONDS
	WORK=$(mktemp -d /tmp/sriov-cdi-cluster.XXXXXX)
	mkdir -p "$WORK/logs"
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	log "work dir $WORK, node IP $NODE_IP"
	start_image

	CDI_BEFORE=$(ls -1d "$CDI_DIR"/* 2>/dev/null || true)
	DEVINFO_BEFORE=$(ls -1d "$DEVINFO_DIR"/* 2>/dev/null || true)
	DP_BEFORE=$(ls -1d "$DP_DIR"/* 2>/dev/null || true)
	PLUGINS_BEFORE=$(ls -1d /var/lib/kubelet/plugins/* /var/lib/kubelet/plugins_registry/* 2>/dev/null || true)
	[[ -e /var/lib/kubelet ]] || KUBELET_VAR_EXISTED=0
	[[ -e $STATE_DIR ]] || STATE_EXISTED=0
	[[ -e $DEVINFO_DIR ]] || DEVINFO_EXISTED=0
	[[ -e $CDI_DIR ]] || CDI_EXISTED=0
	# The chart mounts the host's / with HostToContainer propagation (plugin.hostRootMount),
	# which needs / to be a shared mount, as systemd makes it on every normal host.
	if ! grep -qE '^[0-9]+ [0-9]+ [^ ]+ / / [^ ]+ .*shared:' /proc/self/mountinfo; then
		log "/ is a private mount here (no systemd): mount --make-rshared / (undone at cleanup)"
		mount --make-rshared / && MADE_SHARED=1
	fi

	start_fixture
	make_pki
	# Overlapped: the API server starts while containerd starts, and `make image`
	# runs in the background (from above) until its archive is imported.
	start_etcd
	start_apiserver
	start_containerd
	start_controllers
	start_kubelet
	wait_for 120 "node $NODE Ready" node_ready || fail_setup "node $NODE not Ready"
	wait_for 90 "the default service account" api /api/v1/namespaces/default/serviceaccounts/default ||
		fail_setup "no default service account (controller-manager)"
	wait_fixture
	wait_image
	import_image "$IMAGE_TAR"
	log "imported $(ctr_ images ls -q | grep -c .) images: $(ctr_ images ls -q | grep sriov-cdi | paste -sd' ')"
	TIMES+=("setup $((SECONDS - t))s")
	log "cluster up at $(($(date +%s) - T0))s: $(k get nodes -o wide --no-headers 2>&1 | tr -s ' ' | cut -c1-160)"

	run_scenarios
	finish
}

node_ready() {
	api "/api/v1/nodes/$NODE" | jq -e '.status.conditions[] | select(.type == "Ready") | .status == "True"' >/dev/null
}

main "$@"
