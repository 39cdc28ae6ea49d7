#!/usr/bin/env bash
# `make demo`: a kind cluster, the operator installed with its Helm chart, the
# samples (a broker, two users, their ACLs) applied, and an MQTT publish and
# subscribe through the broker with the credentials the operator generated.
# Idempotent: a rerun reuses what is there and rolls the operator only when
# its image changed. `make demo-down` deletes the cluster.
#
# Cold, on a machine with no registry access: ~30 min on 2 cores, most of it
# building Kubernetes for the kind node image (16-27 min measured from a fresh
# clone; hack/README.md; more on a busy machine). With
# the node image cached: under a minute. With the cluster up: seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
NS="${DEMO_NAMESPACE:-mqtt-demo}"
PORT="${DEMO_PORT:-18830}"
start=$(date +%s)
step() { echo; echo "== $* (+$(( $(date +%s) - start ))s)"; }
echo "make demo: ~30 min the first time on 2 cores (Kubernetes and a kind node image are built here), ~1 min once cached, seconds with the cluster up"

KUBECONFIG="$(hack/kind/install-operator.sh)"
export KUBECONFIG
KUBECTL="${ROOT}/bin/tools/kubectl"
[[ -x "${KUBECTL}" ]] || KUBECTL=kubectl
k() { "${KUBECTL}" "$@"; }

step "samples into namespace ${NS}: MQTTBroker telemetry, MQTTUsers sensor-gateway and dashboard, their TopicACLs"
k create namespace "${NS}" --dry-run=client -o yaml | k apply -f - >/dev/null
k label namespace "${NS}" pod-security.kubernetes.io/enforce=restricted --overwrite >/dev/null
k apply --server-side -n "${NS}" -k config/samples
k -n "${NS}" wait mqttbroker/telemetry --for=condition=Ready --timeout=5m
k -n "${NS}" wait mqttuser --all --for=condition=Ready --timeout=2m
k -n "${NS}" wait topicacl --all --for=condition=Ready --timeout=2m
k -n "${NS}" get mqtt

step "publish and subscribe through the broker (kubectl port-forward to Service telemetry, mosquitto clients)"
hack/ensure-mosquitto.sh >/dev/null
secret() { k -n "${NS}" get secret "$1" -o "jsonpath={.data.$2}" | base64 -d; }
gw_user="$(secret sensor-gateway-mqtt username)"; gw_pass="$(secret sensor-gateway-mqtt password)"
dash_user="$(secret dashboard-mqtt username)"; dash_pass="$(secret dashboard-mqtt password)"
pf_log="$(mktemp)"
"${KUBECTL}" -n "${NS}" port-forward svc/telemetry "${PORT}:1883" >"${pf_log}" 2>&1 &
pf=$!
trap 'kill ${pf} 2>/dev/null || true; rm -f "${pf_log}"' EXIT
for _ in $(seq 50); do grep -q "Forwarding from" "${pf_log}" && break; sleep 0.2; done
grep -q "Forwarding from" "${pf_log}" || { cat "${pf_log}" >&2; echo "demo: port-forward did not start" >&2; exit 1; }

received="$(mktemp)"
mosquitto_sub -h 127.0.0.1 -p "${PORT}" -V mqttv5 -i demo-dashboard -u "${dash_user}" -P "${dash_pass}" \
  -t 'telemetry/#' -C 1 -W 20 -v >"${received}" &
sub=$!
reading="temperature=21.5 at $(date -u +%H:%M:%S)"
# Publish until the subscription is in place (it is within a second); -C 1
# ends the subscriber at the first message.
for _ in $(seq 40); do
  mosquitto_pub -h 127.0.0.1 -p "${PORT}" -V mqttv5 -i demo-gateway -u "${gw_user}" -P "${gw_pass}" \
    -t "telemetry/${gw_user}/room-1" -m "${reading}" -q 1
  [[ -s "${received}" ]] && break
  sleep 0.5
done
wait "${sub}" || true
if [[ "$(cat "${received}")" != "telemetry/${gw_user}/room-1 ${reading}" ]]; then
  echo "demo: the dashboard did not receive the gateway's reading (got: '$(cat "${received}")')" >&2
  exit 1
fi
echo "dashboard received: $(cat "${received}")"
# The gateway may publish only under telemetry/<its name>/: the broker refuses the rest.
# mosquitto_pub exits 0 either way; it reports the PUBACK's reason code.
out="$(mosquitto_pub -h 127.0.0.1 -p "${PORT}" -V mqttv5 -i demo-spoof -u "${gw_user}" -P "${gw_pass}" \
  -t "telemetry/someone-else/room-1" -m spoofed -q 1 2>&1 || true)"
if [[ "${out}" != *"Not authorized"* ]]; then
  echo "demo: the broker accepted a publish the ACL forbids (mosquitto_pub said: '${out}')" >&2
  exit 1
fi
echo "gateway's publish to telemetry/someone-else/room-1 refused: ${out}"
rm -f "${received}"

cat <<EOF

== demo up in $(( $(date +%s) - start ))s. Connect yourself:
  export KUBECONFIG=${KUBECONFIG}
  ${KUBECTL} -n ${NS} get mqtt                          # brokers, users, ACLs and their status
  ${KUBECTL} -n ${NS} port-forward svc/telemetry ${PORT}:1883 &
  mosquitto_sub -h 127.0.0.1 -p ${PORT} -u dashboard -P "\$(${KUBECTL} -n ${NS} get secret dashboard-mqtt -o jsonpath='{.data.password}' | base64 -d)" -t 'telemetry/#' -v
  In the cluster, applications read host, port, username, password and uri from Secret sensor-gateway-mqtt.
  make demo-down                                       # delete the cluster
EOF
