#!/usr/bin/env bash
# `make test`: everything CI runs, in the order that fails fastest.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
step() { echo; echo "== $* ($(( $(date +%s) - start ))s)"; }

step "generated files are up to date"
hack/verify-generated.sh
step "make verify catches a stale file"
hack/verify-selftest.sh
step "lint (gofmt, go vet, staticcheck)"
make -s lint
step "envtest binaries (built from Go modules on first use, ~5-8 min cold)"
KUBEBUILDER_ASSETS="$(hack/envtest-assets.sh)"
export KUBEBUILDER_ASSETS
step "mosquitto clients for the interoperability tests (Debian package, ~30 s when missing)"
# Best effort: without them those tests skip and say why.
hack/ensure-mosquitto.sh >/dev/null || echo "mosquitto not installed; the mosquitto interoperability tests will skip"
step "MQTT client libraries for the conformance tests: MQTT.js (npm) and paho-mqtt (Debian), ~40 s when missing"
hack/ensure-client-libs.sh
export MQTT_CLIENT_LIBS_REQUIRED=1
step "helm (built from its Go module on first use, ~2 min cold) and helm lint"
HELM="$(hack/helm.sh)"
export HELM
make -s helm-lint
step "alerts: promtool check rules and test rules (prometheus and promtool from Debian's prometheus package, ~20 s when missing)"
make -s check-alerts
PROMETHEUS="$(hack/prometheus.sh prometheus)"
export PROMETHEUS MQTT_PROMETHEUS_REQUIRED=1
step "go test (unit, envtest)"
go test -race -count=1 ./...
echo
echo "make test: all passed in $(( $(date +%s) - start ))s"
