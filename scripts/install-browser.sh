#!/usr/bin/env bash
# Installs the browser that tests/test_browser.py drives: Debian's Chromium (/usr/bin/chromium) and ChromeDriver.
# Idempotent: does nothing when /usr/bin/chromium is already there. It only uses the distribution's packages
# (never `playwright install` or any other browser download).
# Where it cannot install (no apt-get, not root and no sudo), it fails under CI=true and only warns otherwise:
# the browser tests then skip locally, and fail in CI.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
  echo "install-browser: $("$CHROMIUM" --version 2>/dev/null || echo chromium) is already installed"
  exit 0
fi

cannot() {
  case "${CI:-}" in
    1|true|TRUE|True|yes) echo "install-browser: $1" >&2; exit 1 ;;
    *) echo "install-browser: $1; the browser tests will be skipped" >&2; exit 0 ;;
  esac
}

command -v apt-get >/dev/null 2>&1 || cannot "no apt-get here; install Chromium so that $CHROMIUM exists"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    cannot "installing Chromium needs root: sudo apt-get install -y chromium chromium-driver"
  fi
fi

export DEBIAN_FRONTEND=noninteractive
started=$(date +%s)
$SUDO apt-get update -q
$SUDO apt-get install -y -q chromium chromium-driver
echo "install-browser: $("$CHROMIUM" --version 2>/dev/null) installed in $(( $(date +%s) - started )) s"
