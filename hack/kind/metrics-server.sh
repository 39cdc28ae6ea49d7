#!/usr/bin/env bash
# Installs metrics-server on the offline kind cluster, so HorizontalPodAutoscalers
# (spec.autoscaling) can read CPU use: a static binary built here from its Go
# module (hack/metrics-server/go.mod; ~5 min cold on 2 cores, cached in bin/ by version),
# an image FROM scratch loaded into the node, and its manifests. Idempotent;
# seconds when already installed. Needs KUBECONFIG set to the kind cluster.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KUBECTL="${KUBECTL:-${TOOLS_BIN}/kubectl}"
[[ -x "${KUBECTL}" ]] || KUBECTL=kubectl
version="$(awk '$1 == "sigs.k8s.io/metrics-server" {print $2}' "${REPO_ROOT}/hack/metrics-server/go.mod")"
[[ -n "${version}" ]] || die "no sigs.k8s.io/metrics-server in hack/metrics-server/go.mod"
image="mqtt-operator/metrics-server:${version}"
ctx="${REPO_ROOT}/bin/metrics-server-${version}"

if [[ ! -x "${ctx}/metrics-server" ]]; then
  log "building metrics-server ${version} from its Go module (~5 min cold on 2 cores)"
  mkdir -p "${ctx}"
  (cd "${REPO_ROOT}/hack/metrics-server" && CGO_ENABLED=0 GOOS=linux ${NICE} go build -trimpath -ldflags "-s -w" \
    -o "${ctx}/metrics-server" sigs.k8s.io/metrics-server/cmd/metrics-server)
fi
if ! docker image inspect "${image}" >/dev/null 2>&1; then
  log "building ${image} (FROM scratch)"
  printf 'FROM scratch\nCOPY metrics-server /metrics-server\nUSER 65532:65532\nENTRYPOINT ["/metrics-server"]\n' >"${ctx}/Dockerfile"
  docker_build "${ctx}/build.log" -t "${image}" "${ctx}"
fi
"${KIND_DIR}/load-image.sh" "${image}"
log "applying its manifests"
sed "s#image: IMAGE#image: ${image}#" "${KIND_DIR}/metrics-server/metrics-server.yaml" | "${KUBECTL}" apply -f - >/dev/null
"${KUBECTL}" -n kube-system rollout status deployment/metrics-server --timeout=3m >/dev/null
log "metrics-server ${version} running"
