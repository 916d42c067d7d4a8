#!/usr/bin/env bash
# One prepared script for a session that has the GPU machine: GPU tests + GPU benchmarks,
# figures written under $OUT (default ./gpu-out). Sized for ~8 minutes on one H200.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
pip install -q -e '.[test]' > "$OUT/install.log" 2>&1
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
timeout 180 pytest -m gpu -q tests/ > "$OUT/gpu-tests.txt" 2>&1; echo "gpu tests exit $?" >> "$OUT/gpu-tests.txt"
timeout 300 python benchmarks/bench_entropy.py --no-cpu --json "$OUT/bench_entropy.json" > "$OUT/bench_entropy.txt" 2>&1
echo "done"; tail -n 20 "$OUT"/*.txt
