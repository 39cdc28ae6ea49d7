#!/usr/bin/env bash
# `make test-e2e`: the e2e suite (test/e2e, build tag e2e) on the offline kind
# cluster, with the operator installed by its Helm chart from images built
# here. The suite's last spec uninstalls the operator (it proves a clean
# uninstall); when the operator was installed before (a `make demo` on the
# same cluster), this script installs it again at the end, so the demo is
# managed as before. Cold: the kind cluster and node image first (~25 min on
# 2 cores, cached); warm: ~100 s, mostly broker pods starting and draining.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
HELM="$(hack/helm.sh)"
# Was the operator already installed (by make demo)? Then put it back after
# the suite uninstalls it, whatever the outcome. A stopped cluster (Docker or
# the node container down, as after a reboot) is brought back first, so the
# check sees what the demo installed.
hack/kind/cluster-up.sh
if [[ -f bin/kind/kubeconfig ]] &&
  KUBECONFIG="${PWD}/bin/kind/kubeconfig" "${HELM}" status mqtt-operator --namespace mqtt-operator-system >/dev/null 2>&1; then
  echo "make test-e2e: the operator installed on this cluster (make demo) is uninstalled by the suite's last spec and installed again at the end"
  restore() {
    local rc=$?
    echo
    echo "== installing the operator again for the demo on this cluster (~1 min)"
    hack/kind/install-operator.sh >/dev/null || rc=1
    exit "${rc}"
  }
  trap restore EXIT
fi
KUBECONFIG="$(hack/kind/install-operator.sh)"
KUBECTL="${PWD}/bin/tools/kubectl"
[[ -x "${KUBECTL}" ]] || KUBECTL=kubectl
export KUBECONFIG KUBECTL HELM
echo
echo "== go test -tags e2e ./test/e2e (+$(( $(date +%s) - start ))s)"
go test -tags e2e -count=1 -timeout 30m ./test/e2e -v -ginkgo.v "$@"
echo
echo "make test-e2e: all passed in $(( $(date +%s) - start ))s"
