#!/usr/bin/env bash
# What `make bench` and `make soak` need beyond `make deps`: matplotlib in the
# project's .venv (never system-wide), for the plots (scripts/bench-plot.py),
# and Debian's bash-static, for one K=1000 run. Not part of `make test`. Safe
# to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

MATPLOTLIB_VERSION=3.11.2

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import matplotlib" >/dev/null 2>&1; then
  echo "bench-deps: installing matplotlib ${MATPLOTLIB_VERSION} into .venv"
  .venv/bin/pip install -q --disable-pip-version-check "matplotlib==${MATPLOTLIB_VERSION}"
fi
# Debian's statically linked bash, which one K=1000 run uses (GDTS_SHELL).
if ! command -v bash-static >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "bench-deps: installing bash-static"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq bash-static >/dev/null
fi
