#!/usr/bin/env bash
# The GPU check: the tests marked `gpu` (tests/test_gpu.py), on a machine with a CUDA GPU,
# PyTorch and transformers, and possibly nothing else of ours and no network: training on
# CUDA, generation, replicas, and `o1pruner run` of a tiny spec end to end (pre-sample,
# train, evaluate, report) with the resolved precision and engine printed, and GRPO
# (train.method grpo_length) with transformers and with TRL's colocated vLLM generating.
# Before installing the GPU stack itself: scripts/check_gpu_install.sh.
#
#   scripts/gpu_check.sh --fetch-wheels [PYTHON_VERSION]
#       on a machine with package-index access: download the few pure or binary wheels a
#       bare GPU machine lacks (pydantic, math-verify and what they need) into .gpu_wheels/
#       for Python PYTHON_VERSION (default 3.12), manylinux x86_64
#   scripts/gpu_check.sh
#       on the GPU machine: install what is missing from .gpu_wheels/ into .gpu_deps/ (no
#       network), then run the gpu tests with this checkout on PYTHONPATH. vLLM and
#       DeepSpeed are used when installed; their tests are skipped (and say so) otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
WHEELS=(pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0
        typing-inspection==0.4.5 typing-extensions==4.16.0 math-verify==0.9.0
        latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2)

if [ "${1:-}" = "--fetch-wheels" ]; then
  version=${2:-3.12}
  rm -rf .gpu_wheels && mkdir -p .gpu_wheels
  "$py" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: \
    --python-version "$version" --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 -d .gpu_wheels "${WHEELS[@]}" || exit 1
  du -sh .gpu_wheels && ls .gpu_wheels
  exit 0
fi

"$py" - <<'EOF'
import sys, torch, transformers
print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA "
      f"{torch.version.cuda}, available: {torch.cuda.is_available()}), transformers "
      f"{transformers.__version__}")
if torch.cuda.is_available():
    print("device:", torch.cuda.get_device_name(0))
EOF

missing=$("$py" - <<'EOF'
import importlib.util
need = {"pydantic": "pydantic", "math_verify": "math-verify", "yaml": "PyYAML",
        "accelerate": "accelerate", "peft": "peft", "pytest": "pytest"}
print(" ".join(pkg for mod, pkg in need.items() if importlib.util.find_spec(mod) is None))
EOF
)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -n "$missing" ]; then
  echo "missing here: $missing"
  if [ -d .gpu_wheels ]; then
    "$py" -m pip install --disable-pip-version-check -q --no-index --no-deps \
      --target .gpu_deps .gpu_wheels/*.whl || exit 1
    export PYTHONPATH="$PYTHONPATH:$PWD/.gpu_deps"
    echo "installed from .gpu_wheels into .gpu_deps"
  else
    echo "no .gpu_wheels/ (run scripts/gpu_check.sh --fetch-wheels where there is an index)"
  fi
fi
for extra in vllm deepspeed; do
  "$py" -c "import $extra" 2>/dev/null && echo "$extra: installed" \
    || echo "$extra: not installed here; its tests are skipped"
done

# -rP: the end-to-end test prints `o1pruner status`, with the precision and engine auto chose
timeout "${GPU_CHECK_TIMEOUT:-600}" "$py" -m pytest -m gpu tests/test_gpu.py tests/test_grpo.py -v -rsP \
  -p no:cacheprovider
