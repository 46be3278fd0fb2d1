#!/usr/bin/env bash
# Real-kernel end-to-end lab for sriov-cdi (make e2e-kernel).
#
# Boots Debian's 6.1 kernel under QEMU (TCG, q35, emulated VT-d IOMMU) with
# SR-IOV capable NVMe controllers, and runs the guest driver (e2e/kernel/guest)
# as part of /init. The guest prints one line per scenario:
#   E2E PASS <name> ... | E2E FAIL <name> <reason> | E2E SKIP <name> <reason>
# and "E2E END" when it finished. This script prints those lines and exits
# non-zero on any FAIL or when the end marker is missing (panic, timeout).
#
# Environment:
#   E2E_CACHE    cache dir (default /var/cache/sriov-cdi-e2e); the kernel, its
#                module closure and the base initramfs are kept there.
#   E2E_OUT      run dir for the initramfs and serial log (default $E2E_CACHE/run).
#   E2E_TIMEOUT  overall QEMU timeout in seconds (default 300).
#   E2E_ONLY     comma-separated scenario names to run (default: all).
#   E2E_SMP      guest CPUs (default 2).
#   E2E_CLI      a prebuilt static sriov-cdi binary to test instead of building
#                ./cmd/sriov-cdi (e.g. a release artifact).
#   E2E_TIMEOUT_SCALE  integer factor applied to E2E_TIMEOUT (loaded hosts).
#   E2E_MACHINE  nvme (default) or nic; also `run.sh --machine nic`.
#
# --machine nic (make e2e-nic) boots the same kernel and initramfs on a
# machine with three emulated Intel 82576 SR-IOV NICs (QEMU's igb, 7 VFs on
# igbvf). Debian 12's QEMU 7.2 has no igb: QEMU 10 from bookworm-backports is
# fetched into the cache by qemu-backports.sh and run from there, never
# installed over the host's QEMU. The guest asks the host for link changes
# (QEMU monitor `set_link`) with "E2E HOST set_link <netdev> on|off" lines on
# the serial console, which this script watches.
set -euo pipefail

MACHINE=${E2E_MACHINE:-nvme}
while (($#)); do
	case $1 in
	--machine) MACHINE=${2:?--machine needs nvme or nic}; shift 2 ;;
	--machine=*) MACHINE=${1#*=}; shift ;;
	*) echo "usage: run.sh [--machine nvme|nic]" >&2; exit 2 ;;
	esac
done
[[ ${MACHINE} == nvme || ${MACHINE} == nic ]] || { echo "run.sh: unknown machine ${MACHINE} (nvme, nic)" >&2; exit 2; }

# Pinned (LABS: the lab was verified on this ABI); E2E_KVER picks another
# linux-image-<KVER> when Debian drops this one from its mirrors.
KVER=${E2E_KVER:-6.1.0-56-amd64}
KPKG=linux-image-${KVER}
# Modules the guest loads at boot, in this order (closure computed with
# modprobe). One closure for both machines (igb/igbvf: the NIC machine's PF
# and VFs).
MODULES=(nvme vfio vfio_iommu_type1 vfio_pci igb igbvf)
# Modules shipped in the initramfs (with their closure and modules.dep) but
# loaded by the scenario that needs them, with busybox modprobe: soft-RoCE
# (rdma_rxe; crc32_generic serves its "crc32" shash), the verbs, MAD and
# connection-manager char devices (ib_uverbs comes with rdma_rxe; ib_umad;
# rdma_ucm for /dev/infiniband/rdma_cm).
ONDEMAND_MODULES=(crc32_generic rdma_rxe ib_umad rdma_ucm)

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LAB=${REPO}/e2e/kernel
CACHE=${E2E_CACHE:-/var/cache/sriov-cdi-e2e}
KCACHE=${CACHE}/kernel-${KVER%-amd64}
# The base initramfs is keyed by its module lists: checkouts with other lists
# sharing the cache keep their own instead of rebuilding each other's.
MODKEY=$(printf '%s\n' "${MODULES[@]}" -- "${ONDEMAND_MODULES[@]}" | sha256sum | cut -c1-12)
BASE=${KCACHE}/base-${MODKEY}.cpio
if [[ ${MACHINE} == nic ]]; then
	OUT=${E2E_OUT:-${CACHE}/run-nic}
	# The NIC lab waits out the plugin's release rule (about 2.5 min).
	TIMEOUT=${E2E_TIMEOUT:-900}
