#!/usr/bin/env bash
# Creates .venv and installs the project with its pinned stack. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
# open-flamingo 2.0.1 pins torch==2.0.1 and an old sentencepiece; its real needs are in pyproject.
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -m pip install -q --no-deps open-flamingo==2.0.1
# `dvc plots show` page with vega/vega-lite/vega-embed inlined (npm, pinned + sha512-checked), so
# the charts draw offline; without npm it writes a page that loads them from the internet instead.
.venv/bin/python scripts/build_plots_template.py --allow-cdn
.venv/bin/python -c "import torch, open_flamingo, dvc; print('setup ok: torch', torch.__version__)"
