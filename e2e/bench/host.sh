#!/usr/bin/env bash
# bench-host: sriov-cdi on the production path at 256 / 1,024 / 4,096 VFs.
#
# For each size: a synthetic sysfs tree (sysfstest layout) bind-mounted over
# /sys inside `unshare --mount --net`, one dummy link per netdev of the tree,
# the real static binaries (make build) started with the DaemonSet's
# environment — sriov-cdi-dp, what the chart runs for device-plugin pools,
# and sriov-cdi, the full binary with the DRA driver it runs when a pool has
# api: dra — and a kubelet stand-in (e2e/bench/hostbench) that measures
# start -> every pool listed, Allocate p50/p99 (kernel and vfio pools),
# uevent and link change -> ListAndWatch update, a quiet rescan's CPU and
# peak RSS with Pss_Anon / Pss_File (heap against binary pages). A second run per size points --sysfs-root at the tree itself
# (no live checks) for comparison. Prints a markdown table.
#
# Then the DRA front door: the full binary with the DaemonSet's DRA
# environment, both pools api: dra, publishing to a real kube-apiserver and
# etcd started inside the same namespaces (the cluster lab's builds, from
# its cache; skipped with a message when absent): start -> every device in
# ResourceSlices, one VF's driver change -> its slice rewritten, and the
# writes per change. A second table.
#
#   SIZES="256 1024"            sizes to run (default 256 1024 4096)
#   SRIOV_CDI_BIN="/a /b"       measure other builds (default: make build's
#                               bin/sriov-cdi-dp and bin/sriov-cdi)
#   MODES="live"                sysfs modes (default live no-live)
#   START_TIMEOUT=10m           give up on a size whose lists take longer
#   DRA=0                       leave out the DRA table
#   E2E_CACHE                   where the cluster lab keeps kube-apiserver
#                               and etcd (default /var/cache/sriov-cdi-e2e)
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
  echo "bench-host: skipped: needs root (unshare --mount --net, a bind mount over /sys, dummy links)"
  exit 0
fi
if ! command -v ip >/dev/null || ! command -v unshare >/dev/null; then
  echo "bench-host: skipped: needs iproute2 and util-linux (apt-get install -y iproute2 util-linux)"
  exit 0
fi
cd "$(dirname "$0")/../.."
GO=${GO:-go}
bins=${SRIOV_CDI_BIN:-}
if [ -z "$bins" ]; then
  make --no-print-directory build >&2
  bins="$PWD/bin/sriov-cdi-dp $PWD/bin/sriov-cdi"
fi
work=$(mktemp -d /tmp/bench-host.XXXXXX)
trap 'rm -rf "$work"' EXIT
CGO_ENABLED=0 $GO build -o "$work/hostbench" ./e2e/bench/hostbench
for bin in $bins; do
  echo "binary: $bin ($("$bin" version 2>/dev/null || echo unknown), $(du -h "$bin" | cut -f1))"
done
echo "$(nproc) CPUs"
echo
"$work/hostbench" -header
for n in ${SIZES:-256 1024 4096}; do
  for mode in ${MODES:-live no-live}; do
    for bin in $bins; do
      args=(-bin "$bin" -vfs "$n" -work "$work/$n-$mode" -start-timeout "${START_TIMEOUT:-10m}")
      [ "$mode" = no-live ] && args+=(-no-live)
      # A private mount and network namespace: nothing leaks to the host.
      unshare --mount --net --fork -- "$work/hostbench" "${args[@]}" || echo "| $(basename "$bin") | $n | — | $mode | failed (see above) |"
      rmdir "$work/$n-$mode" 2>/dev/null || rm -rf "$work/$n-$mode"
    done
  done
done

[ "${DRA:-1}" = 1 ] || exit 0
cache=${E2E_CACHE:-/var/cache/sriov-cdi-e2e}
apiserver=$(ls -d "$cache"/k8s-v*/kube-apiserver 2>/dev/null | sort -V | tail -n1)
etcd=$(ls -d "$cache"/etcd-v*/etcd 2>/dev/null | sort -V | tail -n1)
echo
if [ -z "$apiserver" ] || [ -z "$etcd" ]; then
  echo "bench-host: DRA table skipped: no kube-apiserver/etcd in $cache (make e2e-cluster builds them there once)"
  exit 0
fi
full=
for bin in $bins; do
  case $(basename "$bin") in sriov-cdi) full=$bin ;; esac
done
if [ -z "$full" ]; then
  echo "bench-host: DRA table skipped: no full sriov-cdi binary among $bins"
  exit 0
fi
echo "DRA: $("$apiserver" --version 2>/dev/null), etcd $("$etcd" --version 2>/dev/null | sed -n 's/^etcd Version: //p')"
echo
"$work/hostbench" -dra -header
for n in ${SIZES:-256 1024 4096}; do
  for mode in ${MODES:-live no-live}; do
    args=(-dra -kube-apiserver "$apiserver" -etcd "$etcd" -bin "$full" -vfs "$n" -work "$work/dra-$n-$mode" -start-timeout "${START_TIMEOUT:-10m}")
    [ "$mode" = no-live ] && args+=(-no-live)
    unshare --mount --net --fork -- "$work/hostbench" "${args[@]}" || echo "| sriov-cdi | $n | $mode | failed (see above) |"
    rm -rf "$work/dra-$n-$mode"
  done
done
