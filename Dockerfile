# The operator image. Built by hack/docker-build-operator.sh from a binary
# compiled on the host (CGO_ENABLED=0), so it needs no base image from a
# registry: the image holds the static binary and nothing else.
FROM scratch
COPY bin/manager-linux /manager
USER 65532:65532
ENTRYPOINT ["/manager"]
