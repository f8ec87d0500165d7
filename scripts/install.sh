#!/usr/bin/env bash
# Creates .venv and installs speechnas into it (CPU-only PyTorch), and the optional speech
# engines Flite and Festival from the Debian archive where it can.
#   bash scripts/install.sh         runtime, with the on-device runtimes (sherpa-onnx, coremltools)
#   bash scripts/install.sh --dev   plus the test tools
# SPEECHNAS_NO_ENGINES=1 skips the engines; the built-in corpus then uses eSpeak NG alone.
set -euo pipefail
cd "$(dirname "$0")/.."
extra="[deploy]"
[ "${1:-}" = "--dev" ] && extra="[dev]"  # includes [deploy]
py="${PYTHON:-python3}"

engines="flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"
if [ -n "${SPEECHNAS_NO_ENGINES:-}" ]; then
  :
elif command -v flite >/dev/null && command -v festival >/dev/null \
    && [ -d /usr/share/festival/voices/us/cmu_us_slt_arctic_hts ]; then
  :
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing the speech engines: $engines"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $engines; } \
    >/dev/null || echo "could not install the speech engines; the corpus uses eSpeak NG alone"
else
  echo "Flite and Festival are not installed (needs root and apt-get); the corpus uses eSpeak NG" \
    "alone. To add them: sudo apt-get install $engines"
fi

# --dev: headless Chromium, which the report's rendering test opens the HTML report in.
if [ "${1:-}" = "--dev" ]; then
  if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
    :
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing chromium (for the report's rendering test)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
      >/dev/null || echo "could not install chromium; the report's rendering test will be skipped"
  else
    echo "chromium is not installed (needs root and apt-get); the report's rendering test will" \
      "be skipped. To add it: sudo apt-get install chromium"
  fi
fi

# --dev: a PostgreSQL server, which the tests of the shared study start in a temporary folder
# (scripts/pg.sh); only the binaries are needed, no running system service.
if [ "${1:-}" = "--dev" ]; then
  if bash scripts/pg.sh bin >/dev/null 2>&1; then
    :
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing postgresql (for the tests of a study on a database server)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } \
      >/dev/null || echo "could not install postgresql; the PostgreSQL tests will be skipped"
  else
    echo "PostgreSQL is not installed (needs root and apt-get); the PostgreSQL tests will be" \
      "skipped. To add it: sudo apt-get install postgresql"
  fi
fi

[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
# torch first, from the CPU pin, so no resolver step can reach for a CUDA build.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints/cpu.txt torch
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints/cpu.txt -e ".${extra}"
