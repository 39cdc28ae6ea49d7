#!/usr/bin/env bash
# Brings up (idempotently) the one-node kind cluster "${KIND_CLUSTER_NAME}" and waits
# until its node is Ready and CoreDNS runs. Writes the kubeconfig to bin/kind/kubeconfig.
#
#   hack/kind/cluster-up.sh
#   export KUBECONFIG=$PWD/bin/kind/kubeconfig
#
# Cold on a machine without registry access: ~25 min on 2 cores (Docker install,
# building kind, Kubernetes and the node image; see hack/README.md). Once the node image
# is cached, creating the cluster takes ~1 min; with the cluster up, a rerun takes seconds.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"${KIND_DIR}/ensure-docker.sh"
KIND="$("${KIND_DIR}/build-kind.sh")"
mkdir -p "${KIND_STATE}"
node="${KIND_CLUSTER_NAME}-control-plane"

if "${KIND}" get clusters 2>/dev/null | grep -qx "${KIND_CLUSTER_NAME}"; then
  log "cluster ${KIND_CLUSTER_NAME} exists"
  # After a host or dockerd restart the node container may be stopped.
  if [[ "$(docker inspect -f '{{.State.Running}}' "${node}" 2>/dev/null)" != true ]]; then
    log "starting its stopped node container ${node} (~30 s)"
    docker start "${node}" >/dev/null
  fi
else
  image="$("${KIND_DIR}/build-node-image.sh")"
  config="${KIND_STATE}/kind-config.yaml"
  # failCgroupV1: false - recent kubelets refuse cgroup v1 hosts (like our CI machines)
  # unless told otherwise; it changes nothing on a cgroup v2 host.
  cat >"${config}" <<YAML
# Written by hack/kind/cluster-up.sh.
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: ${KIND_CLUSTER_NAME}
networking:
  kubeProxyMode: iptables
nodes:
  - role: control-plane
kubeadmConfigPatches:
  - |
    kind: KubeletConfiguration
    failCgroupV1: false
YAML
  log "creating cluster ${KIND_CLUSTER_NAME} from ${image} (~1 min)"
  "${KIND}" create cluster --name "${KIND_CLUSTER_NAME}" --image "${image}" --config "${config}" \
    --kubeconfig "${KUBECONFIG_PATH}" --wait 0s
fi

"${KIND}" get kubeconfig --name "${KIND_CLUSTER_NAME}" >"${KUBECONFIG_PATH}"
# kubectl inside the node: works the same with the standard and the offline node image,
# and needs no kubectl on the host.
kc() { docker exec "${node}" kubectl --kubeconfig=/etc/kubernetes/admin.conf "$@"; }
log "waiting for the node to be Ready and CoreDNS to run (~30 s after a create or restart)"
deadline=$(($(date +%s) + 300))
# After a (re)start of the node container the API can still show the Ready status of
# before: wait for a heartbeat from the kubelet that started with the container.
started="$(date -d "$(docker inspect -f '{{.State.StartedAt}}' "${node}")" +%s)"
until beat="$(kc get node "${node}" -o jsonpath='{.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}' 2>/dev/null)" \
  && [[ -n "${beat}" ]] && (($(date -d "${beat}" +%s) >= started)); do
  (($(date +%s) < deadline)) || die "no status from the node's kubelet after 5 min"
  sleep 1
done
until kc wait --for=condition=Ready node --all --timeout=10s >/dev/null 2>&1; do
  (($(date +%s) < deadline)) || { kc get nodes -o wide >&2 || true; die "node not Ready after 5 min"; }
done
until kc -n kube-system rollout status deployment/coredns --timeout=10s >/dev/null 2>&1; do
  (($(date +%s) < deadline)) || { kc -n kube-system get pods -o wide >&2 || true; die "CoreDNS not running after 5 min"; }
done
kc get nodes -o wide >&2
# A kubectl matching the cluster: the one built for the offline node image, if any.
if [[ -x "${KIND_CACHE}/bin/kubernetes-v${K8S_VERSION}/kubectl" ]]; then
  ln -sfn "${KIND_CACHE}/bin/kubernetes-v${K8S_VERSION}/kubectl" "${TOOLS_BIN}/kubectl"
  log "kubectl v${K8S_VERSION} for this cluster: ${TOOLS_BIN}/kubectl"
fi
log "cluster ${KIND_CLUSTER_NAME} is ready; use: export KUBECONFIG=${KUBECONFIG_PATH}"
