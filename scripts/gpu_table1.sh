#!/usr/bin/env bash
# Issue 4's planned device run: throughput, then Table 1 on CIFAR-10 with the `fast` recipe.
# Usage on the GPU machine, repo root, with the CIFAR-10 archive staged in .data/ by
# ../shared/tools/stage-data.sh cifar10-jpeg.tar.gz (carry .data):
#     OUT=/some/dir bash scripts/gpu_table1.sh
# Writes logs and leaderboard CSVs under $OUT (checkpoints stay outside it); commit the rows
# into leaderboards/ afterwards. SEEDS (default 0) widens the Table 1 sweep.
set -euo pipefail
OUT=${OUT:?set OUT to a results folder}
DATA=${DATA:-/root/data}
SEEDS=${SEEDS:-0}
export PYTHONUNBUFFERED=1 LEAKBENCH_DATA="$DATA"
pip install -q --no-deps --no-build-isolation -e .
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/device.txt"
leakbench data prepare cifar10 --from .data/cifar10-jpeg.tar.gz 2>&1 | tee "$OUT/prepare.log"
for compile in "" "--compile"; do
  leakbench bench --dataset cifar10 --batch-size 512 --steps 100 --warmup 20 $compile \
    --leaderboard-dir "$OUT" 2>&1 | tee -a "$OUT/bench.log"
done
time leakbench sweep --config sweeps/table1-cifar10.toml --seeds "$SEEDS" \
  --leaderboard-dir "$OUT" --save-dir /root/runs 2>&1 | tee "$OUT/table1.log"
leakbench leaderboard --leaderboard-dir "$OUT" --format markdown | tee "$OUT/table1.md"
