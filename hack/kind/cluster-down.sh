#!/usr/bin/env bash
# Deletes the kind cluster "${KIND_CLUSTER_NAME}" (a few seconds) and its kubeconfig.
# The cached node image and binaries stay, so the next cluster-up.sh takes ~1 min.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KIND="$("${KIND_DIR}/build-kind.sh")"
if "${KIND}" get clusters 2>/dev/null | grep -qx "${KIND_CLUSTER_NAME}"; then
  log "deleting cluster ${KIND_CLUSTER_NAME}"
  "${KIND}" delete cluster --name "${KIND_CLUSTER_NAME}" --kubeconfig "${KUBECONFIG_PATH}"
else
  log "no cluster ${KIND_CLUSTER_NAME}"
fi
rm -f "${KUBECONFIG_PATH}"
