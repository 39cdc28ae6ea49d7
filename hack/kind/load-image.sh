#!/usr/bin/env bash
# Loads local Docker images into the kind cluster's node, since the node cannot pull:
#   hack/kind/load-image.sh mqtt-operator/operator:0.1.0-dev [IMAGE...]
# Pods must then use imagePullPolicy IfNotPresent or Never. A few seconds per image.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($#)) || die "usage: $0 IMAGE..."
KIND="$("${KIND_DIR}/build-kind.sh")"
log "loading $* into cluster ${KIND_CLUSTER_NAME}"
"${KIND}" load docker-image --name "${KIND_CLUSTER_NAME}" "$@"
