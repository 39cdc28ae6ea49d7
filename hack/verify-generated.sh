#!/usr/bin/env bash
# Fails when a generated file (CRDs, RBAC, deepcopy, the Grafana dashboard,
# go.mod/go.sum) differs from what `make manifests generate` and `go mod tidy`
# produce now. It regenerates in
# place, so after a failure the tree holds the fresh files: review and commit.
set -euo pipefail
cd "$(dirname "$0")/.."

generated=(config/crd/bases config/rbac/role.yaml api/v1alpha1/zz_generated.deepcopy.go
  charts/mqtt-operator/crds charts/mqtt-operator/files/rules.yaml charts/mqtt-operator/dashboards
  go.mod go.sum)
before="$(mktemp -d)"
trap 'rm -rf "${before}"' EXIT
for f in "${generated[@]}"; do
  mkdir -p "${before}/$(dirname "$f")"
  [[ -e "$f" ]] && cp -r "$f" "${before}/$f"
done

# Tidy first: controller-gen cannot load packages while go.mod is untidy, and
# would fail with its usage text instead of showing the stale go.mod.
go mod tidy
make -s manifests generate >/dev/null

stale=0
for f in "${generated[@]}"; do
  if ! diff -ruN "${before}/$f" "$f"; then
    stale=1
  fi
done
if (( stale )); then
  echo "verify: generated files were stale (diff above); they are now regenerated: review and commit them" >&2
  exit 1
fi
echo "verify: generated files are up to date"
