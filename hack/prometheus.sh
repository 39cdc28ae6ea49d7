#!/usr/bin/env bash
# Prints the path of Prometheus' `prometheus` or `promtool` (the argument;
# default promtool), taken from Debian's prometheus package without
# installing it: `apt-get download` fetches the .deb (~19 MB, ~20 s) and
# only the two binaries are extracted, so no Prometheus service is set up or
# started. Cached in bin/tools/. Progress goes to stderr.
#   promtool:   `make check-alerts` (rule checks and rule unit tests)
#   prometheus: TestPrometheusScrapesBrokersAndEvaluatesEveryQuery (make test)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
which="${1:-promtool}"
case "${which}" in
  prometheus | promtool) ;;
  *) echo "usage: $0 [prometheus|promtool]" >&2; exit 2 ;;
esac
DIR="${ROOT}/bin/tools"
if [[ -x "${DIR}/prometheus" && -x "${DIR}/promtool" ]]; then
  echo "${DIR}/${which}"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
  echo "prometheus.sh: needs apt-get and dpkg-deb (a Debian-like system) to fetch Debian's prometheus package; or put prometheus and promtool in ${DIR}" >&2
  exit 1
fi
echo "prometheus.sh: fetching Debian's prometheus package for prometheus and promtool (~20 s, once)" >&2
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
# shellcheck source=lib/apt.sh
source "${ROOT}/hack/lib/apt.sh"
# apt-get download needs no root; as root it warns that _apt cannot write here.
(cd "${work}" && apt-get download prometheus >&2 2>/dev/null) || {
  apt_get update -qq >&2
  (cd "${work}" && apt-get download prometheus >&2)
}
dpkg-deb --fsys-tarfile "${work}"/prometheus_*.deb | tar -x -C "${work}" ./usr/bin/prometheus ./usr/bin/promtool
mkdir -p "${DIR}"
mv "${work}/usr/bin/prometheus" "${work}/usr/bin/promtool" "${DIR}/"
"${DIR}/promtool" --version 2>&1 | head -n 1 >&2
echo "${DIR}/${which}"
