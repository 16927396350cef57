#!/usr/bin/env bash
# The GPU paths, as one short script for a machine with NVIDIA GPUs (run from the repo root):
#   bash benchmarks/gpu_check.sh
# 1. occlusion CPU == CUDA and the demo model on CUDA vs CPU (tests that skip without a GPU);
# 2. the default grid on CUDA with bf16 autocast, then fp32, and the ratio of their recalls;
# 3. the grid with one xdist worker per GPU (-n auto), which must give the same JSON as -n 0.
set -euo pipefail
python -m pip install -q -e ".[test]"
nvidia-smi --query-gpu=name,memory.total --format=csv
python -m pytest -q -p no:cacheprovider tests/occlusion tests/test_devices.py -k "cuda or CUDA"
out=${OUT:-/tmp/medrobust-gpu}
mkdir -p "$out"
for precision in bf16 fp32; do
  python -m pytest -q -p no:cacheprovider --medrobust -m medrobust --medrobust-device cuda \
    --medrobust-precision "$precision" --medrobust-no-cache --medrobust-report-dir "$out/$precision" || true
done
python -m pytest -q -p no:cacheprovider --medrobust -m medrobust -n auto --medrobust-no-cache \
  --medrobust-report-dir "$out/xdist" || true
python - "$out" <<'PY'
import json, sys
out = sys.argv[1]
load = lambda d: {(c["kind"], c["id"]): c["metrics"] for c in json.load(open(f"{out}/{d}/medrobust.json"))["cells"]}
bf16, fp32, xdist = load("bf16"), load("fp32"), load("xdist")
worst = max(abs(bf16[k][m] - fp32[k][m]) for k in fp32 for m in fp32[k] if "_R@" in m)
print(f"largest recall difference bf16 vs fp32: {worst:.4f}")
print("xdist (-n auto) equals -n 0 on CUDA (bf16, the default):", xdist == bf16)
PY
