#!/usr/bin/env bash
# Makes sure the MQTT client libraries that the broker's conformance tests
# drive (broker-image/clientlibs_test.go, docs/conformance.md) are present:
#   - MQTT.js, from the npm registry, pinned by test/clients/js/package-lock.json,
#     installed into test/clients/js/node_modules (npm ci; ~10 s cold)
#   - Python's paho-mqtt 1.6, Debian's python3-paho-mqtt for /usr/bin/python3
#     (apt-get; ~30 s cold)
# A no-op when both are there. Progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "ensure-client-libs: $*" >&2; }

if [[ ! -f test/clients/js/node_modules/mqtt/package.json ]]; then
  if ! command -v npm >/dev/null 2>&1; then
    log "npm is missing: install Node.js 20 or newer (Debian: apt-get install nodejs npm)"
    exit 1
  fi
  log "installing MQTT.js into test/clients/js/node_modules with npm ci (~10 s)"
  (cd test/clients/js && npm ci --no-audit --no-fund --loglevel=error >&2)
fi

if ! /usr/bin/python3 -c 'import paho.mqtt.client' 2>/dev/null; then
  if ! command -v apt-get >/dev/null 2>&1; then
    log "paho-mqtt is missing and this is not a Debian-like system: install python3-paho-mqtt 1.6 for /usr/bin/python3"
    exit 1
  fi
  # shellcheck source=lib/apt.sh
  source hack/lib/apt.sh
  log "installing Debian's python3-paho-mqtt with apt-get (~30 s)"
  if ! apt_get install -y -qq --no-install-recommends python3-paho-mqtt >&2; then
    apt_get update -qq >&2
    apt_get install -y -qq --no-install-recommends python3-paho-mqtt >&2
  fi
fi
