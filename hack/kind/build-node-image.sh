#!/usr/bin/env bash
# Provides a kind node image for Kubernetes v${K8S_VERSION} and prints its name on stdout.
#
# 1. The standard kindest/node image, if it is already local or can be pulled (a quick
#    check, 20 s at most). That is the normal case on a machine with registry access.
# 2. Otherwise (our CI machines: no registry at all) an image assembled here from
#    Debian packages and Go modules only, cached by a tag that hashes its inputs:
#      - Kubernetes, etcd, CoreDNS, crictl, pause binaries  build-binaries.sh   ~20 min cold
#      - Debian bookworm rootfs from debootstrap             build-rootfs-image.sh ~0.5-1.5 min
#      - the control-plane images, tagged exactly as `kubeadm config images list` says  ~15 s
#      - the node image (hack/kind/node-image/Dockerfile)                        ~40 s
#    A warm run takes a few seconds.
#
# KIND_NODE_IMAGE=<image> skips all of this; KIND_OFFLINE_NODE_IMAGE=1 skips step 1.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ -n "${KIND_NODE_IMAGE:-}" ]]; then
  echo "${KIND_NODE_IMAGE}"
  exit 0
fi

# --- 1. the standard image ------------------------------------------------------------
if [[ "${KIND_OFFLINE_NODE_IMAGE:-0}" != 1 ]]; then
  if docker image inspect "${KINDEST_NODE_IMAGE}" >/dev/null 2>&1; then
    echo "${KINDEST_NODE_IMAGE}"
    exit 0
  fi
fi

# --- 2. the offline image ---------------------------------------------------------------
NODE_REPO="mqtt-operator.local/kind-node"
# Bump when the way the build context is assembled below changes.
NODE_IMAGE_REVISION=1

if [[ "${KIND_OFFLINE_NODE_IMAGE:-0}" != 1 ]] \
  && [[ -z "$(docker images -q --filter "reference=${NODE_REPO}:v${K8S_VERSION}-*")" ]]; then
  log "trying to pull ${KINDEST_NODE_IMAGE} (20 s at most)"
  if timeout 20 docker pull -q "${KINDEST_NODE_IMAGE}" >/dev/null 2>&1; then
    echo "${KINDEST_NODE_IMAGE}"
    exit 0
  fi
  log "no registry access: using a node image built here (~25 min cold, seconds once cached)"
fi

BIN="$("${KIND_DIR}/build-binaries.sh")"
K8S_BIN="${BIN}/kubernetes-v${K8S_VERSION}"
ROOTFS_IMAGE="$("${KIND_DIR}/build-rootfs-image.sh")"
WORK="$(mktemp -d /var/tmp/kind-node-XXXXXX)"
trap 'rm -rf "${WORK}"' EXIT

# --- control-plane images ---
# A minimal root for the static Go binaries: users, name resolution, /tmp.
mkdir -p "${WORK}/static-root/etc" "${WORK}/static-root/tmp"
chmod 1777 "${WORK}/static-root/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"${WORK}/static-root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"${WORK}/static-root/etc/group"
printf 'hosts: files dns\n' >"${WORK}/static-root/etc/nsswitch.conf"

# build_image <tag> <binary> <path in image> <extra Dockerfile lines>
build_image() {
  local tag="$1" binary="$2" dest="$3" extra="$4" ctx recipe
  ctx="${WORK}/img-$(basename "${dest}")"
  mkdir -p "${ctx}"
  if [[ "${tag}" == */kube-proxy:* ]]; then
    recipe="FROM ${ROOTFS_IMAGE}
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q iptables nftables ipset conntrack kmod \\
 && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/*"
  else
    recipe="FROM scratch
COPY static-root/ /
ENV PATH=/usr/local/bin:/usr/bin:/bin"
  fi
  recipe+="
COPY $(basename "${binary}") ${dest}
${extra}"
  local want
  want="$( (echo "${recipe}"; stat -c '%s %Y' "${binary}"; docker image inspect -f '{{.Id}}' "${ROOTFS_IMAGE}") | sha256sum | cut -c1-16)"
  if [[ "$(docker image inspect -f '{{index .Config.Labels "io.mqtt-operator.recipe"}}' "${tag}" 2>/dev/null)" == "${want}" ]]; then
    return 0
  fi
  log "building image ${tag}"
  cp -a "${WORK}/static-root" "${ctx}/"
  cp "${binary}" "${ctx}/"
  printf '%s\nLABEL io.mqtt-operator.recipe=%s\n' "${recipe}" "${want}" >"${ctx}/Dockerfile"
  docker_build "${KIND_CACHE}/logs/image-$(basename "${dest}").log" -t "${tag}" "${ctx}"
}

images=()
while read -r image; do
  name="${image##*/}"; name="${name%%:*}"; ver="${image##*:}"
  case "${name}" in
    kube-apiserver | kube-controller-manager | kube-scheduler)
      [[ "${ver}" == "v${K8S_VERSION}" ]] || die "kubeadm wants ${image}, expected v${K8S_VERSION}"
      build_image "${image}" "${K8S_BIN}/${name}" "/usr/local/bin/${name}" "" ;;
    kube-proxy)
      build_image "${image}" "${K8S_BIN}/kube-proxy" /usr/local/bin/kube-proxy "" ;;
    etcd)
      [[ "${ver}" == "${ETCD_IMAGE_VERSION}" ]] || die "kubeadm wants ${image}; set ETCD_IMAGE_VERSION in hack/kind/lib.sh"
      build_image "${image}" "${BIN}/etcd-v${ETCD_IMAGE_VERSION%-*}/etcd" /usr/local/bin/etcd "" ;;
    coredns)
      [[ "${ver}" == "${COREDNS_VERSION}" ]] || die "kubeadm wants ${image}; set COREDNS_VERSION in hack/kind/lib.sh"
      build_image "${image}" "${BIN}/coredns-${COREDNS_VERSION}/coredns" /coredns 'ENTRYPOINT ["/coredns"]' ;;
    pause)
      [[ "${ver}" == "${PAUSE_VERSION}" ]] || die "kubeadm wants ${image}; set PAUSE_VERSION in hack/kind/lib.sh"
      PAUSE_IMAGE="${image}"
      build_image "${image}" "${BIN}/pause-${PAUSE_VERSION}/pause" /pause 'ENTRYPOINT ["/pause"]' ;;
    *) die "kubeadm wants ${image}, which this script does not know how to build" ;;
  esac
  images+=("${image}")
