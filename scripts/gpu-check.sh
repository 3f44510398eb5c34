#!/usr/bin/env bash
# The CUDA path end to end in a few minutes on a GPU machine; see docs/gpu-check.md.
#
#     scripts/gpu-check.sh                     # mnist-5k, CUDA against the CPU
#     scripts/gpu-check.sh --dataset digits    # any other options go to scripts/gpu_check.py
#     PYTHON=/usr/bin/python3 scripts/gpu-check.sh   # an interpreter that already has a CUDA
#                                                   # torch and the project's dependencies
#
# Trains a small CNN on the GPU, exports it with torch.onnx.export's defaults (m.onnx +
# m.onnx.data), runs core.pipeline.run on cuda and on cpu (robust-norm, channel-norm,
# cq-asg and cq-ctt with one fine-tuning epoch), compares the reports and writes summary.md
# to $OUT if set, else to ./out/gpu-check/.
# Exit status: 0 every check passed, 1 a check failed, 2 no CUDA device.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -n "${PYTHON:-}" ]]; then
    python="$PYTHON"
else
    if [[ ! -x .venv/bin/python ]]; then
        # Not `make install`: that installs the pinned torch on its own first, so that a CPU
        # machine never pulls a multi-gigabyte CUDA build (our CPU machines resolve it to the
        # +cpu wheel). Here pip resolves torch with the package, which on a GPU machine gives
        # the CUDA build from PyPI. An existing .venv made by `make install` on a CPU machine
        # has no CUDA: remove it, or set PYTHON.
        echo "no .venv: creating it and installing snnconv with its test extras" >&2
        python3 -m venv .venv
        .venv/bin/pip install -e '.[test]'
    fi
    python=.venv/bin/python
fi

echo "== nvidia-smi -L"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -L || echo "(nvidia-smi -L failed with status $?)"
else
    echo "(nvidia-smi not found)"
fi

echo "== torch.cuda"
"$python" - <<'EOF'
import torch

print(f"torch {torch.__version__}, built for CUDA {torch.version.cuda}, "
      f"is_available() = {torch.cuda.is_available()}, device_count() = {torch.cuda.device_count()}")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"  cuda:{i} {p.name}, capability {p.major}.{p.minor}, {p.total_memory / 2**30:.1f} GiB")
EOF

echo "== scripts/gpu_check.py $*"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" scripts/gpu_check.py "$@"
