#!/usr/bin/env bash
# Create .venv and install emphasize with its test tools and the app, keeping torch on the CPU build; install
# Debian's chromium for the app's browser test when it is missing.
# torch is installed first and pinned by constraints.txt for everything else: any package that lets torch float
# upward would pull a CUDA build and gigabytes of CUDA wheels. torchvision is never installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev,app]"
# The app's browser test drives Debian's chromium through Playwright (Playwright's own browser download is not
# used); DejaVu gives the page readable fonts.
if [ ! -x /usr/bin/chromium ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium fonts-dejavu-core
fi
if .venv/bin/python -c "import torchvision" 2>/dev/null; then
  echo "setup: torchvision is installed in .venv; it breaks transformers/diffusers on CPU torch: pip uninstall torchvision" >&2
  exit 1
fi
echo "setup: .venv ready (torch $(.venv/bin/python -c 'import torch; print(torch.__version__)'))"
