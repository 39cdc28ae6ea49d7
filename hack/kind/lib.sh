# shellcheck shell=bash disable=SC2034
# Shared by the hack/kind/*.sh scripts (sourced, not run).
# Versions live here so every script agrees; override any of them from the environment.

KIND_VERSION="${KIND_VERSION:-v0.33.0}"
K8S_VERSION="${K8S_VERSION:-1.37.2}"          # without the leading v
ETCD_IMAGE_VERSION="${ETCD_IMAGE_VERSION:-3.7.0-0}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.14.6}"
PAUSE_VERSION="${PAUSE_VERSION:-3.10.2}"
KIND_CLUSTER_NAME="${KIND_CLUSTER_NAME:-mqtt-operator}"
# Standard node image, tried first (only where a registry is reachable).
KINDEST_NODE_IMAGE="${KINDEST_NODE_IMAGE:-kindest/node:v${K8S_VERSION}}"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
KIND_DIR="${REPO_ROOT}/hack/kind"
TOOLS_BIN="${REPO_ROOT}/bin/tools"
KIND_BIN="${TOOLS_BIN}/kind-${KIND_VERSION}"
KIND_CACHE="${REPO_ROOT}/bin/kind-cache"      # built binaries and image tarballs
KIND_STATE="${REPO_ROOT}/bin/kind"            # kubeconfig of the running cluster
KUBECONFIG_PATH="${KIND_STATE}/kubeconfig"

_script="$(basename "$0" .sh)"
_t0="$(date +%s)"
log() { echo "[${_script} +$(( $(date +%s) - _t0 ))s] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# Background work on a shared 2-core machine stays polite.
NICE="${NICE-nice -n 10}"

# True when CAP_SYS_RESOURCE (bit 24) is missing from our capability bounding set:
# such hosts cannot run Docker's privileged containers without hack/kind/ci-host/.
host_lacks_cap_sys_resource() {
  local bnd
  bnd="$(awk '/^CapBnd:/ {print $2}' /proc/self/status)"
  (( (16#${bnd} >> 24 & 1) == 0 ))
}

# docker_build <log file> <docker build args...>: output goes to the log (the legacy
# builder is chatty), the log's tail to stderr when the build fails.
docker_build() {
  local logf="$1"
  shift
  mkdir -p "$(dirname "${logf}")"
  if ! ${NICE} docker build "$@" >"${logf}" 2>&1; then
    tail -n 40 "${logf}" >&2
    die "docker build failed (log: ${logf})"
  fi
}

# apt_get: apt-get that waits for the dpkg/apt locks with a message.
# shellcheck source=../lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/apt.sh"

as_root() {
  if [[ "$(id -u)" == 0 ]]; then "$@"; else sudo "$@"; fi
}

# go_helper_module <dir> <module> <version> <published version of its replaced modules> <replace prefix>
# Some modules (k8s.io/kubernetes, go.etcd.io/etcd/server/v3) replace their sibling
# modules with local paths, so `go install module@version` refuses them. A throwaway
# module that requires the module and points each such sibling at its published
# release builds the same code (the approach of hack/envtest-assets.sh).
go_helper_module() {
  local dir="$1" mod="$2" ver="$3" pubver="$4" prefix="$5" gomod
  mkdir -p "${dir}"
  [[ -f "${dir}/go.mod" ]] && grep -q "^require ${mod} ${ver}$" "${dir}/go.mod" && return 0
  gomod="$(cd "${dir}" && GOFLAGS=-mod=mod go mod download -json "${mod}@${ver}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  [[ -n "${gomod}" ]] || die "cannot download ${mod}@${ver}"
  {
    echo "module kindbuild"
    echo "go $(go env GOVERSION | sed 's/^go//; s/\.[0-9]*$//')"
    echo "require ${mod} ${ver}"
    sed -E 's/^[[:space:]]*replace[[:space:]]+//; s/^[[:space:]]+//' "${gomod}" \
      | { grep -E "^${prefix}\S* => \.\.?/[a-z]" || true; } \
      | awk -v v="${pubver}" '{print "replace " $1 " => " $1 " " v}'
  } >"${dir}/go.mod"
  rm -f "${dir}/go.sum"
}
