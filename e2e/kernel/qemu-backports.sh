#!/usr/bin/env bash
# Fetches QEMU from bookworm-backports into a private root, never installing
# it over the host's QEMU (Debian 12 ships 7.2, which has no SR-IOV NIC; the
# NIC lab needs `-device igb`, QEMU >= 8).
#
#   e2e/kernel/qemu-backports.sh            prints the path of the cached root
#
# The root ${E2E_CACHE}/qemu-${E2E_QEMU_VERSION} holds the unpacked debs
# (dpkg -x) of qemu-system-x86 and whatever apt says the host lacks for it,
# and a wrapper bin/qemu-system-x86_64 that sets LD_LIBRARY_PATH,
# QEMU_MODULE_DIR and both firmware -L paths. apt runs against a private
# sources file and lists directory (the host's apt state is only read, to
# know what is installed), with the mirror the host's apt already uses.
#
# Environment: E2E_CACHE, E2E_QEMU_VERSION (upstream version to expect,
# default 10.0.2; the cache is keyed by it), E2E_QEMU_SUITE (default
# bookworm-backports).
set -euo pipefail

CACHE=${E2E_CACHE:-/var/cache/sriov-cdi-e2e}
QVER=${E2E_QEMU_VERSION:-10.0.2}
SUITE=${E2E_QEMU_SUITE:-bookworm-backports}
ROOT=${CACHE}/qemu-${QVER}
PKGS=(qemu-system-x86 qemu-system-common qemu-system-data seabios ipxe-qemu)

log() { printf 'e2e-qemu: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# lacking ROOT: the libraries ldd cannot find for ROOT's QEMU. The root
# holds only what the host lacked when it was fetched (apt's answer), so a
# host that has since lost a library (apt autoremove) needs a new fetch.
lacking() {
	LD_LIBRARY_PATH="$1/usr/lib/x86_64-linux-gnu:$1/lib/x86_64-linux-gnu" ldd "$1/usr/bin/qemu-system-x86_64" 2>&1 |
		awk '/not found/ {print $1}' | tr '\n' ' '
}
# -device igb,help rather than -device help: the latter loads every module
# QEMU can find, including the host's own QEMU's (other version: fatal).
has_igb() { "$1/bin/qemu-system-x86_64" -device igb,help 2>/dev/null | grep -q '^igb options'; }

if [[ -s ${ROOT}/stamp && -x ${ROOT}/bin/qemu-system-x86_64 ]]; then
	if [[ -z $(lacking "${ROOT}") ]] && has_igb "${ROOT}"; then
		echo "${ROOT}"
		exit 0
	fi
	log "cached QEMU in ${ROOT} lacks libraries now ($(lacking "${ROOT}")); fetching again"
fi
[[ $(id -u) -eq 0 ]] || die "must run as root (apt-get download, ${CACHE})"

# The host's Debian mirror, from deb822 .sources or one-line .list files.
mirror() {
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		[[ -f ${f} ]] || continue
		awk '/^URIs:/ {for (i = 2; i <= NF; i++) if ($i !~ /security/) {print $i; exit}}' "${f}"
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[[ -f ${f} ]] || continue
		awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {if ($i !~ /security/) print $i; break}}' "${f}"
	done
}
MIRROR=$(mirror | head -n 1)
[[ -n ${MIRROR} ]] || MIRROR=http://deb.debian.org/debian
CODENAME=${SUITE%%-*}

mkdir -p "${CACHE}"
tmp=$(mktemp -d "${CACHE}/.qemu.XXXXXX")
trap 'rm -rf "${tmp}"' EXIT
chmod 0755 "${tmp}"
mkdir -p "${tmp}"/{lists/partial,cache/archives/partial,debs}
chown -R _apt "${tmp}/lists" "${tmp}/debs" 2>/dev/null || true
# The base suite too: the backports QEMU may need libraries the host lacks
# that only the base suite has.
printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s main\n' \
	"${MIRROR}" "${CODENAME}" "${MIRROR}" "${CODENAME}" "${MIRROR}" "${SUITE}" >"${tmp}/sources.list"
