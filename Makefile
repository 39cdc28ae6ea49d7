# mqtt-operator. `make help` lists the targets.

VERSION ?= 0.1.0-dev
IMG ?= mqtt-operator/operator:$(VERSION)
BROKER_IMG ?= mqtt-operator/broker:$(VERSION)
GO ?= go
CONTROLLER_GEN = $(GO) tool -modfile=hack/tools/go.mod controller-gen
STATICCHECK = $(GO) tool -modfile=hack/tools/go.mod staticcheck
LDFLAGS = -X github.com/mqtt-operator/mqtt-operator/internal/version.Version=$(VERSION)
# Built from Go modules by hack/envtest-assets.sh when missing (cached in bin/k8s).
ENVTEST_ASSETS = $(shell hack/envtest-assets.sh)

.DEFAULT_GOAL := help
SHELL := /usr/bin/env bash -o pipefail

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: ## Generate CRDs and RBAC from the API types and kubebuilder markers (and copy them into the Helm chart).
	$(CONTROLLER_GEN) rbac:roleName=mqtt-operator crd paths="./api/...;./controllers/..." output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	hack/sync-chart.sh

.PHONY: generate
generate: dashboards ## Generate DeepCopy methods and the Grafana dashboard.
	$(CONTROLLER_GEN) object paths="./api/..."

.PHONY: dashboards
dashboards: ## Write the chart's Grafana dashboard from hack/dashboards (Grafana Foundation SDK; ~30 s the first time).
	cd hack/dashboards && go run . ../../charts/mqtt-operator/dashboards/mqtt-brokers.json

.PHONY: verify
verify: ## Fail when generated files (CRDs, RBAC, deepcopy, the chart's copies, go.mod) are stale.
	hack/verify-generated.sh

.PHONY: fmt
fmt: ## Format the Go code.
	$(GO) fmt ./...

.PHONY: vet
vet: ## Run go vet.
	$(GO) vet ./...

.PHONY: lint
lint: ## gofmt check, go vet and staticcheck (the e2e suite too).
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(STATICCHECK) ./...
	$(GO) vet -tags e2e ./test/e2e/
	$(STATICCHECK) -tags e2e ./test/e2e/

.PHONY: test
test: ## Everything CI runs: verify, lint, unit tests, envtest specs (builds envtest binaries on first use).
	hack/test.sh

FUZZTIME ?= 1m
.PHONY: fuzz
# package:target, one per fuzz target.
FUZZ_TARGETS = broker-image/internal/broker:FuzzRawStream broker-image/internal/broker:FuzzAfterConnect \
	broker-image/internal/store:FuzzStoreRoundTrip internal/brokerconfig:FuzzConfigParse internal/brokerconfig:FuzzBundleParse \
	broker-image/internal/cluster:FuzzSubjectRoundTrip
fuzz: ## Run each fuzz target for FUZZTIME (default 1m; issues ask for 10m per target before a release).
	for pt in $(FUZZ_TARGETS); do \
	  $(GO) test -run '^$$' -fuzz "^$${pt#*:}$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 10s -parallel 1 ./$${pt%%:*} || exit 1; done

.PHONY: test-e2e
test-e2e: ## The e2e suite on the offline kind cluster, operator installed by its Helm chart (needs Docker; see hack/README.md).
	hack/e2e.sh

.PHONY: test-unit
test-unit: ## Unit tests only (no API server).
	$(GO) test ./internal/... ./api/...

.PHONY: envtest-assets
envtest-assets: ## Build (once) the kube-apiserver and etcd that envtest runs.
	@hack/envtest-assets.sh

##@ Build

.PHONY: build
build: ## Build the operator binary into bin/manager.
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/manager ./cmd

.PHONY: run
run: manifests ## Run the operator against the cluster of the current kubeconfig.
	$(GO) run -ldflags "$(LDFLAGS)" ./cmd --broker-image=$(BROKER_IMG)

.PHONY: demo
demo: ## kind cluster + operator (Helm) + samples + an MQTT publish/subscribe through the broker. Idempotent.
	hack/demo.sh

.PHONY: demo-down
demo-down: ## Delete the demo's kind cluster.
	hack/kind/cluster-down.sh

.PHONY: dev
dev: ## Throwaway local control plane + operator + samples; leaves bin/dev/kubeconfig.
	KUBEBUILDER_ASSETS=$(ENVTEST_ASSETS) $(GO) run ./test/dev

.PHONY: docker-build
docker-build: ## Build the operator image (FROM scratch, no registry needed).
	hack/docker-build-operator.sh $(IMG) "$(LDFLAGS)"

