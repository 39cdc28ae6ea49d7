#!/usr/bin/env bash
# Makes a working Docker daemon available for kind.
#
#  - `docker info` works (and, on a CI host lacking CAP_SYS_RESOURCE, the runc wrapper
#    is in place): nothing to do, returns in well under a second.
#  - dockerd missing: installs Debian's docker.io with apt (~1 min cold).
#  - dockerd not running: starts it in the background (there is no systemd on our CI
#    machines), logging to /var/log/dockerd.log, and waits for it (~5 s).
#  - Only on hosts whose capability bounding set lacks CAP_SYS_RESOURCE: installs the
#    runc wrapper from hack/kind/ci-host/ first (see hack/kind/ci-host/README.md).
#    On a normal host nothing of ci-host/ is touched.
#
# Ends by proving that a privileged container starts, which is what kind needs.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"

ci_host=false
if host_lacks_cap_sys_resource; then
  ci_host=true
  log "CAP_SYS_RESOURCE is missing from the capability bounding set: this host needs hack/kind/ci-host/"
fi

if ! command -v dockerd >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
  log "installing Debian's docker.io with apt (~1 min cold)"
  export DEBIAN_FRONTEND=noninteractive
  # Unreachable third-party apt sources must not stop us: only Debian's archive matters.
  apt_get update -q >/dev/null 2>&1 || log "apt-get update reported errors (ignored; continuing)"
  apt_get install -y -q --no-install-recommends docker.io jq >/dev/null
  log "installed $(dockerd --version)"
fi

if [[ "${ci_host}" == true ]]; then
  "${KIND_DIR}/ci-host/install-runc-wrapper.sh"
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd in the background (log: ${DOCKERD_LOG}; ~5 s)"
  as_root mkdir -p "$(dirname "${DOCKERD_LOG}")"
  # setsid: dockerd outlives this script and the shell that ran it. Normal priority even
  # when this script runs under nice: the kind node's processes inherit it. Every
  # descriptor above 2 is closed first: a caller's pipe left open in the daemon (such as
  # the one of `KUBECONFIG="$(install-operator.sh)"`) never reaches end-of-file, and the
  # caller waits forever (make demo and make test-e2e did, on a machine without dockerd).
  # shellcheck disable=SC2016
  as_root nice -n "$((-$(nice)))" setsid -f bash -c '
    for fd in /proc/$$/fd/*; do
      n=${fd##*/}
      if [[ ${n} -gt 2 ]]; then eval "exec ${n}>&-" 2>/dev/null || true; fi
    done
    exec dockerd' >>"${DOCKERD_LOG}" 2>&1 </dev/null
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { tail -n 30 "${DOCKERD_LOG}" >&2; die "dockerd did not come up; see ${DOCKERD_LOG}"; }
fi
log "docker is up: server $(docker version -f '{{.Server.Version}}'), storage $(docker info -f '{{.Driver}}'), cgroup driver $(docker info -f '{{.CgroupDriver}}'), default runtime $(docker info -f '{{.DefaultRuntime}}')"

# Proof that privileged containers start. No image can be pulled, so the probe image is
# made from the host's own /bin/true and the libraries it links (a few MB, made once).
PROBE_IMAGE="mqtt-operator.local/privileged-probe:1"
if ! docker image inspect "${PROBE_IMAGE}" >/dev/null 2>&1; then
  probe_root="$(mktemp -d)"
  trap 'rm -rf "${probe_root}"' EXIT
  for f in /usr/bin/true $(ldd /usr/bin/true | grep -o '/[^ ]*'); do
    cp --parents -L "${f}" "${probe_root}/"
  done
  tar -C "${probe_root}" -c . | docker import - "${PROBE_IMAGE}" >/dev/null
fi
if ! out="$(docker run --rm --privileged "${PROBE_IMAGE}" /usr/bin/true 2>&1)"; then
  echo "${out}" >&2
  if [[ "${ci_host}" == true ]]; then
    die "privileged containers fail even with the ci-host runc wrapper (see ${DOCKERD_LOG})"
  fi
  die "privileged containers fail; kind cannot run here"
fi
log "privileged containers run"
