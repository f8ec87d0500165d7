#!/usr/bin/env bash
# Creates .venv and installs speechnas into it (CPU-only PyTorch).
#   bash scripts/install.sh         runtime only
#   bash scripts/install.sh --dev   plus the test tools
set -euo pipefail
cd "$(dirname "$0")/.."
extra=""
[ "${1:-}" = "--dev" ] && extra="[dev]"
py="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
# torch first, from the CPU pin, so no resolver step can reach for a CUDA build.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints/cpu.txt torch
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints/cpu.txt -e ".${extra}"
