#!/usr/bin/env bash
# CI hosts only (capability bounding set without CAP_SYS_RESOURCE). Installs
# runc-drop-sys-resource and makes it Docker's default runtime in
# /etc/docker/daemon.json, merging with whatever is already there. If dockerd is
# already running and the config changed, reloads it (SIGHUP; runtimes are
# reloadable). Idempotent; takes well under a second.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

RUNTIME_NAME=runc-drop-sys-resource
WRAPPER_DEST=/usr/local/libexec/mqtt-operator/runc-drop-sys-resource
DAEMON_JSON=/etc/docker/daemon.json

if ! host_lacks_cap_sys_resource; then
  log "this host has CAP_SYS_RESOURCE in its bounding set: the runc wrapper is not needed; nothing done"
  exit 0
fi
command -v jq >/dev/null || { apt_get install -y -q jq >/dev/null; }
command -v runc >/dev/null || [[ -x /usr/sbin/runc ]] || die "runc not found (install docker.io first)"

changed=false
if ! cmp -s "${KIND_DIR}/ci-host/runc-drop-sys-resource" "${WRAPPER_DEST}" 2>/dev/null; then
  as_root install -D -m 0755 "${KIND_DIR}/ci-host/runc-drop-sys-resource" "${WRAPPER_DEST}"
  log "installed ${WRAPPER_DEST}"
  changed=true
fi

current='{}'
[[ -s "${DAEMON_JSON}" ]] && current="$(cat "${DAEMON_JSON}")"
wanted="$(jq --arg n "${RUNTIME_NAME}" --arg p "${WRAPPER_DEST}" \
  '.runtimes[$n] = {path: $p} | ."default-runtime" = $n' <<<"${current}")"
if [[ "$(jq -S . <<<"${current}")" != "$(jq -S . <<<"${wanted}")" ]]; then
  as_root mkdir -p "$(dirname "${DAEMON_JSON}")"
  as_root tee "${DAEMON_JSON}" >/dev/null <<<"${wanted}"
  log "registered ${RUNTIME_NAME} as Docker's default runtime in ${DAEMON_JSON}"
  changed=true
fi

if [[ "${changed}" == true && -s /var/run/docker.pid ]] && as_root kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
  log "reloading the running dockerd"
  as_root kill -HUP "$(cat /var/run/docker.pid)"
  sleep 1
fi
