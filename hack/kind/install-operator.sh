#!/usr/bin/env bash
# Brings up the offline kind cluster, builds the operator and broker images,
# loads them into the node and installs (or upgrades) the operator with its
# Helm chart, waiting for its Deployment. Shared by `make demo` and
# `make test-e2e`; idempotent. Prints the kubeconfig path on stdout.
#
# Cold, on a machine with no registry access: ~30 min on 2 cores, most of it
# building Kubernetes for the kind node image (16-27 min measured from a fresh
# clone; hack/README.md; more on a busy machine). With
# the node image cached: ~1 min. With the cluster up: seconds.
set -euo pipefail
# Everything below reports on stderr; stdout carries only the kubeconfig path.
exec 3>&1 1>&2
cd "$(dirname "$0")/../.."
ROOT="$PWD"
VERSION="${VERSION:-0.1.0-dev}"
IMG="${IMG:-mqtt-operator/operator:${VERSION}}"
BROKER_IMG="${BROKER_IMG:-mqtt-operator/broker:${VERSION}}"
start=$(date +%s)
step() { echo; echo "== $* (+$(( $(date +%s) - start ))s)"; }

step "kind cluster (cold ~25 min: Docker, kind, Kubernetes, node image; cached: ~1 min; running: seconds)"
hack/kind/cluster-up.sh
export KUBECONFIG="${ROOT}/bin/kind/kubeconfig"
KUBECTL="${ROOT}/bin/tools/kubectl"
[[ -x "${KUBECTL}" ]] || KUBECTL=kubectl

step "metrics-server, for HorizontalPodAutoscalers (cold ~5 min: built from its Go module; cached: seconds)"
KUBECTL="${KUBECTL}" hack/kind/metrics-server.sh

step "operator and broker images (static binaries FROM scratch; ~1 min) loaded into the node"
make -s docker-build IMG="${IMG}" VERSION="${VERSION}"
make -s broker-image-build BROKER_IMG="${BROKER_IMG}" VERSION="${VERSION}"
hack/kind/load-image.sh "${IMG}" "${BROKER_IMG}"

step "CRDs: kubectl apply --server-side (Helm installs crds/ once and never upgrades them)"
"${KUBECTL}" apply --server-side --force-conflicts -f charts/mqtt-operator/crds/ >/dev/null

step "operator and its custom metrics adapter: helm upgrade --install (waits for the Deployments)"
HELM="$(hack/helm.sh)"
# The image ID as a pod annotation: a rebuilt image under the same tag rolls
# the operator; an unchanged one leaves it alone.
image_id="$(docker image inspect -f '{{.Id}}' "${IMG}" | cut -c8-19)"
"${HELM}" upgrade --install mqtt-operator charts/mqtt-operator \
  --namespace mqtt-operator-system --create-namespace --wait --timeout 5m \
  --set "image.repository=${IMG%:*}" --set "image.tag=${IMG##*:}" \
  --set "brokerImage.repository=${BROKER_IMG%:*}" --set "brokerImage.tag=${BROKER_IMG##*:}" \
  --set-string "podAnnotations.mqtt-operator\.io/image-id=${image_id}" \
  --set-string "metricsAdapter.podAnnotations.mqtt-operator\.io/image-id=${image_id}"
step "custom metrics adapter: waiting for its APIService to be Available (seconds)"
"${KUBECTL}" wait --for=condition=Available apiservice/v1beta2.custom.metrics.k8s.io --timeout=2m >/dev/null
"${KUBECTL}" label namespace mqtt-operator-system pod-security.kubernetes.io/enforce=restricted --overwrite >/dev/null

echo "${KUBECONFIG}" >&3
