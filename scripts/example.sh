#!/usr/bin/env bash
# Runs joulecap's built-in example: sets up a virtual environment with joulecap and PyTorch, then measures a
# small PyTorch training run (per-epoch windows and the asynchronous sampler) and writes the CSV files.
# On a machine with an NVIDIA GPU it measures the GPU; without one it says so and measures the CPU.
# Usage: bash scripts/example.sh [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${JOULECAP_VENV:-.venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
"$venv/bin/python" -c 'import torch' 2>/dev/null || "$venv/bin/python" -m pip install -q torch==2.13.0
"$venv/bin/python" -m pip install -q .
exec "$venv/bin/python" -m joulecap.example "$@"
