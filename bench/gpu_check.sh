#!/usr/bin/env bash
# GPU check (issue 8, goal 6): on a machine with an NVIDIA GPU, from a fresh checkout,
#   bash bench/gpu_check.sh            # or: make gpu-check
# 1. installs the GPU extra (requirements-gpu.txt: jax[cuda12]) into .venv-gpu;
# 2. benchmarks the paper's search net (S1, C=16, 8 cells, 4 nodes, batch 64, 32×32) for
#    every estimator: compile time, step time, peak device memory (bench/compare.py);
# 3. runs one epoch of configs/cifar_s1.py (amended_exact, the method's regularisers)
#    on synthetic CIFAR-shaped data, printing its wall time.
# Output: the table on stdout and gpu_check/ (compare.json, the search's metrics.jsonl).
# A script, never a test: it needs a GPU and minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-gpu}
OUT=${OUT:-gpu_check}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q -r requirements-gpu.txt
"$VENV/bin/python" -c 'import jax; d = jax.devices(); print(d); assert d[0].platform == "gpu", d'
mkdir -p "$OUT"
"$VENV/bin/python" bench/compare.py --frameworks=jax --space=s1 --cells=8 --nodes=4 --c=16 \
  --batch=64 --repeats=5 --out="$OUT/compare.json"
rm -rf "$OUT/search"
start=$(date +%s)
"$VENV/bin/python" experiments/search.py --config=configs/cifar_s1.py --workdir="$OUT/search" \
  --config.data.name=synthetic --config.data.max_examples=50000 --config.search.epochs=1
echo "one epoch of cifar_s1 on synthetic CIFAR-shaped data: $(( $(date +%s) - start )) s"
