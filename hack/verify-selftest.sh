#!/usr/bin/env bash
# Proves `make verify` fails on a stale generated file: in a scratch copy of the
# tracked tree, make a CRD stale by changing an API doc comment, and expect
# verify to refuse it. Runs as part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch="$(mktemp -d)"
trap 'rm -rf "${scratch}"' EXIT
git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} cp --parents {} "${scratch}/"
cd "${scratch}"
git init -q
sed -i 's|// replicas is the number of broker pods.|// replicas is the number of broker pods (stale test).|' api/v1alpha1/mqttbroker_types.go
if out="$(hack/verify-generated.sh 2>&1)"; then
  echo "verify-selftest: make verify passed on a stale CRD; it must fail" >&2
  exit 1
fi
if ! grep -q "^+.*replicas is the number of broker pods (stale test)" <<<"${out}"; then
  echo "verify-selftest: make verify failed, but not for the stale CRD:" >&2
  echo "${out}" >&2
  exit 1
fi
# verify regenerated everything above; now edit the chart's copy by hand.
sed -i 's|^  group: broker.mqtt-operator.io|  group: broker.mqtt-operator.io # edited by hand|' charts/mqtt-operator/crds/broker.mqtt-operator.io_mqttusers.yaml
if out="$(hack/verify-generated.sh 2>&1)"; then
  echo "verify-selftest: make verify passed on a hand-edited chart CRD; it must fail" >&2
  exit 1
fi
if ! grep -q "^-.*edited by hand" <<<"${out}"; then
  echo "verify-selftest: make verify failed, but not for the chart's CRD:" >&2
  echo "${out}" >&2
  exit 1
fi
# And the dashboard, edited by hand instead of in hack/dashboards.
sed -i 's|"title": "MQTT brokers"|"title": "MQTT brokers, edited by hand"|' charts/mqtt-operator/dashboards/mqtt-brokers.json
if out="$(hack/verify-generated.sh 2>&1)"; then
  echo "verify-selftest: make verify passed on a hand-edited dashboard; it must fail" >&2
  exit 1
fi
if ! grep -q "^-.*edited by hand" <<<"${out}"; then
  echo "verify-selftest: make verify failed, but not for the dashboard:" >&2
  echo "${out}" >&2
  exit 1
fi
echo "verify-selftest: make verify fails on a stale CRD, a stale chart copy and a hand-edited dashboard, as it must"
