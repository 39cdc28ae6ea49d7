#!/usr/bin/env bash
# Renders the Helm chart into one file for `kubectl apply --server-side -f`:
# the namespace (enforcing the restricted Pod Security Standard, which the
# operator passes), the CRDs, RBAC and the operator. Usage:
#   hack/build-installer.sh OUT [IMG [BROKER_IMG]]
set -euo pipefail
cd "$(dirname "$0")/.."
out="$1"
img="${2:-}"
broker_img="${3:-}"
namespace=mqtt-operator-system
helm="$(hack/helm.sh)"
args=(template mqtt-operator charts/mqtt-operator --namespace "${namespace}" --include-crds)
if [[ -n "${img}" ]]; then
  args+=(--set "image.repository=${img%:*}" --set "image.tag=${img##*:}")
fi
if [[ -n "${broker_img}" ]]; then
  args+=(--set "brokerImage.repository=${broker_img%:*}" --set "brokerImage.tag=${broker_img##*:}")
fi
mkdir -p "$(dirname "${out}")"
{
  cat <<NS
# mqtt-operator installer, rendered from charts/mqtt-operator by
# hack/build-installer.sh. Apply with: kubectl apply --server-side -f install.yaml
apiVersion: v1
kind: Namespace
metadata:
  name: ${namespace}
  labels:
    pod-security.kubernetes.io/enforce: restricted
NS
  "${helm}" "${args[@]}"
} > "${out}"
echo "wrote ${out}" >&2
