#!/usr/bin/env bash
# Makes the Debian bookworm base image every locally built image starts FROM, since no
# image can be pulled here: a minimal rootfs from debootstrap (Debian's archive is
# reachable), imported with `docker import`. ~0.5-1.5 min cold; cached by tag. Prints the tag.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SUITE="${DEBIAN_SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
TAG="mqtt-operator.local/debian:${SUITE}-minbase"

if docker image inspect "${TAG}" >/dev/null 2>&1; then
  echo "${TAG}"
  exit 0
fi
if ! command -v debootstrap >/dev/null; then
  log "installing debootstrap with apt"
  apt_get install -y -q debootstrap >/dev/null
fi
log "debootstrap ${SUITE} (minbase) from ${MIRROR} (~0.5-1.5 min)"
mkdir -p "${KIND_CACHE}/logs"
root="$(mktemp -d /var/tmp/rootfs-XXXXXX)"
trap 'as_root rm -rf "${root}"' EXIT
# shellcheck disable=SC2086 # NICE is a command prefix ("nice -n 10"), split on purpose
as_root ${NICE} debootstrap --variant=minbase --components=main "${SUITE}" "${root}" "${MIRROR}" >"${KIND_CACHE}/logs/debootstrap.log" 2>&1 \
  || { tail -n 20 "${KIND_CACHE}/logs/debootstrap.log" >&2; die "debootstrap failed (log: ${KIND_CACHE}/debootstrap.log)"; }
as_root tee "${root}/etc/apt/sources.list" >/dev/null <<SOURCES
deb ${MIRROR} ${SUITE} main
deb ${MIRROR} ${SUITE}-updates main
deb ${SECURITY_MIRROR} ${SUITE}-security main
SOURCES
# Image builds install packages without recommends and without starting services.
as_root tee "${root}/etc/apt/apt.conf.d/90-container" >/dev/null <<'APT'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
APT
as_root rm -rf "${root}"/var/cache/apt/archives/*.deb "${root}"/var/lib/apt/lists/* "${root}"/var/log/*.log
log "importing the rootfs as ${TAG}"
as_root tar -C "${root}" --numeric-owner -c . | docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "${TAG}" >/dev/null
log "made ${TAG} ($(docker image inspect -f '{{.Size}}' "${TAG}" | awk '{printf "%d MB", $1/1e6}'))"
echo "${TAG}"
