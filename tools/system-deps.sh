#!/usr/bin/env bash
# The Debian packages the test suites need beyond pip: installed when missing and permitted.
# Called by .ci/run (with --required: failing to install is an error) and by `nox -s setup`,
# the first session of the README's `pip install nox && nox` (a missing package is reported,
# its suites skip with the reason, and the run's final summary lists them).
#
#   tools/system-deps.sh [--required]     WREN_NO_SYSTEM_INSTALL=1 only reports
set -uo pipefail
required=0; [ "${1:-}" = "--required" ] && required=1
DEB_PACKAGES=(
  docker.io debootstrap   # wren-backend-docker (and the container tests): a private dockerd and the test base image
  rabbitmq-server         # wren-core[rabbitmq]: a private broker node (Erlang included)
)
if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: not a Debian/Ubuntu machine; install ${DEB_PACKAGES[*]} yourself or their suites skip"
  exit $((required))
fi
missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]} == 0)); then
  echo "system-deps: ${DEB_PACKAGES[*]} installed"
  exit 0
fi
why=""
if [ -n "${WREN_NO_SYSTEM_INSTALL:-}" ]; then
  why="WREN_NO_SYSTEM_INSTALL is set"
elif [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  why="not root and no password-less sudo"
fi
if [ -n "$why" ]; then
  echo "system-deps: NOT installing ${missing[*]} ($why); their suites will be skipped (see the summary at the end)."
  echo "system-deps: to install them: sudo apt-get install -y ${missing[*]}"
  exit $((required))
fi
echo "system-deps: installing ${missing[*]} (apt-get, one update)"
export DEBIAN_FRONTEND=noninteractive
if $SUDO apt-get update -qq -o DPkg::Lock::Timeout=300 >/dev/null \
   && $SUDO apt-get install -y -qq -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null; then
  echo "system-deps: installed ${missing[*]}"
  exit 0
fi
echo "system-deps: apt-get could not install ${missing[*]}; their suites will be skipped (see the summary at the end)."
exit $((required))
