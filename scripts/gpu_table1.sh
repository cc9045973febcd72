#!/usr/bin/env bash
# Table 1 on CIFAR-10 with the `fast` recipe, plus throughput, on one GPU (issue 4's plan).
# Usage (on the GPU machine, repo root, CIFAR-10 archive staged in .data/ by
# ../shared/tools/stage-data.sh cifar10-jpeg.tar.gz):   OUT=/some/dir bash scripts/gpu_table1.sh
# Writes logs and leaderboard CSVs under $OUT; commit the rows into leaderboards/ afterwards.
set -euo pipefail
OUT=${OUT:?set OUT to a results folder}
DATA=${DATA:-/root/data}
export PYTHONUNBUFFERED=1 LEAKBENCH_DATA="$DATA"
pip install -q --no-deps --no-build-isolation -e .
leakbench data prepare cifar10 --from .data/cifar10-jpeg.tar.gz 2>&1 | tee "$OUT/prepare.log"
for compile in "" "--compile"; do
  leakbench bench --dataset cifar10 --batch-size 512 --steps 100 --warmup 20 $compile \
    --leaderboard-dir "$OUT" 2>&1 | tee -a "$OUT/bench.log"
done
for method in clean naive oracle met; do
  leakbench run --method "$method" --dataset cifar10 --recipe fast --seed 0 --quiet \
    --leaderboard-dir "$OUT" --save-dir "$OUT/runs" 2>&1 | tee -a "$OUT/table1.log"
done
leakbench leaderboard --leaderboard-dir "$OUT" --format markdown | tee "$OUT/table1.md"
