#!/usr/bin/env bash
# `make test-e2e`: the e2e suite (test/e2e, build tag e2e) on the offline kind
# cluster, with the operator installed by its Helm chart from images built
# here. The suite's last spec uninstalls the operator; a rerun installs it
# again. Cold: the kind cluster and node image first (~13 min on 2 cores,
# cached); warm: ~100 s, mostly broker pods starting and draining.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
KUBECONFIG="$(hack/kind/install-operator.sh)"
KUBECTL="${PWD}/bin/tools/kubectl"
[[ -x "${KUBECTL}" ]] || KUBECTL=kubectl
HELM="$(hack/helm.sh)"
export KUBECONFIG KUBECTL HELM
echo
echo "== go test -tags e2e ./test/e2e (+$(( $(date +%s) - start ))s)"
go test -tags e2e -count=1 -timeout 30m ./test/e2e -v -ginkgo.v "$@"
echo
echo "make test-e2e: all passed in $(( $(date +%s) - start ))s"
