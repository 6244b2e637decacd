#!/usr/bin/env bash
# S5 at CPU scale on R8, end to end (about 40 minutes on 2 cores):
#  1. write R8's training split as text (benchmarks/s5_corpus.py; dev/test never reach pre-training),
#  2. pre-train a tiny BERT on it (`peftbench backbone build`, 10 epochs) and register it as r8-tiny-bert,
#  3. run benchmarks/s5-r8-cpu.toml (STL, RTM, L3Masking, 4 n-gram schemes x 3 seeds),
#  4. print the S5 table and the paired comparison against STL.
# Needs ../shared/data/textgcn (or DATA=path/to/textgcn). Outputs under OUT (default results/s5-cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/textgcn}
OUT=${OUT:-results/s5-cpu}
PEFTBENCH=${PEFTBENCH:-peftbench}
mkdir -p "$OUT"
python benchmarks/s5_corpus.py r8 "$OUT/r8-train-text" --set "data_dir=$DATA"
if [ ! -f "$OUT/r8-tiny-bert/build_info.json" ]; then
  $PEFTBENCH backbone build --corpus "$OUT/r8-train-text" --out "$OUT/r8-tiny-bert" --preset tiny \
    --set epochs=10 --name r8-tiny-bert --overwrite
fi
$PEFTBENCH suite run benchmarks/s5-r8-cpu.toml --results "$OUT/runs"
$PEFTBENCH report "$OUT/runs" --table s5 --baseline method.name=full
