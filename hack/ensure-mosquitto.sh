#!/usr/bin/env bash
# Makes sure Debian's mosquitto broker (2.0.x) and its command-line clients are
# installed: `make bench-broker` runs mosquitto as the baseline next to our
# broker and plain mochi, and the broker tests use mosquitto_pub/mosquitto_sub
# as an independent MQTT implementation. A no-op when both are present. Installs with apt-get
# (noninteractive, no recommends) otherwise, which needs root on Debian; the
# package's service is neither needed nor started here: the benchmark runs its
# own mosquitto processes on loopback ports with a generated configuration.
#
# Prints the path of the mosquitto binary on stdout; progress goes to stderr.
set -euo pipefail

log() { echo "ensure-mosquitto: $*" >&2; }
# shellcheck source=lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"

find_mosquitto() {
  command -v mosquitto 2>/dev/null && return 0
  [[ -x /usr/sbin/mosquitto ]] && { echo /usr/sbin/mosquitto; return 0; }
  return 1
}

if find_mosquitto >/dev/null && command -v mosquitto_pub >/dev/null 2>&1; then
  find_mosquitto
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  log "mosquitto is missing and this is not a Debian-like system; install mosquitto 2.0 yourself"
  exit 1
fi
SUDO=()
if [[ "$(id -u)" != 0 ]]; then
  if ! command -v sudo >/dev/null 2>&1; then
    log "mosquitto is missing; run as root or install it: apt-get install mosquitto"
    exit 1
  fi
  SUDO=(sudo)
fi

log "installing Debian's mosquitto and mosquitto-clients packages (~30 s)"
export DEBIAN_FRONTEND=noninteractive
# Keep the package's init script from starting a system-wide broker on 1883
# (in containers without an init system it would fail anyway): policy-rc.d
# exit code 101 means "action forbidden" to invoke-rc.d.
POLICY=/usr/sbin/policy-rc.d
ADDED_POLICY=false
if [[ ! -e "${POLICY}" ]]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "${POLICY}" >/dev/null
  "${SUDO[@]}" chmod 0755 "${POLICY}"
  ADDED_POLICY=true
fi
cleanup() { if [[ "${ADDED_POLICY}" == true ]]; then "${SUDO[@]}" rm -f "${POLICY}"; fi; }
trap cleanup EXIT

# Update the package lists only when mosquitto is not already known to apt.
if ! apt-cache show mosquitto >/dev/null 2>&1; then
  apt_get update -qq >&2
fi
if ! apt_get install -y -qq --no-install-recommends mosquitto mosquitto-clients >&2; then
  apt_get update -qq >&2
  apt_get install -y -qq --no-install-recommends mosquitto mosquitto-clients >&2
fi

if ! command -v mosquitto_pub >/dev/null 2>&1 || ! find_mosquitto; then
  log "apt-get reported success but mosquitto or mosquitto_pub was not found"
  exit 1
fi
