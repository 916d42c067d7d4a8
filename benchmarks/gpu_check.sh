#!/usr/bin/env bash
# One prepared script for a session lent the GPU machine: the CUDA tests, then the CUDA
# entropy benchmark (paper-100m, bf16: bytes/s and MFU), figures under $OUT.
#
#   device run:  bash benchmarks/gpu_check.sh        (timeout_s ≈ 540; about 6 minutes)
#
# The device image has python3 with a CUDA torch, numpy, pyarrow, numba, click, safetensors
# and pytest but no network, so nothing is installed: bltdata runs from the checkout
# (PYTHONPATH), and only modules that need no Beam/polars/zstandard are used.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
{ nvidia-smi; "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'; } \
    > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
timeout 200 "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py tests/test_device.py 2>&1 \
    | tee "$OUT/gpu-tests.txt"
echo "gpu tests exit ${PIPESTATUS[0]}" | tee -a "$OUT/gpu-tests.txt"
timeout 300 "$PY" benchmarks/bench_entropy.py --no-cpu --compile \
    --gpu-corpus-bytes 8000000 --gpu-batch-bytes 262144 1048576 --gpu-chunk-len 4096 8192 \
    --json "$OUT/bench_entropy.json" 2>&1 | tee "$OUT/bench_entropy.txt"
echo "bench exit ${PIPESTATUS[0]}" | tee -a "$OUT/bench_entropy.txt"
