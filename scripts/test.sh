#!/usr/bin/env bash
# Set up, then run the whole test suite (real broker, real catalog, real data in ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. .venv/bin/activate
exec python -m pytest -p no:cacheprovider "$@"
