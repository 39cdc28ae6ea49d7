#!/usr/bin/env bash
# Builds the kube-apiserver and etcd binaries that envtest needs, from Go modules,
# because setup-envtest cannot download release binaries on our build machines.
# Prints the directory to use as KUBEBUILDER_ASSETS on stdout; progress goes to stderr.
#
# Cached: bin/k8s/<k8s version>/ holds the binaries; a second run prints the path at
# once. Cold cost on 2 cores: ~8 min for kube-apiserver, ~1 min for etcd.
#
# If KUBEBUILDER_ASSETS is already set and holds both binaries, it is used as is.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-3.6.16}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${ROOT}/bin/k8s/${K8S_VERSION}-$(go env GOOS)-$(go env GOARCH)"

log() { echo "envtest-assets: $*" >&2; }

if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "${KUBEBUILDER_ASSETS}/kube-apiserver" && -x "${KUBEBUILDER_ASSETS}/etcd" ]]; then
  echo "${KUBEBUILDER_ASSETS}"
  exit 0
fi
if [[ -x "${DEST}/kube-apiserver" && -x "${DEST}/etcd" ]]; then
  echo "${DEST}"
  exit 0
fi
mkdir -p "${DEST}"
WORK="$(mktemp -d)"
trap 'rm -rf "${WORK}"' EXIT

# Kubernetes pins its staging modules (k8s.io/api, k8s.io/client-go, ...) to local
# paths, so `go install k8s.io/kubernetes/cmd/...@v1.37.2` is refused. A throwaway
# module that requires k8s.io/kubernetes and points each staging module at its
# published v0.x release builds the same code.
helper_module() { # <dir> <module> <version> <replace-with-version> <replace-filter>
  local dir="$1" mod="$2" ver="$3" pubver="$4" filter="$5"
  mkdir -p "${dir}"
  local gomod
  gomod="$(cd "${dir}" && GOFLAGS=-mod=mod go mod download -json "${mod}@${ver}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  {
    echo "module envtestbuild"
    echo "go $(go env GOVERSION | sed 's/^go//; s/\.[0-9]*$//')"
    echo "require ${mod} ${ver}"
    sed -E 's/^[[:space:]]*replace[[:space:]]+//; s/^[[:space:]]+//' "${gomod}" \
      | { grep -E "^${filter}\S* => \.\.?/[a-z]" || true; } | grep -v FORBIDDEN \
      | awk -v v="${pubver}" '{print "replace " $1 " => " $1 " " v}'
  } > "${dir}/go.mod"
}

if [[ ! -x "${DEST}/etcd" ]]; then
  log "building etcd v${ETCD_VERSION} from go.etcd.io/etcd/server/v3 (~1 min cold)"
  d="${WORK}/etcd"
  helper_module "${d}" go.etcd.io/etcd/server/v3 "v${ETCD_VERSION}" "v${ETCD_VERSION}" "go.etcd.io/etcd/"
  (
   cd "${d}" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags '-s -w' -o "${DEST}/etcd" go.etcd.io/etcd/server/v3)
fi

if [[ ! -x "${DEST}/kube-apiserver" ]]; then
  log "building kube-apiserver v${K8S_VERSION} from k8s.io/kubernetes (~8 min cold on 2 cores, seconds when cached)"
  d="${WORK}/kube"
  helper_module "${d}" k8s.io/kubernetes "v${K8S_VERSION}" "v0.${K8S_VERSION#*.}" "k8s.io/"
  pkg=k8s.io/component-base/version
  minor="$(echo "${K8S_VERSION}" | cut -d. -f2)"
  ldflags="-s -w -X ${pkg}.gitVersion=v${K8S_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor} -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
  (
   cd "${d}" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "${ldflags}" -o "${DEST}/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
fi

log "built $("${DEST}/kube-apiserver" --version 2>/dev/null), etcd $("${DEST}/etcd" --version 2>/dev/null | head -1)"
echo "${DEST}"