done < <("${K8S_BIN}/kubeadm" config images list --kubernetes-version "v${K8S_VERSION}")
[[ -n "${PAUSE_IMAGE:-}" ]] || die "kubeadm listed no pause image"

# --- node image ---
# The tag hashes every input, so a change to any of them makes a new image, and an
# unchanged set is found again at once.
inputs_hash() {
  {
    echo "${NODE_IMAGE_REVISION} ${K8S_VERSION} ${KIND_VERSION}"
    (cd "${KIND_DIR}/node-image" && find . -type f | LC_ALL=C sort | xargs sha256sum)
    (cd "${BIN}" && stat -c '%n %s %Y' "kubernetes-v${K8S_VERSION}"/{kubelet,kubeadm,kubectl} crictl-*/crictl)
    docker image inspect -f '{{.Id}}' "${ROOTFS_IMAGE}" "${images[@]}"
  } | sha256sum | cut -c1-12
}
NODE_IMAGE="${NODE_REPO}:v${K8S_VERSION}-$(inputs_hash)"
# Node images of earlier inputs take ~1.4 GB each: drop those no container uses.
prune_old_node_images() {
  local old
  for old in $(docker images --format '{{.Repository}}:{{.Tag}}' "${NODE_REPO}"); do
    [[ "${old}" == "${NODE_IMAGE}" ]] || docker rmi "${old}" >/dev/null 2>&1 || true
  done
}
if docker image inspect "${NODE_IMAGE}" >/dev/null 2>&1; then
  prune_old_node_images
  log "using the cached node image ${NODE_IMAGE}"
  echo "${NODE_IMAGE}"
  exit 0
fi

log "assembling the node image build context"
kind_src="$(cd /tmp && go mod download -json "sigs.k8s.io/kind@${KIND_VERSION}" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
[[ -d "${kind_src}/images/base/files" ]] || die "kind ${KIND_VERSION} source not found in the Go module cache"
ctx="${WORK}/node"
mkdir -p "${ctx}/bin"
cp -r "${kind_src}/images/base/files" "${ctx}/kind-base"
rm -rf "${ctx}/kind-base/LICENSES"
chmod -R u+w,go-w "${ctx}/kind-base"
find "${ctx}/kind-base" -type d -exec chmod 0755 {} +
find "${ctx}/kind-base" -type f -exec chmod 0644 {} +
chmod 0755 "${ctx}"/kind-base/usr/local/bin/* "${ctx}"/kind-base/kind/bin/*
# Our entrypoint runs first, then kind's.
mv "${ctx}/kind-base/usr/local/bin/entrypoint" "${ctx}/kind-base/usr/local/bin/kind-entrypoint"
cp -a "${KIND_DIR}/node-image/overlay" "${ctx}/overlay"
cp "${KIND_DIR}/node-image/Dockerfile" "${ctx}/"
cp "${K8S_BIN}/kubelet" "${K8S_BIN}/kubeadm" "${K8S_BIN}/kubectl" "${BIN}"/crictl-*/crictl "${ctx}/bin/"
log "saving ${#images[@]} control-plane images for import into the node's containerd"
docker save -o "${ctx}/images.tar" "${images[@]}"
log "building ${NODE_IMAGE} (~1 min: apt-get inside, then the image import)"
build_log="${KIND_CACHE}/logs/node-image.log"
docker_build "${build_log}" -t "${NODE_IMAGE}" \
  --build-arg "ROOTFS_IMAGE=${ROOTFS_IMAGE}" \
  --build-arg "PAUSE_IMAGE=${PAUSE_IMAGE}" \
  --build-arg "KUBERNETES_VERSION=v${K8S_VERSION}" \
  "${ctx}"
# The legacy builder keeps the throwaway import stage (tarball layer included, ~2 GB) as
# build cache; drop it.
import_stage="$(awk '/^ ---> [0-9a-f]+$/ {last = $2} /^Step [0-9]+\/[0-9]+ : FROM node$/ {print last; exit}' "${build_log}")"
[[ -z "${import_stage}" ]] || docker rmi "${import_stage}" >/dev/null 2>&1 || true
prune_old_node_images
log "built ${NODE_IMAGE} ($(docker image inspect -f '{{.Size}}' "${NODE_IMAGE}" | awk '{printf "%d MB", $1/1e6}'))"
echo "${NODE_IMAGE}"
