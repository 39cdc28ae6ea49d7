#!/usr/bin/env bash
# Prints the path of promtool (Prometheus' rule checker and rule unit test
# runner), taken from Debian's prometheus package without installing it:
# `apt-get download` fetches the .deb (~19 MB, ~20 s) and only
# usr/bin/promtool is extracted, so no Prometheus service is set up or
# started. Cached in bin/tools/promtool. Progress goes to stderr.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${ROOT}/bin/tools/promtool"
if [[ -x "${BIN}" ]]; then
  echo "${BIN}"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
  echo "promtool: needs apt-get and dpkg-deb (a Debian-like system) to fetch Debian's prometheus package; or put a promtool at ${BIN}" >&2
  exit 1
fi
echo "promtool: fetching Debian's prometheus package for its promtool (~20 s, once)" >&2
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
# shellcheck source=lib/apt.sh
source "${ROOT}/hack/lib/apt.sh"
(cd "${work}" && apt-get download prometheus >&2) || {
  apt_get update -qq >&2
  (cd "${work}" && apt-get download prometheus >&2)
}
dpkg-deb --fsys-tarfile "${work}"/prometheus_*.deb | tar -x -C "${work}" ./usr/bin/promtool
mkdir -p "$(dirname "${BIN}")"
mv "${work}/usr/bin/promtool" "${BIN}"
"${BIN}" --version >&2
echo "${BIN}"
