#!/usr/bin/env bash
# Builds helm from its Go module (hack/helm/go.mod pins the version), because
# release binaries cannot be downloaded on our build machines. Prints the path
# of the binary on stdout; progress goes to stderr.
#
# Cached: bin/tools/helm, rebuilt only when hack/helm/go.sum changes. Cold
# cost on 2 cores: ~2 min.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${ROOT}/bin/tools/helm"
STAMP="${BIN}.go.sum"

if [[ -x "${BIN}" && -f "${STAMP}" ]] && cmp -s "${STAMP}" "${ROOT}/hack/helm/go.sum"; then
  echo "${BIN}"
  exit 0
fi
echo "helm: building helm from its Go module (hack/helm/go.mod), ~2 min on 2 cores, once" >&2
mkdir -p "$(dirname "${BIN}")"
start=$(date +%s)
# The flags helm's own Makefile sets: its version, and the Kubernetes
# version its client libraries speak (without them `helm template` assumes
# Kubernetes 1.20).
(
  cd "${ROOT}/hack/helm"
  helm_ver="$(go list -m -f '{{.Version}}' helm.sh/helm/v3)"
  k8s_minor="$(go list -m -f '{{.Version}}' k8s.io/client-go | cut -d. -f2)"
  go build -o "${BIN}" -ldflags "-X helm.sh/helm/v3/internal/version.version=${helm_ver} \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${k8s_minor} \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${k8s_minor}" \
    helm.sh/helm/v3/cmd/helm
)
cp "${ROOT}/hack/helm/go.sum" "${STAMP}"
echo "helm: built in $(( $(date +%s) - start ))s: ${BIN}" >&2
echo "${BIN}"
