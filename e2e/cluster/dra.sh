# shellcheck shell=bash
# shellcheck disable=SC2317 # functions run from wait_for
# The DRA scenarios of the cluster lab (sourced by run.sh; `run.sh --dra`, make e2e-dra,
# runs them after s1's install, on the same kind of cluster): `helm upgrade` with pools of
# `api: dra`, ResourceClaimTemplates and pods applied with kubectl, checks against the API server (curl), the CDI directory,
# the driver's checkpoint and the pods' output.

DRA_DRIVER=$PREFIX # the DRA driver: the config's resourcePrefix
DRA_CLASS=$DRA_POOL.$DRA_DRIVER   # the chart's DeviceClass of each DRA pool
DRA_VCLASS=$DRA_VPOOL.$DRA_DRIVER
DRA_PLUGIN_DIR=/var/lib/kubelet/plugins/$DRA_DRIVER # dra.sock, checkpoint.json (the chart's default)
DRA_CHECKPOINT=$DRA_PLUGIN_DIR/checkpoint.json
DRA_UP=''          # set by dra1 when the driver published its slices
DRA_LATE_MIN=150   # dra-late asks for a VF of PF A with this index or more (a late slice)
DRA_FAILED_PODS='' # pods whose claims were never prepared (not checked again)

dra_api_slices() { api "/apis/resource.k8s.io/v1/resourceslices?fieldSelector=spec.driver%3D$DRA_DRIVER"; }