.PHONY: broker
broker: ## Build the broker binary into bin/broker (see broker-image/README.md).
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/broker ./broker-image

.PHONY: kubectl-mqtt
kubectl-mqtt: ## Build the kubectl plugin into bin/kubectl-mqtt (copy it onto your PATH: kubectl mqtt).
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/kubectl-mqtt ./cmd/kubectl-mqtt

.PHONY: broker-image-build
broker-image-build: ## Build the broker image $(BROKER_IMG) (FROM scratch, no registry needed).
	hack/docker-build-broker.sh $(BROKER_IMG)

##@ Deployment

.PHONY: install
install: manifests ## Install the CRDs into the cluster of the current kubeconfig.
	kubectl apply --server-side -f config/crd/bases

.PHONY: uninstall
uninstall: ## Remove the CRDs (and with them every MQTTBroker, MQTTUser and TopicACL).
	kubectl delete --ignore-not-found -f config/crd/bases

.PHONY: helm-lint
helm-lint: ## helm lint the chart (helm is built from its Go module on first use, ~2 min).
	HELM=$$(hack/helm.sh) && $$HELM lint --strict charts/mqtt-operator && \
	  $$HELM lint --strict charts/mqtt-operator --set 'watchNamespaces={tenant-a,tenant-b}' --set metrics.serviceMonitor.enabled=true --set alerts.enabled=true --set dashboards.enabled=true

.PHONY: check-alerts
check-alerts: ## promtool check rules and promtool test rules on the chart's alerts (promtool from Debian's prometheus package, ~20 s once).
	PROMTOOL=$$(hack/prometheus.sh promtool) && $$PROMTOOL check rules charts/mqtt-operator/files/alerts.yaml && \
	  $$PROMTOOL test rules charts/mqtt-operator/files/alerts_test.yaml

.PHONY: build-installer
build-installer: manifests ## Render the chart into dist/install.yaml (namespace, CRDs, RBAC, operator) for kubectl apply.
	hack/build-installer.sh dist/install.yaml $(IMG) $(BROKER_IMG)

.PHONY: deploy
deploy: manifests ## Deploy the operator with kustomize (kubectl -k) into mqtt-operator-system.
	kubectl apply --server-side -k config/default

.PHONY: undeploy
undeploy: ## Remove what deploy created.
	kubectl delete --ignore-not-found -k config/default

##@ Benchmarks

.PHONY: bench-broker
bench-broker: broker ## Our broker vs plain mochi vs mosquitto on loopback: throughput, ACL size, idle memory, auth storm.
	MOSQUITTO=$$(hack/ensure-mosquitto.sh) && $(GO) run ./test/bench/broker --broker=bin/broker --mosquitto=$$MOSQUITTO

.PHONY: bench-cluster
bench-cluster: broker ## A 3-pod clustered broker on loopback: cross-pod vs same-pod throughput, latency, takeover, QoS 1 loss under a flood to a slowed pod, retained on a new pod, memory; name=value lines.
	$(GO) run ./test/bench/broker --broker=bin/broker --phases=cluster

.PHONY: bench-scale
bench-scale: broker ## Elastic scaling on a 3-pod loopback cluster: a scale-in's session handover (10,000 sessions), a scale-out's rebalance, and per-user quota cost; name=value lines.
	$(GO) run ./test/bench/broker --broker=bin/broker --phases=cluster,quotas --cluster-steps=handover,rebalance

.PHONY: bench-overload
bench-overload: broker ## Our broker under misbehaving clients: stuck subscribers, connections that never log in, an unknown-username login flood; name=value lines.
	$(GO) run ./test/bench/overload --broker=bin/broker

.PHONY: bench-acl
bench-acl: build ## Users and ACLs reaching live brokers: propagation and revocation latency, 10,000 users (envtest + local pods).
	KUBEBUILDER_ASSETS=$(ENVTEST_ASSETS) $(GO) run ./test/bench/acl --manager=bin/manager

.PHONY: bench-operator
bench-operator: build ## 200 brokers in envtest: reconcile latency, operator RSS, reconciles at rest.
	KUBEBUILDER_ASSETS=$(ENVTEST_ASSETS) $(GO) run ./test/bench/operator --manager=bin/manager

.PHONY: bench-tls
bench-tls: broker ## TLS handshakes per second (connect + CONNACK over TLS), ours vs mosquitto, same certificate.
	MOSQUITTO=$$(hack/ensure-mosquitto.sh) && $(GO) run ./test/bench/tls --broker=bin/broker --mosquitto=$$MOSQUITTO