else
	OUT=${E2E_OUT:-${CACHE}/run}
	TIMEOUT=${E2E_TIMEOUT:-300}
fi
# A busy host (TCG shares 2 cores with other builds): E2E_TIMEOUT_SCALE=N
# multiplies the QEMU timeout.
TIMEOUT=$((TIMEOUT * ${E2E_TIMEOUT_SCALE:-1}))
SMP=${E2E_SMP:-2}
GO=${GO:-go}

log() { printf 'e2e-%s: %s\n' "${MACHINE/nvme/kernel}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

start_ns=$(date +%s%N)
elapsed() { echo "$(( ($(date +%s%N) - start_ns) / 1000000 ))ms"; }

[[ $(id -u) -eq 0 ]] || die "must run as root (apt-get, /var/cache)"

# --- host tools -------------------------------------------------------------
need_pkgs=()
if [[ ${MACHINE} == nvme ]]; then
	command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
fi
# busybox must be static: it is the guest's only userland besides our binaries.
[[ $(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null) == "install ok installed" ]] ||
	need_pkgs+=(busybox-static)
command -v cpio >/dev/null || need_pkgs+=(cpio)
{ command -v depmod && command -v modprobe; } >/dev/null || need_pkgs+=(kmod)
command -v xz >/dev/null || need_pkgs+=(xz-utils)
if ((${#need_pkgs[@]})); then
	log "installing ${need_pkgs[*]}"
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"
fi
command -v "${GO}" >/dev/null || die "go toolchain not found (set GO=/path/to/go)"
QEMU=qemu-system-x86_64
if [[ ${MACHINE} == nic ]]; then
	QEMU=$(E2E_CACHE=${CACHE} bash "${LAB}/qemu-backports.sh")/bin/qemu-system-x86_64
	log "QEMU $("${QEMU}" --version | head -n 1) ($(elapsed))"
fi

# --- kernel, modules, base initramfs (cached, keyed by kernel version) -------
# Extract the ELF vmlinux from a bzImage: find each xz stream magic and keep
# the first one that decompresses to an ELF file (QEMU boots it via PVH).
extract_vmlinux() {
	local vmlinuz=$1 dst=$2 off
	while read -r off; do
		if tail -c +"$((off + 1))" "${vmlinuz}" | xz -dc --single-stream >"${dst}.tmp" 2>/dev/null ||
			[[ -s ${dst}.tmp ]]; then
			if [[ $(head -c 4 "${dst}.tmp" | od -An -c | tr -d ' ') == '177ELF' ]]; then
				mv "${dst}.tmp" "${dst}"
				return 0
			fi
		fi
	done < <(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "${vmlinuz}" | cut -d: -f1)
	rm -f "${dst}.tmp"
	return 1
}

build_kernel_cache() {
	local tmp pkgdir stage
	tmp=$(mktemp -d "${CACHE}/.build.XXXXXX")
	# apt-get download drops privileges to _apt, which must be able to write here.
	chmod 0755 "${tmp}"
	chown _apt "${tmp}" 2>/dev/null || true
	pkgdir=${tmp}/pkg
	stage=${tmp}/initramfs
	log "preparing kernel ${KVER} in ${KCACHE}, initramfs $(basename "${BASE}") (one time)"
	(cd "${tmp}" && apt-get download -q "${KPKG}") ||
		{ apt-get update -q && (cd "${tmp}" && apt-get download -q "${KPKG}"); }
	dpkg -x "${tmp}"/"${KPKG}"_*.deb "${pkgdir}"
	depmod -b "${pkgdir}" "${KVER}"
	if [[ ! -s ${KCACHE}/stamp || ! -s ${KCACHE}/vmlinux ]]; then
		extract_vmlinux "${pkgdir}/boot/vmlinuz-${KVER}" "${tmp}/vmlinux" ||
			die "could not extract vmlinux from ${pkgdir}/boot/vmlinuz-${KVER}"
	fi

	# Base initramfs: static busybox, the module closure (decompressed, so
	# busybox insmod can load it), modules.dep for busybox modprobe.
	mkdir -p "${stage}"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,run,tmp,etc,e2e}
	cp /bin/busybox "${stage}/bin/busybox"
	local moddir=lib/modules/${KVER} line path rel order=()
	mkdir -p "${stage}/${moddir}"
	while read -r line; do
		[[ ${line} == insmod\ * ]] || continue
		path=${line#insmod }
		path=${path%% *}
		rel=${path#"${pkgdir}/${moddir}/"}
		[[ " ${order[*]} " == *" ${rel%.xz} "* ]] && continue
		mkdir -p "${stage}/${moddir}/$(dirname "${rel}")"
		case ${path} in
		*.xz) xz -dc "${path}" >"${stage}/${moddir}/${rel%.xz}" ;;
		*) cp "${path}" "${stage}/${moddir}/${rel}" ;;
		esac
		order+=("${rel%.xz}")
	done < <(for m in "${MODULES[@]}"; do modprobe -d "${pkgdir}" -S "${KVER}" --show-depends "${m}"; done)
	((${#order[@]})) || die "empty module closure"
	# /etc/e2e-modules lists what init.sh loads: the boot closure only.
	printf '%s\n' "${order[@]}" >"${stage}/etc/e2e-modules"
	while read -r line; do
		[[ ${line} == insmod\ * ]] || continue
		path=${line#insmod }
		path=${path%% *}
		rel=${path#"${pkgdir}/${moddir}/"}
		[[ -e ${stage}/${moddir}/${rel%.xz} ]] && continue
		mkdir -p "${stage}/${moddir}/$(dirname "${rel}")"
		case ${path} in
		*.xz) xz -dc "${path}" >"${stage}/${moddir}/${rel%.xz}" ;;
		*) cp "${path}" "${stage}/${moddir}/${rel}" ;;
		esac
	done < <(for m in "${ONDEMAND_MODULES[@]}"; do
		modprobe -d "${pkgdir}" -S "${KVER}" --show-depends "${m}" || die "module ${m} not in ${KPKG}"
	done)
	cp "${pkgdir}/${moddir}"/modules.{order,builtin,builtin.modinfo} "${stage}/${moddir}/" 2>/dev/null || true
	depmod -b "${stage}" "${KVER}"
	# Uncompressed: under TCG the kernel gunzips an initramfs at a few MB/s
	# (2 s for the 1.5 MB gzipped closure without RDMA, 6 s with it); an
	# uncompressed cpio is copied.
	(cd "${stage}" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet >"${tmp}/base.cpio")
	# The kernel silently drops an archive appended at a non-4-byte offset.
	truncate -s %512 "${tmp}/base.cpio"

	mv "${tmp}/base.cpio" "${BASE}"
	if [[ ! -s ${KCACHE}/stamp || ! -s ${KCACHE}/vmlinux ]]; then
		mv "${tmp}/vmlinux" "${KCACHE}/"
		echo "${KVER}" >"${KCACHE}/stamp"
	fi
	rm -rf "${tmp}"
}

mkdir -p "${CACHE}" "${KCACHE}" "${OUT}"
# One run per run dir at a time (two checkouts sharing a cache): the
# initramfs and serial log there are rewritten by every run.
exec 9>"${OUT}/.lock"
flock 9
# The run dir lock does not cover the shared kernel cache: another lock does.
exec 8>"${KCACHE}/.lock"
flock 8
if [[ ! -s ${KCACHE}/stamp || ! -s ${KCACHE}/vmlinux || ! -s ${BASE} ]]; then
	build_kernel_cache
fi
flock -u 8
log "kernel cache ready ($(elapsed))"

# --- per-run binaries -------------------------------------------------------
extra=${OUT}/extra
rm -rf "${extra}"
mkdir -p "${extra}/e2e"
rm -f "${OUT}/cli-build.log"
(
	cd "${REPO}"
	export CGO_ENABLED=0
	"${GO}" build -trimpath -o "${extra}/e2e/guest" ./e2e/kernel/guest
	if [[ -n ${E2E_CLI:-} ]]; then
		install -m 0755 "${E2E_CLI}" "${extra}/e2e/sriov-cdi"
	elif [[ -d ${REPO}/cmd/sriov-cdi ]] && compgen -G "${REPO}/cmd/sriov-cdi/*.go" >/dev/null; then
		if ! "${GO}" build -trimpath -o "${extra}/e2e/sriov-cdi" ./cmd/sriov-cdi 2>"${OUT}/cli-build.log"; then
			# Reported as a FAIL below; the CLI scenarios SKIP with the reason.
			head -c 300 "${OUT}/cli-build.log" | tr '\n' ' ' >"${extra}/e2e/cli-missing"
		fi
	else
		echo "./cmd/sriov-cdi does not exist yet" >"${extra}/e2e/cli-missing"
	fi
)
cli_build_error=
if [[ -s ${extra}/e2e/cli-missing && -s ${OUT}/cli-build.log ]]; then
	cli_build_error="./cmd/sriov-cdi does not build: $(head -n 3 "${OUT}/cli-build.log" | tr '\n' ' ')"
	log "${cli_build_error}"
fi
install -m 0755 "${LAB}/init.sh" "${extra}/init"
if [[ -n ${E2E_ONLY:-} ]]; then
	echo "${E2E_ONLY}" >"${extra}/e2e/only"
fi
echo "${MACHINE}" >"${extra}/e2e/machine"
(cd "${extra}" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet >"${OUT}/extra.cpio")
cat "${BASE}" "${OUT}/extra.cpio" >"${OUT}/initrd"
log "binaries and initramfs ready ($(elapsed))"

# --- boot -------------------------------------------------------------------
# PF roles (the guest finds them by NVMe serial):
#   e2e-vfio   ACS root port rp1, up to 7 VFs (5 used), driverless: vfio pools,
#              allocation, restore, sriov_numvfs changes.
#   e2e-nvme   ACS root port rp2, 4 VFs: brought online, owned by the nvme driver:
#              kernel pool, nvme <-> vfio-pci, crash recovery.
#   e2e-shared root port rp3 with disable-acs=on: root port + PF + VFs share one
#              IOMMU group, so a vfio pool over its VFs must be refused.
devices=()
add_pf() { # root-port-id chassis acs(on|off) pf-id serial max-vfs
	local rp=$1 chassis=$2 acs=$3 id=$4 serial=$5 n=$6
	local port="pcie-root-port,id=${rp},bus=pcie.0,chassis=${chassis},slot=${chassis}"
	[[ ${acs} == on ]] || port+=",disable-acs=on"
	# QEMU's rules: vq_flexible >= 2N, vi_flexible >= N,
	# max_ioqpairs - vq_flexible >= 2, msix_qsize - vi_flexible >= 1.
	devices+=(
		-device "${port}"
		-device "nvme-subsys,id=ss${id},nqn=e2e-${serial}"
		-device "nvme,id=${id},bus=${rp},serial=${serial},subsys=ss${id},sriov_max_vfs=${n},sriov_vq_flexible=$((2 * n)),sriov_vi_flexible=${n},max_ioqpairs=$((2 * n + 2)),msix_qsize=$((n + 1))"
	)
}
# NIC machine (the guest finds each PF by its MAC address):
#   nicA (52:54:00:e2:e0:0a) ACS root port: kernel pool by pfNames, vfio pool
#        by drivers: [igbvf], release through PodResources.
#   nicB (52:54:00:e2:e0:0b) ACS root port: host-use interlock, link health
#        (its netdev n1 is the one set_link may switch), sriov_numvfs changes.
#   nicC (52:54:00:e2:e0:0c) root port with disable-acs=on: non-viable group.
# Each NIC sits on its own QEMU hub: no host networking, no user-mode stack.
add_nic() { # root-port-id chassis acs(on|off) nic-id netdev-id mac-suffix
	local port="pcie-root-port,id=$1,bus=pcie.0,chassis=$2,slot=$2"
	[[ $3 == on ]] || port+=",disable-acs=on"
	devices+=(
		-device "${port}"
		-netdev "hubport,id=$5,hubid=$2"
		-device "igb,bus=$1,id=$4,netdev=$5,mac=52:54:00:e2:e0:$6"
	)
}
if [[ ${MACHINE} == nic ]]; then
	add_nic rp1 1 on nicA n0 0a
	add_nic rp2 2 on nicB n1 0b
	add_nic rp3 3 off nicC n2 0c
else
	add_pf rp1 1 on pf1 e2e-vfio 7
	add_pf rp2 2 on pf2 e2e-nvme 4
	add_pf rp3 3 off pf3 e2e-shared 2
fi

serial_log=${OUT}/serial.log
# no_timer_check: under TCG on a loaded host the kernel's early check that
# the timer interrupt works through the remapped IO-APIC can time out and
# panic ("timer doesn't work through Interrupt-remapped IO-APIC").
cmdline="intel_iommu=on iommu=pt console=ttyS0 panic=-1 loglevel=4 no_timer_check rdinit=/init"
monitor=(-monitor none)
if [[ ${MACHINE} == nic ]]; then
	# The monitor on a FIFO pair (monitor.in / monitor.out): no socket tool needed.
	rm -f "${OUT}/monitor.in" "${OUT}/monitor.out"
	mkfifo "${OUT}/monitor.in" "${OUT}/monitor.out"
	monitor=(-chardev "pipe,id=mon0,path=${OUT}/monitor" -mon chardev=mon0,mode=readline)
fi

# host_requests follows the serial log and runs the guest's requests on the
# QEMU monitor. Only `set_link <netdev of this lab> on|off` is accepted; each
# one is logged to host-requests.log.
host_requests() {
	local line cmd
	while IFS= read -r line; do
		line=${line%$'\r'}
		[[ ${line} == 'E2E HOST '* ]] || continue
		cmd=${line#E2E HOST }
		if [[ ${cmd} =~ ^set_link\ n[0-2]\ (on|off)$ ]]; then
			printf '%s\n' "${cmd}" >&9
			printf '%s %s\n' "$(date +%T.%N)" "${cmd}" >>"${OUT}/host-requests.log"
		else
			printf '%s refused: %s\n' "$(date +%T.%N)" "${cmd}" >>"${OUT}/host-requests.log"
		fi
	done
}
helper_pids=()
start_helpers() {
	helper_pids=()
	[[ ${MACHINE} == nic ]] || return 0
	: >"${OUT}/host-requests.log"
	# Held open read-write here: a write never blocks on open, even after
	# QEMU has gone.
	exec 9<>"${OUT}/monitor.in"
	cat "${OUT}/monitor.out" >"${OUT}/monitor.log" 2>/dev/null &
	helper_pids+=($!)
	tail -F -n +1 -s 0.1 "${serial_log}" 2>/dev/null > >(host_requests) &
	helper_pids+=($!)
}
stop_helpers() {
	local p
	for p in "${helper_pids[@]}"; do
		kill "${p}" 2>/dev/null || true
	done
	helper_pids=()
	[[ ${MACHINE} != nic ]] || exec 9>&-
}
trap stop_helpers EXIT

boot() {
	rm -f "${serial_log}"
	: >"${serial_log}"
	qemu_rc=0
	start_helpers
	timeout --foreground -k 10 "${TIMEOUT}" "${QEMU}" \
		-accel tcg -machine q35,kernel-irqchip=split -cpu max -smp "${SMP}" -m 1G \
		-device intel-iommu,intremap=on,caching-mode=on \
		-kernel "${KCACHE}/vmlinux" -initrd "${OUT}/initrd" -append "${cmdline}" \
		-nic none -vga none -display none -no-reboot \
		-serial "file:${serial_log}" "${monitor[@]}" \
		"${devices[@]}" </dev/null >"${OUT}/qemu.log" 2>&1 || qemu_rc=$?
	stop_helpers
}
log "booting QEMU (TCG, timeout ${TIMEOUT}s), serial log: ${serial_log}"
boot_start=$(date +%s%N)
boot
# A kernel that died before /init ran (an early-boot hiccup of emulation,
# not a test result) gets one more boot; the first log is kept.
if ! grep -aq '^E2E INFO kernel' "${serial_log}" 2>/dev/null; then
	cp "${serial_log}" "${OUT}/serial.first-boot.log" 2>/dev/null || true
	log "the guest died before /init (see ${OUT}/serial.first-boot.log); booting once more"
	tail -n 5 "${OUT}/serial.first-boot.log" >&2 || true
	boot
fi
boot_ms=$(( ($(date +%s%N) - boot_start) / 1000000 ))

# --- results ------------------------------------------------------------------
[[ -f ${serial_log} ]] || touch "${serial_log}"
# Serial output may carry CRs; normalise once.
tr -d '\r' <"${serial_log}" >"${OUT}/guest.log"
guest_log=${OUT}/guest.log

passed=0 failed=0 skipped=0
while IFS= read -r line; do
	printf '%s\n' "${line}"
	case ${line} in
	'E2E PASS '*) passed=$((passed + 1)) ;;
	'E2E FAIL '*) failed=$((failed + 1)) ;;
	'E2E SKIP '*) skipped=$((skipped + 1)) ;;
	esac
done < <(grep -aE '^E2E (PASS|FAIL|SKIP) ' "${guest_log}" || true)

if [[ -n ${cli_build_error} ]]; then
	echo "E2E FAIL cli-build ${cli_build_error}"
	failed=$((failed + 1))
fi

if ((failed)); then
	# For each FAIL, the 60 guest lines leading up to it.
	grep -anE '^E2E FAIL ' "${guest_log}" | cut -d: -f1 | while read -r n; do
		from=$((n > 60 ? n - 60 : 1))
		echo "---- guest log lines ${from}-${n} (${guest_log}) ----"
		sed -n "${from},${n}p" "${guest_log}"
	done
fi

ok_end=1
if ! grep -aq '^E2E END' "${guest_log}"; then
	ok_end=0
	failed=$((failed + 1))
	echo "E2E FAIL guest no end marker (qemu exit ${qemu_rc}; 124 = timeout after ${TIMEOUT}s)"
	echo "---- last 60 lines of ${guest_log} ----"
	tail -n 60 "${guest_log}"
	if [[ -s ${OUT}/qemu.log ]]; then
		echo "---- ${OUT}/qemu.log ----"
		tail -n 20 "${OUT}/qemu.log"
	fi
fi

name=e2e-${MACHINE/nvme/kernel}
echo "${name}: wall time $(elapsed) (QEMU boot to power-off ${boot_ms}ms)"
echo "${name}: ${passed} passed, ${failed} failed, ${skipped} skipped"
((failed == 0 && ok_end == 1))
