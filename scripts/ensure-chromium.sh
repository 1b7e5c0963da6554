#!/usr/bin/env bash
# Make Debian's `chromium` available for the status-page browser test
# (tests/status_page.rs). Installs it with apt-get when missing and possible;
# otherwise says so, and the test skips with a message.
set -uo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "chromium not found: installing Debian's chromium package" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1
fi
if ! command -v chromium >/dev/null 2>&1; then
  echo "warning: chromium could not be installed; the status page browser test will skip" >&2
fi
exit 0
