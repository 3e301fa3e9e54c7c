#!/usr/bin/env bash
# Creates .venv with pinned versions (constraints.txt) and installs hfx into it. Safe to re-run.
# torch goes in first and exactly: torch==2.13.0 resolves to a CPU build; a looser spec pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -c constraints.txt -e ".[loggers,sweeps,plots,dev]"
echo "hfx installed in .venv ($(.venv/bin/hfx --version))"
