#!/usr/bin/env bash
# S5 at CPU scale on R8, end to end (about 40 minutes on 2 cores):
#  1. write R8's training split as text (benchmarks/s5_corpus.py; dev/test never reach pre-training),
#  2. pre-train a tiny BERT on it (`peftbench backbone build`, 10 epochs) and register it as r8-tiny-bert,
#  3. run benchmarks/s5-r8-cpu.toml (STL, RTM, L3Masking, 4 n-gram schemes x 3 seeds),
#  4. print the S5 table and the paired comparison against STL.
# Needs ../shared/data/textgcn (or DATA=path/to/textgcn). Outputs under OUT (default results/s5-cpu).
# SMOKE=1: seconds: 40 documents, 1 pre-training epoch, the suite's plan (--dry-run) and one small
# mtl-ngram run instead of the 21 runs; CI runs it so the script cannot rot.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/textgcn}
OUT=${OUT:-results/s5-cpu}
PEFTBENCH=${PEFTBENCH:-peftbench}
PYTHON=${PYTHON:-python}
SMOKE=${SMOKE:-0}
mkdir -p "$OUT"
$PYTHON benchmarks/s5_corpus.py r8 "$OUT/r8-train-text" --set "data_dir=$DATA" $([ "$SMOKE" = 1 ] && echo --smoke)
if [ ! -f "$OUT/r8-tiny-bert/build_info.json" ]; then
  $PEFTBENCH backbone build --corpus "$OUT/r8-train-text" --out "$OUT/r8-tiny-bert" --preset tiny \
    --set epochs=$([ "$SMOKE" = 1 ] && echo 1 || echo 10) --name r8-tiny-bert --overwrite \
    $([ "$SMOKE" = 1 ] && echo --set hidden=32 --set heads=2 --set seq_len=32 --set vocab_size=3000)
fi
if [ "$SMOKE" = 1 ]; then
  $PEFTBENCH suite run benchmarks/s5-r8-cpu.toml --results "$OUT/runs" --dry-run
  $PEFTBENCH run --method mtl-ngram --task r8 --backbone r8-tiny-bert --results "$OUT/runs" --quiet \
    --set "data_dir=$DATA" --set train_per_class=4 --set test_per_class=4 --set max_length=32 --set epochs=1 \
    --set min_frequency=2 --set merges=50 --set inference_repeats=0
  $PEFTBENCH report "$OUT/runs" --table s5
  exit 0
fi
$PEFTBENCH suite run benchmarks/s5-r8-cpu.toml --results "$OUT/runs"
$PEFTBENCH report "$OUT/runs" --table s5 --baseline method.name=full
