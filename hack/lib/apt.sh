# shellcheck shell=bash
# apt_get ARGS...: apt-get that waits (up to 10 min) for the dpkg and apt
# locks instead of failing at once when another process holds them (an
# unattended upgrade on a fresh machine, a second make target). Runs as root
# (sudo when needed); says on stderr when it has to wait. Source this file.
apt_get() {
  local holder
  holder="$(pgrep -a -x 'apt|apt-get|dpkg|unattended-upgr|unattended-upgrade' 2>/dev/null | head -n 1 || true)"
  if [[ -n "${holder}" ]]; then
    echo "apt: another package manager is running (${holder}); waiting up to 10 min for its lock" >&2
  fi
  local cmd=(apt-get -o DPkg::Lock::Timeout=600 "$@")
  if [[ "$(id -u)" != 0 ]]; then cmd=(sudo DEBIAN_FRONTEND="${DEBIAN_FRONTEND:-noninteractive}" "${cmd[@]}"); fi
  DEBIAN_FRONTEND="${DEBIAN_FRONTEND:-noninteractive}" "${cmd[@]}"
}
