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
set -euo pipefail

# Pinned (LABS: the lab was verified on this ABI); E2E_KVER picks another
# linux-image-<KVER> when Debian drops this one from its mirrors.
KVER=${E2E_KVER:-6.1.0-56-amd64}
KPKG=linux-image-${KVER}
# Modules the guest loads, in this order (closure computed with modprobe).
MODULES=(nvme vfio vfio_iommu_type1 vfio_pci)

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LAB=${REPO}/e2e/kernel
CACHE=${E2E_CACHE:-/var/cache/sriov-cdi-e2e}
KCACHE=${CACHE}/kernel-${KVER%-amd64}
OUT=${E2E_OUT:-${CACHE}/run}
TIMEOUT=${E2E_TIMEOUT:-300}
SMP=${E2E_SMP:-2}
GO=${GO:-go}

log() { printf 'e2e-kernel: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

start_ns=$(date +%s%N)
elapsed() { echo "$(( ($(date +%s%N) - start_ns) / 1000000 ))ms"; }

[[ $(id -u) -eq 0 ]] || die "must run as root (apt-get, /var/cache)"

# --- host tools -------------------------------------------------------------
need_pkgs=()
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
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
	log "preparing kernel ${KVER} in ${KCACHE} (one time)"
	(cd "${tmp}" && apt-get download -q "${KPKG}") ||
		{ apt-get update -q && (cd "${tmp}" && apt-get download -q "${KPKG}"); }
	dpkg -x "${tmp}"/"${KPKG}"_*.deb "${pkgdir}"
	depmod -b "${pkgdir}" "${KVER}"
	extract_vmlinux "${pkgdir}/boot/vmlinuz-${KVER}" "${tmp}/vmlinux" ||
		die "could not extract vmlinux from ${pkgdir}/boot/vmlinuz-${KVER}"

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
	cp "${pkgdir}/${moddir}"/modules.{order,builtin,builtin.modinfo} "${stage}/${moddir}/" 2>/dev/null || true
	depmod -b "${stage}" "${KVER}"
	printf '%s\n' "${order[@]}" >"${stage}/etc/e2e-modules"
	(cd "${stage}" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -9 >"${tmp}/base.cpio.gz")
	# The kernel silently drops an archive appended at a non-4-byte offset.
	truncate -s %512 "${tmp}/base.cpio.gz"

	mv "${tmp}/vmlinux" "${tmp}/base.cpio.gz" "${KCACHE}/"
	printf '%s\n' "${MODULES[@]}" >"${KCACHE}/modules.list"
	echo "${KVER}" >"${KCACHE}/stamp"
	rm -rf "${tmp}"
}

mkdir -p "${CACHE}" "${KCACHE}" "${OUT}"
if [[ ! -s ${KCACHE}/stamp || ! -s ${KCACHE}/vmlinux || ! -s ${KCACHE}/base.cpio.gz ]] ||
	[[ $(cat "${KCACHE}/modules.list" 2>/dev/null) != "$(printf '%s\n' "${MODULES[@]}")" ]]; then
	rm -f "${KCACHE}/stamp"
	build_kernel_cache
fi
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
(cd "${extra}" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet >"${OUT}/extra.cpio")
cat "${KCACHE}/base.cpio.gz" "${OUT}/extra.cpio" >"${OUT}/initrd"
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
add_pf rp1 1 on pf1 e2e-vfio 7
add_pf rp2 2 on pf2 e2e-nvme 4
add_pf rp3 3 off pf3 e2e-shared 2

serial_log=${OUT}/serial.log
# no_timer_check: under TCG on a loaded host the kernel's early check that
# the timer interrupt works through the remapped IO-APIC can time out and
# panic ("timer doesn't work through Interrupt-remapped IO-APIC").
cmdline="intel_iommu=on iommu=pt console=ttyS0 panic=-1 loglevel=4 no_timer_check rdinit=/init"
boot() {
	rm -f "${serial_log}"
	qemu_rc=0
	timeout --foreground -k 10 "${TIMEOUT}" qemu-system-x86_64 \
		-accel tcg -machine q35,kernel-irqchip=split -cpu max -smp "${SMP}" -m 1G \
		-device intel-iommu,intremap=on,caching-mode=on \
		-kernel "${KCACHE}/vmlinux" -initrd "${OUT}/initrd" -append "${cmdline}" \
		-nic none -vga none -display none -no-reboot \
		-serial "file:${serial_log}" -monitor none \
		"${devices[@]}" </dev/null >"${OUT}/qemu.log" 2>&1 || qemu_rc=$?
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

echo "e2e-kernel: wall time $(elapsed) (QEMU boot to power-off ${boot_ms}ms)"
echo "e2e-kernel: ${passed} passed, ${failed} failed, ${skipped} skipped"
((failed == 0 && ok_end == 1))
