#!/usr/bin/env bash
# Builds, from Go modules and C sources in the Go module cache, every binary the
# offline kind node image needs (release binaries are never downloaded here):
#
#   k8s.io/kubernetes v${K8S_VERSION}: kubelet kubeadm kubectl kube-apiserver
#       kube-controller-manager kube-scheduler kube-proxy       ~20 min cold on 2 cores
#   go.etcd.io/etcd/server/v3 (etcd)                            ~20 s-1 min cold
#   github.com/coredns/coredns                                  ~2-5 min cold
#   sigs.k8s.io/cri-tools (crictl; `kind load` needs it)        ~30 s cold
#   pause, compiled statically with gcc from the C source shipped in k8s.io/kubernetes
#
# Everything is static. Cached in bin/kind-cache/bin/<component>-<version>/; a warm run
# takes well under a second. Prints the cache directory on stdout.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ETCD_VERSION="${ETCD_IMAGE_VERSION%-*}"
CRICTL_VERSION="${CRICTL_VERSION:-v1.37.0}"
OUT="${KIND_CACHE}/bin"
GOMODS="${KIND_CACHE}/gomod"
K8S_OUT="${OUT}/kubernetes-v${K8S_VERSION}"
K8S_CMDS=(kubelet kubeadm kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy)
export CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "${OUT}" "${GOMODS}"

missing=()
for c in "${K8S_CMDS[@]}"; do [[ -x "${K8S_OUT}/${c}" ]] || missing+=("${c}"); done
if ((${#missing[@]})); then
  log "building ${missing[*]} v${K8S_VERSION} from k8s.io/kubernetes (~20 min with a cold Go build cache on 2 cores, ~5 min with a warm one)"
  go_helper_module "${GOMODS}/kubernetes" k8s.io/kubernetes "v${K8S_VERSION}" "v0.${K8S_VERSION#*.}" "k8s.io/"
  minor="$(cut -d. -f2 <<<"${K8S_VERSION}")"
  ldflags="-s -w"
  # Without these the binaries say v0.0.0-master, which kubeadm and kubectl reject.
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor} -X ${pkg}.gitVersion=v${K8S_VERSION}"
    ldflags+=" -X ${pkg}.gitCommit=unknown -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
  done
  tmp="${K8S_OUT}.tmp"
  rm -rf "${tmp}" && mkdir -p "${tmp}"
  pkgs=()
  for c in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/${c}"); done
  (cd "${GOMODS}/kubernetes" && ${NICE} go build -trimpath -ldflags "${ldflags}" -o "${tmp}/" "${pkgs[@]}")
  mkdir -p "${K8S_OUT}"
  mv "${tmp}"/* "${K8S_OUT}/" && rmdir "${tmp}"
  log "built $("${K8S_OUT}/kubeadm" version -o short)"
fi

ETCD_OUT="${OUT}/etcd-v${ETCD_VERSION}"
if [[ ! -x "${ETCD_OUT}/etcd" ]]; then
  log "building etcd v${ETCD_VERSION} from go.etcd.io/etcd/server/v3 (~20 s after Kubernetes, ~1 min alone)"
  go_helper_module "${GOMODS}/etcd" go.etcd.io/etcd/server/v3 "v${ETCD_VERSION}" "v${ETCD_VERSION}" "go.etcd.io/etcd/"
  mkdir -p "${ETCD_OUT}"
  (cd "${GOMODS}/etcd" && ${NICE} go build -trimpath -ldflags '-s -w' -o "${ETCD_OUT}/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "${ETCD_OUT}/etcd.tmp" "${ETCD_OUT}/etcd"
fi

COREDNS_OUT="${OUT}/coredns-${COREDNS_VERSION}"
if [[ ! -x "${COREDNS_OUT}/coredns" ]]; then
  log "building CoreDNS ${COREDNS_VERSION} from github.com/coredns/coredns (~2-5 min cold)"
  mkdir -p "${COREDNS_OUT}"
  GOBIN="${COREDNS_OUT}" ${NICE} go install -trimpath -ldflags '-s -w' "github.com/coredns/coredns@${COREDNS_VERSION}"
fi

CRICTL_OUT="${OUT}/crictl-${CRICTL_VERSION}"
if [[ ! -x "${CRICTL_OUT}/crictl" ]]; then
  log "building crictl ${CRICTL_VERSION} from sigs.k8s.io/cri-tools (~30 s cold)"
  mkdir -p "${CRICTL_OUT}"
  GOBIN="${CRICTL_OUT}" ${NICE} go install -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=${CRICTL_VERSION}" \
    "sigs.k8s.io/cri-tools/cmd/crictl@${CRICTL_VERSION}"
fi

PAUSE_OUT="${OUT}/pause-${PAUSE_VERSION}"
if [[ ! -x "${PAUSE_OUT}/pause" ]]; then
  log "compiling pause ${PAUSE_VERSION} with gcc from k8s.io/kubernetes build/pause (~1 s)"
  src="$(cd /tmp && go mod download -json "k8s.io/kubernetes@v${K8S_VERSION}" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')/build/pause/linux/pause.c"
  [[ -f "${src}" ]] || die "pause source not found at ${src}"
  command -v gcc >/dev/null || { apt_get install -y -q gcc libc6-dev >/dev/null; }
  mkdir -p "${PAUSE_OUT}"
  gcc -Os -Wall -Werror -static -DVERSION="v${PAUSE_VERSION}-gomod" -o "${PAUSE_OUT}/pause" "${src}"
  strip "${PAUSE_OUT}/pause"
fi

echo "${OUT}"