# dra_device_addr NAME: the PCI address of a device name ("pci-0000-04-00-1" -> 0000:04:00.1).
dra_device_addr() {
	local d=${1#pci-} a b c f
	IFS=- read -r a b c f <<<"$d"
	echo "$a:$b:$c.$f"
}

# dra_rct NAME CLASS [CEL] [TOLERATE]: a ResourceClaimTemplate asking for one device of
# CLASS, with a CEL selector, tolerating the driver's unhealthy taint when TOLERATE is 1.
dra_rct() {
	cat <<EOF
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata:
  name: $1
  namespace: default
spec:
  spec:
    devices:
      requests:
      - name: vf
        exactly:
          deviceClassName: $2
EOF
	[[ -z ${3:-} ]] || printf '          selectors:\n          - cel:\n              expression: %s\n' "'$3'"
	[[ ${4:-} != 1 ]] || printf '          tolerations:\n          - {key: %s/unhealthy, operator: Exists, effect: NoSchedule}\n' "$DRA_DRIVER"
}

# dra_pod NAME TEMPLATE: a busybox pod with a claim from TEMPLATE that prints the device
# nodes the CDI spec adds (vhostNet: /dev/vhost-net, /dev/net/tun) and its environment.
dra_pod() {
	cat <<EOF
---
apiVersion: v1
kind: Pod
metadata:
  name: $1
  namespace: default
  labels: {e2e-dra: "1"}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  hostNetwork: true
  automountServiceAccountToken: false
  enableServiceLinks: false
  resourceClaims:
  - name: vf
    resourceClaimTemplateName: $2
  containers:
  - name: c
    image: $BUSYBOX_IMAGE
    imagePullPolicy: Never
    command:
    - /bin/sh
    - -c
    - |
      echo E2E-BEGIN
      ls -l /dev/vhost-net /dev/net/tun 2>&1
      tr '\0' '\n' </proc/1/environ | sort
      echo E2E-END
      trap 'exit 0' TERM
      sleep 86400 &
      wait
    resources:
      claims:
      - name: vf
EOF
}

dra_apply() { # dra_apply: kubectl apply -f - of stdin (one kubectl for many objects)
	local out
	out=$(k apply -f - 2>&1) || { DRA_ERR="kubectl apply failed: $(tail -n 3 <<<"$out" | tr '\n' '|')"; return 1; }
}

# dra_claim POD: the name of the pod's (generated) claim; dra_claim_json NAME: the claim.
dra_claim() { api "/api/v1/namespaces/default/pods/$1" 2>/dev/null | jq -r '.status.resourceClaimStatuses[0].resourceClaimName // empty' 2>/dev/null || true; }
dra_claim_json() { api "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/$1" 2>/dev/null || true; }
dra_claim_gone() { ! api "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/$1" >/dev/null 2>&1; }
dra_in_checkpoint() { jq -e --arg u "$1" '.claims[$u] != null' "$DRA_CHECKPOINT" >/dev/null 2>&1; }
dra_specs_of() { ours "$CDI_DIR"/sriov-cdi-dra_"$1"_*; } # the claim's CDI spec files

# dra_unprepared UID: the driver forgot the claim (checkpoint) and removed its specs.
dra_unprepared() { ! dra_in_checkpoint "$1" && [[ -z $(dra_specs_of "$1") ]]; }

# dra_published: the driver's slices of this node hold every device of both pools
# (DRA_SLICES: the slices' JSON).
dra_published() {
	DRA_SLICES=$(dra_api_slices) || return 1
	jq -e --arg p "$DRA_POOL" --arg v "$DRA_VPOOL" --argjson n $((DRA_VFS_A + DRA_VFS_B)) '
		def devs($pool): [.items[] | select(.spec.pool.name == $pool) | .spec.devices[]?] | length;
		devs($p) == $n and devs($v) == 2' <<<"$DRA_SLICES" >/dev/null
}

# dra_alloc CLAIM_JSON: "driver pool device" of its first allocation result.
dra_alloc() { jq -r '.status.allocation.devices.results[0] // {} | "\(.driver) \(.pool) \(.device)"' <<<"$1" 2>/dev/null || true; }

# dra_attr DEVICE ATTR: an attribute of a published device (ATTR in the driver's domain, or qualified).
dra_attr() {
	jq -r --arg d "$1" --arg dom "$DRA_DRIVER" --arg a "$2" '[.items[] | .spec.devices[]? | select(.name == $d) | (if ($a | contains("/")) then .attributes[$a] else (.attributes[$dom + "/" + $a] // .attributes[$a]) end) | .int // .string] | first // empty' <<<"$DRA_SLICES" 2>/dev/null || true
}
# dra_slice_of DEVICE: the name of the slice that publishes it.
dra_slice_of() { jq -r --arg d "$1" '[.items[] | select(any(.spec.devices[]?; .name == $d)) | .metadata.name] | first // empty' <<<"$DRA_SLICES"; }

dra_skip() { # dra_skip NAME: when dra1 did not bring the driver up
	[[ -n $DRA_UP ]] && return 1
	result SKIP "$1" "the DRA driver did not publish (dra1-install-slices failed)"
}

# dra1: helm upgrade with two DRA pools (dra.deviceTaints=true) -> a new plugin pod (the
# DaemonSet gains NODE_NAME and the kubelet plugin directories), the chart's DeviceClasses,
# and ResourceSlices: 224 VFs of dra-nvme in several slices of at most 128 (64 with
# taints) devices, dra-vfio's two VFs tainted unhealthy. Then the claims' templates and
# pods of dra2-dra4 are applied at once (one kubectl), so that they start together.
dra1_install() {
	local n=dra1-install-slices old t out errs=()
	old=$(plugin_pod)
	# The lab has no kube-proxy: the Service IP that in-cluster clients dial
	# (KUBERNETES_SERVICE_HOST, 10.96.0.1) leads nowhere, so the plugin is told the API
	# server's address, as on any cluster without kube-proxy (plugin.extraEnv).
	cat >"$WORK/values-dra.yaml" <<EOF
dra:
  deviceTaints: true
plugin:
  extraEnv:
    - {name: KUBERNETES_SERVICE_HOST, value: "$NODE_IP"}
    - {name: KUBERNETES_SERVICE_PORT, value: "$APISERVER_PORT"}
EOF
	t=$SECONDS
	if ! out=$("$HELM" --kubeconfig "$KCFG" upgrade "$RELEASE" "$CHART" -n "$NS" --reuse-values \
		--set-file configFile="$WORK/pools-3.yaml" -f "$WORK/values-dra.yaml" 2>&1); then
		fail $n "helm upgrade failed: $(tail -n 5 <<<"$out" | tr '\n' '|')"
		return 0
	fi
	if ! wait_for 150 "a new plugin pod Ready" ds_ready_new "$old"; then
		fail $n "no new plugin pod Ready within 150 s of the helm upgrade"
		return 0
	fi
	local ready=$((SECONDS - t))
	if ! wait_for 60 "ResourceSlices" dra_published; then
		fail $n "ResourceSlices of $DRA_DRIVER 60 s after the plugin pod was Ready: $(jq -c '[.items[] | {pool: .spec.pool.name, devices: (.spec.devices // [] | length)}]' <<<"${DRA_SLICES:-}" 2>/dev/null | cut -c1-300)"
		return 0
	fi
	local pub=$((SECONDS - t)) stats
	# pool slices devices max-per-slice node-ok count-ok tainted
	stats=$(jq -r --arg node "$NODE" --arg dom "$DRA_DRIVER" '.items | group_by(.spec.pool.name)[] |
		"\(.[0].spec.pool.name) \(length) \([.[].spec.devices // [] | length] | add) \([.[].spec.devices // [] | length] | max) \(all(.spec.nodeName == $node)) \(length as $n | all(.spec.pool.resourceSliceCount == $n)) \([.[].spec.devices[]? | select(any(.taints[]?; .key == $dom + "/unhealthy"))] | length)"' <<<"$DRA_SLICES")
	local p ns nd mx nodeok cntok tainted
	while read -r p ns nd mx nodeok cntok tainted; do
		[[ $nodeok == true ]] || errs+=("pool $p: a slice not of node $NODE")
		[[ $cntok == true ]] || errs+=("pool $p: resourceSliceCount differs from the $ns slices")
		((mx <= 128)) || errs+=("pool $p: a slice of $mx devices (> 128)")
		((mx <= 64)) || errs+=("pool $p: a slice of $mx devices with taints on (> 64)")
		case $p in
		"$DRA_POOL")
			((ns >= 3)) || errs+=("pool $p: $nd devices in $ns slices, want several (4 with taints: PF A's 160 VFs in three, PF B's 64 in one)")
			((tainted == 0)) || errs+=("pool $p: $tainted devices tainted, want none")
			DRA_STATS="$nd devices in $ns slices (at most $mx each)"
			;;
		"$DRA_VPOOL") ((tainted == 2)) || errs+=("pool $p: $tainted of its 2 devices tainted $DRA_DRIVER/unhealthy, want 2") ;;
		*) errs+=("unexpected pool $p") ;;
		esac
	done <<<"$stats"
	local c
	for c in "$DRA_CLASS" "$DRA_VCLASS"; do
		api "/apis/resource.k8s.io/v1/deviceclasses/$c" >/dev/null || errs+=("no DeviceClass $c")
	done
	wait_for 30 "the device plugin pools" allocatable_is "$BRES" "$BULK_VFS" || errs+=("allocatable $BRES=$(allocatable "$BRES") after the upgrade, want $BULK_VFS")
	# The claims' templates and the pods of dra2-dra4, all at once.
	local addr_a=$DRA_PF_A
	if ! {
		dra_rct dra-basic "$DRA_CLASS"
		dra_rct dra-numa "$DRA_CLASS" "device.attributes[\"resource.kubernetes.io\"].numaNode == 1"
		dra_rct dra-late "$DRA_CLASS" "device.attributes[\"$DRA_DRIVER\"].pfPciBusID == \"$addr_a\" && device.attributes[\"$DRA_DRIVER\"].vfIndex >= $DRA_LATE_MIN"
		dra_rct dra-vfio "$DRA_VCLASS" "" 1
		dra_pod dra-basic dra-basic
		dra_pod dra-numa dra-numa
		dra_pod dra-late dra-late
		dra_pod dra-vfio dra-vfio
	} | dra_apply; then
		errs+=("$DRA_ERR")
	fi
	if ((${#errs[@]})); then
		fail $n "$(IFS=';'; echo "${errs[*]}")"
		return 0
	fi
	DRA_UP=1
	result PASS $n "helm upgrade (pools $DRA_POOL, $DRA_VPOOL with api: dra, dra.deviceTaints=true): new plugin pod Ready in ${ready}s, slices at ${pub}s: $DRA_POOL $DRA_STATS on node $NODE; $DRA_VPOOL's 2 devices tainted $DRA_DRIVER/unhealthy (no IOMMU group node); DeviceClasses $DRA_CLASS, $DRA_VCLASS; device plugin pools still served"
}

# dra2: a pod with a ResourceClaimTemplate of the chart's class gets a kernel-pool VF:
# the claim is allocated from our driver and pool; every env variable and device node
# of the claim's CDI spec (the spec file the driver wrote) is in the container, and
# containerd injected the claim's CDI device.
dra2_claim_pod() {
	local n=dra2-claim-template-pod errs=()
	dra_skip $n && return 0
	if ! wait_pod dra-basic; then fail $n "$POD_ERR"; return 0; fi
	local claim cj alloc drv pool dev addr uid
	claim=$(dra_claim dra-basic)
	cj=$(dra_claim_json "$claim")
	read -r drv pool dev <<<"$(dra_alloc "$cj")"
	uid=$(jq -r .metadata.uid <<<"$cj")
	addr=$(dra_device_addr "$dev")
	[[ $drv == "$DRA_DRIVER" && $pool == "$DRA_POOL" && $dev == pci-* ]] || errs+=("claim $claim allocated $drv/$pool/$dev, want driver $DRA_DRIVER, pool $DRA_POOL")
	jq -e '.status.reservedFor[]? | select(.resource == "pods" and .name == "dra-basic")' <<<"$cj" >/dev/null || errs+=("claim $claim is not reserved for pod dra-basic")
	local env_k env_v out spec
	out=$(pod_logs dra-basic)
	env_k="PCIDEVICE_$(env_suffix "$PREFIX/$DRA_POOL")"
	env_v=$(pod_env dra-basic "$env_k")
	[[ $env_v == "$addr" ]] || errs+=("$env_k=${env_v:-<unset>} in the container, want $addr")
	spec=$(dra_specs_of "$uid")
	if [[ -z $spec ]]; then
		errs+=("no CDI spec sriov-cdi-dra_${uid}_* in $CDI_DIR")
	else
		local e p missing=()
		while read -r e; do
			[[ -z $e ]] || grep -qxF -- "$e" <<<"$out" || missing+=("env $e")
		done < <(jq -r '(.containerEdits.env // []), (.devices[].containerEdits.env // []) | .[]' "$CDI_DIR/$spec")
		while read -r p; do
			[[ -z $p ]] || grep -qE "^c.* $p\$" <<<"$out" || missing+=("device node $p")
		done < <(jq -r '(.containerEdits.deviceNodes // []), (.devices[].containerEdits.deviceNodes // []) | .[].path' "$CDI_DIR/$spec")
		((${#missing[@]} == 0)) || errs+=("from CDI spec $spec, not in the container: ${missing[*]}")
		DRA_NODES=$(jq -r '[(.devices[].containerEdits.deviceNodes // []) | .[].path] | join(" ")' "$CDI_DIR/$spec")
	fi
	grep -q "CDI devices from CRI Config.CDIDevices: \[.*$DRA_DRIVER/$DRA_POOL=${uid}_$addr" "$WORK/logs/containerd.log" ||
		errs+=("containerd did not inject CDI device $DRA_DRIVER/$DRA_POOL=${uid}_$addr")
	dra_in_checkpoint "$uid" || errs+=("claim $uid not in the driver's checkpoint")
	DRA_BASIC_UID=$uid DRA_BASIC_CLAIM=$claim DRA_BASIC_CID=$(container_id dra-basic)
	if ((${#errs[@]})); then
		pod_logs dra-basic | sed 's/^/  dra-basic| /' >&2
		fail $n "$(IFS=';'; echo "${errs[*]}")"
	else
		result PASS $n "claim $claim: driver $drv, pool $pool, device $dev, reserved for the pod; CDI spec $spec injected by containerd: device nodes $DRA_NODES present in the container, $env_k=$addr and every env of the spec set"
	fi
}

# dra3: CEL selectors: resource.kubernetes.io/numaNode == 1 gets a VF of PF B (the
# NUMA node 1 PF); pfPciBusID == PF A && vfIndex >= 150 gets such a VF, from a slice other
# than the one of PF A's first VFs (a late slice).
dra3_cel() {
	local n=dra3-cel-selectors errs=() p dev addr
	dra_skip $n && return 0
	DRA_SLICES=$(dra_api_slices)
	for p in dra-numa dra-late; do
		if ! wait_pod "$p"; then errs+=("$POD_ERR"); continue; fi
		read -r _ _ dev <<<"$(dra_alloc "$(dra_claim_json "$(dra_claim "$p")")")"
		addr=$(dra_device_addr "$dev")
		case $p in
		dra-numa)
			DRA_NUMA_DEV=$dev
			[[ $(dra_attr "$dev" resource.kubernetes.io/numaNode) == 1 && $(dra_attr "$dev" pfPciBusID) == "$DRA_PF_B" ]] ||
				errs+=("dra-numa got $dev (numaNode $(dra_attr "$dev" resource.kubernetes.io/numaNode), PF $(dra_attr "$dev" pfPciBusID)), want NUMA node 1 (PF $DRA_PF_B)")
			[[ $(pod_env dra-numa "PCIDEVICE_$(env_suffix "$PREFIX/$DRA_POOL")") == "$addr" ]] || errs+=("dra-numa's env does not name $addr")
			;;
		dra-late)
			local vfi first late
			vfi=$(dra_attr "$dev" vfIndex)
			first=$(dra_slice_of "$(dra_device_name_of_vf0)")
			late=$(dra_slice_of "$dev")
			[[ $(dra_attr "$dev" pfPciBusID) == "$DRA_PF_A" && -n $vfi ]] && ((vfi >= DRA_LATE_MIN)) ||
				errs+=("dra-late got $dev (PF $(dra_attr "$dev" pfPciBusID), VF index ${vfi:-?}), want a VF of $DRA_PF_A with index >= $DRA_LATE_MIN")
			[[ -n $late && $late != "$first" ]] || errs+=("dra-late's device $dev is in slice ${late:-?}, the slice of PF A's VF 0")
			DRA_LATE="$dev (VF $vfi of $DRA_PF_A) from slice $late ($(jq -r --arg s "$late" '.items[] | select(.metadata.name == $s) | .spec.devices | length' <<<"$DRA_SLICES") devices; VF 0 is in $first)"
			;;
		esac
	done
	if ((${#errs[@]})); then
		fail $n "$(IFS=';'; echo "${errs[*]}")"
	else
		result PASS $n "numaNode == 1 -> $DRA_NUMA_DEV (PF $DRA_PF_B, NUMA 1); pfPciBusID == $DRA_PF_A && vfIndex >= $DRA_LATE_MIN -> $DRA_LATE"
	fi
}

dra_device_name_of_vf0() { # the device of PF A's VF 0 (function 1 of the PF's bus)
	local bus=${DRA_PF_A%:*}
	dra_device_name_of "$bus:00.1"
}
dra_device_name_of() { local a=$1; a=${a//:/-}; echo "pci-${a//./-}"; }

# dra4: a vfio claim on the fixture without IOMMU (its VFs are on vfio-pci but have no
# /dev/vfio/<group>: unhealthy, published with the NoSchedule taint, which the claim
# tolerates) is allocated, and refused at prepare: the pod's FailedPrepareDynamicResources
# event carries the driver's reason; no CDI spec, nothing in the checkpoint.
dra4_vfio_refused() {
	local n=dra4-vfio-no-iommu-refused errs=() claim cj uid drv pool dev
	dra_skip $n && return 0
	if ! wait_for 90 "the FailedPrepareDynamicResources event" dra_prepare_failed dra-vfio; then
		fail $n "no FailedPrepareDynamicResources event on pod dra-vfio within 90 s: phase $(pod_field dra-vfio '{.status.phase}'), events: $(dra_events dra-vfio | tail -c 500)"
		return 0
	fi
	claim=$(dra_claim dra-vfio)
	cj=$(dra_claim_json "$claim")
	uid=$(jq -r .metadata.uid <<<"$cj")
	read -r drv pool dev <<<"$(dra_alloc "$cj")"
	[[ $drv == "$DRA_DRIVER" && $pool == "$DRA_VPOOL" ]] || errs+=("claim $claim allocated $drv/$pool/$dev, want pool $DRA_VPOOL")
	grep -q "/dev/vfio/[0-9]* is missing" <<<"$DRA_EVENT" || errs+=("the event does not say the group node is missing: $DRA_EVENT")
	[[ $(pod_field dra-vfio '{.status.phase}') == Pending ]] || errs+=("pod dra-vfio is $(pod_field dra-vfio '{.status.phase}'), want Pending")
	[[ -z $(dra_specs_of "$uid") ]] || errs+=("CDI spec written for the refused claim: $(dra_specs_of "$uid")")
	! dra_in_checkpoint "$uid" || errs+=("the refused claim is in the checkpoint")
	k delete pod dra-vfio -n default --wait=false >/dev/null 2>&1 || true
	if ((${#errs[@]})); then
		fail $n "$(IFS=';'; echo "${errs[*]}")"
	else
		result PASS $n "claim $claim (tolerating $DRA_DRIVER/unhealthy) got $pool/$dev; kubelet: $(cut -c1-300 <<<"$DRA_EVENT"); no CDI spec, not in the checkpoint"
	fi
}

dra_events() { # dra_events POD: "reason: message; " of its events
	api "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3D$1" 2>/dev/null |
		jq -r '.items[] | "\(.reason): \(.message); "' 2>/dev/null | tr -d '\n' || true
}
dra_prepare_failed() { # DRA_EVENT: the message of the pod's FailedPrepareDynamicResources event
	DRA_EVENT=$(api "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3D$1,reason%3DFailedPrepareDynamicResources" |
		jq -r '.items[0].message // empty') && [[ -n $DRA_EVENT ]]
}

# dra5: deleting a pod unprepares and frees its device: the generated claim is deleted,
# its CDI spec removed and the driver's checkpoint forgets it; a new pod whose claim asks
# for exactly that device (CEL on resource.kubernetes.io/pciBusID) runs.
dra5_delete() {
	local n=dra5-delete-unprepares errs=() claim cj uid dev addr t
	dra_skip $n && return 0
	claim=$(dra_claim dra-numa)
	cj=$(dra_claim_json "$claim")
	uid=$(jq -r .metadata.uid <<<"$cj")
	read -r _ _ dev <<<"$(dra_alloc "$cj")"
	addr=$(dra_device_addr "$dev")
	[[ -n $(dra_specs_of "$uid") ]] && dra_in_checkpoint "$uid" || errs+=("claim $claim was not prepared before the delete (spec: $(dra_specs_of "$uid"))")
	t=$SECONDS
	k delete pod dra-numa -n default --wait=false >/dev/null 2>&1
	wait_for 60 "claim $claim unprepared" dra_unprepared "$uid" || errs+=("claim $uid still prepared 60 s after the pod's delete (checkpoint: $(dra_in_checkpoint "$uid" && echo yes || echo no), specs: $(dra_specs_of "$uid"))")
	local up=$((SECONDS - t))
	wait_for 60 "claim $claim deleted" dra_claim_gone "$claim" || errs+=("claim $claim still exists 60 s after the pod's delete")
	local gone=$((SECONDS - t))
	{
		dra_rct dra-again "$DRA_CLASS" "device.attributes[\"resource.kubernetes.io\"].pciBusID == \"$addr\""
		dra_pod dra-again dra-again
	} | dra_apply || errs+=("$DRA_ERR")
	if wait_pod dra-again; then
		local d2
		read -r _ _ d2 <<<"$(dra_alloc "$(dra_claim_json "$(dra_claim dra-again)")")"
		[[ $d2 == "$dev" ]] || errs+=("dra-again got ${d2:-nothing}, want $dev")
	else
		errs+=("$POD_ERR")
	fi
	if ((${#errs[@]})); then
		fail $n "$(IFS=';'; echo "${errs[*]}")"
	else
		result PASS $n "pod dra-numa deleted: claim unprepared (spec removed, out of the checkpoint) at ${up}s, claim $claim deleted at ${gone}s; $dev allocated again to pod dra-again, which runs"
	fi
}

# dra6: the plugin pod is deleted (the DaemonSet makes a new one): the running pod with a
# prepared claim is untouched, the slices stay (same objects: kubelet wipes a driver's
# slices only 30 s after it unregistered), and deleting that pod afterwards unprepares
# it from the new process's checkpoint.
dra6_plugin_restart() {
	local n=dra6-plugin-restart errs=() old t uids0 uids1
	dra_skip $n && return 0
	uids0=$(dra_api_slices | jq -r '[.items[].metadata.uid] | sort | join(",")')
	old=$(plugin_pod)
	t=$SECONDS
	k delete pod -n "$NS" "$old" --wait=false >/dev/null
	wait_for 120 "a new plugin pod Ready" ds_ready_new "$old" || { fail $n "no new plugin pod Ready within 120 s"; return 0; }
	local ready=$((SECONDS - t))
	[[ $(container_id dra-basic) == "$DRA_BASIC_CID" ]] && pod_running dra-basic || errs+=("pod dra-basic was disturbed: $(container_id dra-basic) vs $DRA_BASIC_CID")
	# The slices: every device still published; the same objects unless the restart
	# took longer than kubelet's 30 s wiping delay (then re-created: reported).
	wait_for 30 "ResourceSlices" dra_published || errs+=("the ResourceSlices do not publish every device after the restart")
	uids1=$(jq -r '[.items[].metadata.uid] | sort | join(",")' <<<"$DRA_SLICES")
	local kept="kept (the same objects)"
	[[ $uids1 == "$uids0" ]] || kept="re-created (the restart outlasted kubelet's 30 s wiping delay)"
	dra_in_checkpoint "$DRA_BASIC_UID" || errs+=("claim $DRA_BASIC_UID not in the checkpoint after the restart")
	t=$SECONDS
	k delete pod dra-basic -n default --wait=false >/dev/null 2>&1
	wait_for 60 "claim unprepared" dra_unprepared "$DRA_BASIC_UID" || errs+=("claim $DRA_BASIC_UID still prepared 60 s after the pod's delete (after the plugin restart)")
	local up=$((SECONDS - t))
	wait_for 60 "claim deleted" dra_claim_gone "$DRA_BASIC_CLAIM" || errs+=("claim $DRA_BASIC_CLAIM still exists 60 s after the pod's delete")
	if ((${#errs[@]})); then
		fail $n "$(IFS=';'; echo "${errs[*]}")"
	else
		result PASS $n "new plugin pod Ready ${ready}s after the delete; dra-basic untouched, the $(tr ',' '\n' <<<"$uids0" | grep -c .) ResourceSlices $kept; dra-basic deleted afterwards: claim unprepared from the checkpoint in ${up}s and deleted"
	fi
}

# dra7 (after s6's helm uninstall): the driver leaves its slices when it stops (a restart
# must not churn them, dra6); kubelet deletes a driver's slices of its node 30 s after
# the driver unregistered (its wiping delay): the slices go, with the DeviceClasses
# (helm), the claims' CDI specs and the driver's sockets.
dra7_uninstall() {
	local n=dra7-uninstall-slices errs=() t=$SECONDS
	dra_skip $n && return 0
	if ! wait_for 60 "ResourceSlices to go" dra_no_slices; then
		errs+=("$(dra_api_slices | jq '.items | length') ResourceSlices of $DRA_DRIVER left 60 s after helm uninstall")
	fi
	local took=$((SECONDS - t)) c
	for c in "$DRA_CLASS" "$DRA_VCLASS"; do
		! api "/apis/resource.k8s.io/v1/deviceclasses/$c" >/dev/null 2>&1 || errs+=("DeviceClass $c left")
	done
	local left
	left=$(ours "$CDI_DIR"/sriov-cdi-dra_* "$DRA_PLUGIN_DIR"/*.sock /var/lib/kubelet/plugins_registry/"$DRA_DRIVER"*)
	[[ -z $left ]] || errs+=("left: $left")
	if ((${#errs[@]})); then
		fail $n "$(IFS=';'; echo "${errs[*]}")"
	else
		result PASS $n "ResourceSlices of $DRA_DRIVER gone ${took}s after s6 (kubelet wipes them 30 s after the driver unregistered), DeviceClasses gone, no claim CDI spec or DRA socket left"
	fi
}

dra_no_slices() { [[ $(dra_api_slices | jq '.items | length') == 0 ]]; }
