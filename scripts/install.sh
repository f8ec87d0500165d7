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

# apt_install WHAT WITHOUT PACKAGE...: the Debian packages with apt-get when root, else a line
# saying what is missing (WHAT it is for, WITHOUT it what happens) and how to add it.
apt_install() {
  local what=$1 without=$2
  shift 2
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing $* ($what)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } \
      >/dev/null || echo "could not install $*; $without"
  else
    echo "$* not installed (needs root and apt-get): $without. To add: sudo apt-get install $*"
  fi
}

engines="flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"
if [ -z "${SPEECHNAS_NO_ENGINES:-}" ] && ! { command -v flite >/dev/null \
    && command -v festival >/dev/null \
    && [ -d /usr/share/festival/voices/us/cmu_us_slt_arctic_hts ]; }; then
  # shellcheck disable=SC2086
  apt_install "the speech engines" "the corpus uses eSpeak NG alone" $engines
fi

if [ "${1:-}" = "--dev" ]; then
  # headless Chromium, which the report's rendering test opens the HTML report in
  command -v chromium >/dev/null || command -v chromium-browser >/dev/null \
    || apt_install "for the report's rendering test" "that test will be skipped" chromium
  # PostgreSQL binaries: the tests of a shared study start a server in a temporary folder
  # (scripts/pg.sh); no running system service is needed
  bash scripts/pg.sh bin >/dev/null 2>&1 \
    || apt_install "for the tests of a study on a database server" \
      "the PostgreSQL tests will be skipped" postgresql
fi

[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
# torch first, from the CPU pin, so no resolver step can reach for a CUDA build.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints/cpu.txt torch
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints/cpu.txt -e ".${extra}"
