#!/usr/bin/env bash
# Set up, then run the main job: embedded broker + consumer, replay of ../shared/data, lake, report.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. .venv/bin/activate
exec flywheel demo "$@"
