#!/usr/bin/env bash
# GPU check for maintainers, on a machine with a CUDA GPU and hfx installed (bash scripts/setup.sh gives a CPU
# build of torch: install a CUDA build there first). Trains a ~100M-parameter Llama built from a config, bf16,
# 300 steps, and prints tokens/s, peak GPU memory and MFU; a second pass with torch.compile. About 4 minutes on
# one H100/H200. Multi-GPU (DDP/FSDP) passes are not part of it yet.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" scripts/gpu_check.py "$@"
"$PY" scripts/gpu_check.py --compile "$@"