APT=(-o "Dir::Etc::sourcelist=${tmp}/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=${tmp}/lists"
	-o "Dir::Cache=${tmp}/cache" -o Debug::NoLocking=1 -o APT::Get::List-Cleanup=0 -q)

log "fetching QEMU ${QVER} from ${MIRROR} ${SUITE} into ${ROOT} (one time)"
apt-get "${APT[@]}" update >"${tmp}/update.log" 2>&1 || { cat "${tmp}/update.log" >&2; die "apt-get update (private lists) failed"; }

cand=$(apt-cache "${APT[@]}" -t "${SUITE}" policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
upstream=${cand#*:}
upstream=${upstream%%+*}
upstream=${upstream%%-*}
[[ ${upstream} == "${QVER}" ]] ||
	die "${SUITE} offers qemu-system-x86 ${cand}, not ${QVER}; set E2E_QEMU_VERSION=${upstream} after checking the NIC lab with it"

# apt's own resolution: what installing the set would bring in that the host
# does not have (libraries), at the versions the set needs.
apt-get "${APT[@]}" -s -t "${SUITE}" install --no-install-recommends "${PKGS[@]}" >"${tmp}/sim.log" 2>&1 ||
	{ cat "${tmp}/sim.log" >&2; die "apt-get -s install failed"; }
mapfile -t want < <(awk '$1 == "Inst" {v = $3; if (v ~ /^\[/) v = $4; gsub(/[()]/, "", v); print $2 "=" v}' "${tmp}/sim.log")
# Named packages are taken even when the host has them at the same version.
for p in "${PKGS[@]}"; do
	if ! printf '%s\n' "${want[@]}" | grep -q "^${p}="; then
		want+=("${p}=$(apt-cache "${APT[@]}" -t "${SUITE}" policy "${p}" | awk '/Candidate:/ {print $2}')")
	fi
done
log "downloading ${#want[@]} packages: ${want[*]}"
(cd "${tmp}/debs" && apt-get "${APT[@]}" download "${want[@]}" >"${tmp}/download.log" 2>&1) ||
	{ cat "${tmp}/download.log" >&2; die "apt-get download failed"; }

stage=${tmp}/root
for d in "${tmp}"/debs/*.deb; do
	dpkg -x "${d}" "${stage}"
done
mkdir -p "${stage}/bin"
cat >"${stage}/bin/qemu-system-x86_64" <<'EOF'
#!/bin/sh
# QEMU from a private root (e2e/kernel/qemu-backports.sh); not installed.
R=$(cd "$(dirname "$0")/.." && pwd)
export LD_LIBRARY_PATH="$R/usr/lib/x86_64-linux-gnu:$R/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export QEMU_MODULE_DIR="$R/usr/lib/x86_64-linux-gnu/qemu"
exec "$R/usr/bin/qemu-system-x86_64" -L "$R/usr/share/qemu" -L "$R/usr/share/seabios" "$@"
EOF
chmod 0755 "${stage}/bin/qemu-system-x86_64"

missing=$(lacking "${stage}")
[[ -z ${missing} ]] || die "QEMU ${QVER} still lacks libraries: ${missing}"
ver=$("${stage}/bin/qemu-system-x86_64" --version | head -n 1)
[[ ${ver} == *" ${QVER}"* ]] || die "unexpected version: ${ver}"
has_igb "${stage}" || die "QEMU ${QVER} has no igb device"
printf '%s\n' "${want[@]}" >"${stage}/packages"
echo "${ver}" >"${stage}/stamp"
rm -rf "${ROOT}"
mv "${stage}" "${ROOT}"
log "QEMU ready: ${ver} ($(wc -l <"${ROOT}/packages") packages)"
echo "${ROOT}"
