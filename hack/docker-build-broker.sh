#!/usr/bin/env bash
# Builds the broker image without pulling anything: a static binary compiled
# here, copied into an image FROM scratch. Usage: docker-build-broker.sh IMAGE
set -euo pipefail
cd "$(dirname "$0")/.."
image="${1:?image name}"
ctx=bin/broker-image
mkdir -p "${ctx}"
echo "docker-build-broker: compiling a static broker binary"
CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w" -o "${ctx}/broker" ./broker-image
echo "docker-build-broker: building ${image} (FROM scratch, $(du -h "${ctx}/broker" | cut -f1) binary)"
docker build -q -t "${image}" -f broker-image/Dockerfile "${ctx}"
