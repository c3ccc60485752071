#!/usr/bin/env bash
# Set up, then run the whole test suite (real broker, real catalog, real data in ../shared/data,
# the dashboard in a real browser: Debian's chromium, installed here when missing and run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  else
    echo "chromium is missing: sudo apt-get install -y chromium (the browser test needs it)" >&2
  fi
fi
. .venv/bin/activate
exec python -m pytest -p no:cacheprovider "$@"
