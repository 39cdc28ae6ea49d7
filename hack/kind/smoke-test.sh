#!/usr/bin/env bash
# Proves the running kind cluster does what our e2e tests need, with nothing pulled:
# a FROM-scratch image built here and loaded with load-image.sh runs
# (imagePullPolicy: Never), a ClusterIP Service answers by its DNS name from another
# pod, and a PVC is bound and writable. ~1 min. Cleans up after itself.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGE="mqtt-operator.local/kind-smoke:1"
NS="kind-smoke"
node="${KIND_CLUSTER_NAME}-control-plane"
kc() { docker exec -i "${node}" kubectl --kubeconfig=/etc/kubernetes/admin.conf "$@"; }

if ! docker image inspect "${IMAGE}" >/dev/null 2>&1; then
  log "building ${IMAGE}: one static Go binary, FROM scratch (~10 s)"
  tmp="$(mktemp -d)"
  trap 'rm -rf "${tmp}"' EXIT
  cat >"${tmp}/main.go" <<'GO'
// smoke serves a page naming its pod and what it wrote to its volume ("serve"), or
// fetches a URL until it answers ("get URL").
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) > 2 && os.Args[1] == "get" {
		deadline := time.Now().Add(60 * time.Second)
		for {
			resp, err := http.Get(os.Args[2])
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				fmt.Printf("%s -> %s: %s", os.Args[2], resp.Status, body)
				if resp.StatusCode == http.StatusOK {
					return
				}
			} else {
				fmt.Println(err)
			}
			if time.Now().After(deadline) {
				os.Exit(1)
			}
			time.Sleep(time.Second)
		}
	}
	host, _ := os.Hostname()
	stamp := "written by " + host + " at " + time.Now().UTC().Format(time.RFC3339)
	if err := os.WriteFile("/data/stamp", []byte(stamp), 0o644); err != nil {
		fmt.Println("writing /data/stamp:", err)
		os.Exit(1)
	}
	http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		data, err := os.ReadFile("/data/stamp")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "hello from %s; volume says: %s\n", host, data)
	})
	fmt.Println(http.ListenAndServe(":8080", nil))
	os.Exit(1)
}
GO
  printf 'module smoke\n\ngo 1.22\n' >"${tmp}/go.mod"
  (cd "${tmp}" && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o smoke .)
  printf 'FROM scratch\nCOPY smoke /smoke\nENTRYPOINT ["/smoke"]\n' >"${tmp}/Dockerfile"
  docker_build "${tmp}/build.log" -t "${IMAGE}" "${tmp}"
fi
"${KIND_DIR}/load-image.sh" "${IMAGE}"

log "deploying server (Deployment + ClusterIP Service + PVC) and a client pod in namespace ${NS}"
kc delete namespace "${NS}" --ignore-not-found --wait=true >/dev/null
kc apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: ${NS}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: ${NS}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 10Mi}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: smoke, namespace: ${NS}}
spec:
  selector: {matchLabels: {app: smoke}}
  template:
    metadata: {labels: {app: smoke}}
    spec:
      containers:
        - name: smoke
          image: ${IMAGE}
          imagePullPolicy: Never
          args: [serve]
          ports: [{containerPort: 8080}]
          readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
          volumeMounts: [{name: data, mountPath: /data}]
      volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]
---
apiVersion: v1
kind: Service
metadata: {name: smoke, namespace: ${NS}}
spec:
  type: ClusterIP
  selector: {app: smoke}
  ports: [{port: 80, targetPort: 8080}]
YAML
kc -n "${NS}" wait --for=jsonpath='{.status.phase}'=Bound pvc/data --timeout=120s >/dev/null
log "PVC bound: $(kc -n "${NS}" get pvc data -o jsonpath='{.spec.volumeName} ({.spec.storageClassName})')"
kc -n "${NS}" rollout status deployment/smoke --timeout=180s >/dev/null
log "server running: $(kc -n "${NS}" get pods -l app=smoke -o jsonpath='{.items[0].metadata.name} on {.items[0].status.podIP}')"

kc apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: ${NS}}
spec:
  restartPolicy: Never
  containers:
    - name: client
      image: ${IMAGE}
      imagePullPolicy: Never
      args: [get, "http://smoke.${NS}.svc.cluster.local/"]
YAML
kc -n "${NS}" wait --for=jsonpath='{.status.phase}'=Succeeded pod/client --timeout=120s >/dev/null \
  || { kc -n "${NS}" logs client >&2 || true; die "client pod could not reach the Service by its DNS name"; }
log "client pod: $(kc -n "${NS}" logs client | tail -n 1)"
kc delete namespace "${NS}" --wait=false >/dev/null
log "smoke test passed"
