# The operator image. Built by hack/docker-build-operator.sh from a binary
# compiled on the host (CGO_ENABLED=0), so it needs no base image from a
# registry: the image holds the static binaries and nothing else: the
# operator, and the custom metrics adapter the chart runs beside it.
FROM scratch
COPY bin/manager-linux /manager
COPY bin/metrics-adapter-linux /metrics-adapter
USER 65532:65532
ENTRYPOINT ["/manager"]
