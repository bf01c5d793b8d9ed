#!/usr/bin/env bash
# Before installing on a GPU node: check that `pip install ".[gpu,test]"` (what
# `scripts/setup.sh --gpu` installs) resolves, without installing anything, and print the
# versions pip would take for the packages that must fit together.
#
#   scripts/check_gpu_install.sh              # with python3 (or $PYTHON)
#
# Exit code 0: it resolves; otherwise pip's own message says which requirements clash.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
report=$(mktemp)
trap 'rm -f "$report"' EXIT
"$py" -m pip install --dry-run --ignore-installed --disable-pip-version-check --quiet \
  --report "$report" ".[gpu,test]"
"$py" - "$report" <<'PY'
import json
import sys

wanted = ["torch", "vllm", "transformers", "deepspeed", "ray", "accelerate", "peft", "trl"]
found = {item["metadata"]["name"].lower(): item["metadata"]["version"]
         for item in json.load(open(sys.argv[1]))["install"]}
print("resolves together: " + ", ".join(f"{name} {found[name]}" for name in wanted
                                         if name in found))
PY
