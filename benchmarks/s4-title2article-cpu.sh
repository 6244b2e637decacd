#!/usr/bin/env bash
# S4's pipeline at CPU scale: tiny T5 and tiny GPT-2 (random init, char vocabulary), full and LoRA,
# on the livedoor sample shipped in examples/ (or DATA=path to the full corpus), then the S4 table.
# SMOKE=1: seconds (60 articles, 1 epoch, short texts, LoRA only); CI runs it so the script cannot rot.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-examples/livedoor-sample}
OUT=${OUT:-results/s4-cpu}
PEFTBENCH=${PEFTBENCH:-peftbench}
PYTHON=${PYTHON:-python}
size=(--set max_target_length=128 --set max_new_tokens=128 --set epochs=5)
smoke=() methods=(full lora)
if [[ "${SMOKE:-0}" == 1 ]]; then
  size=(--set limit=60 --set max_target_length=16 --set max_new_tokens=8 --set epochs=1 --quiet)
  smoke=(--smoke) methods=(lora)
fi
$PYTHON benchmarks/s4_tiny_backbones.py "$OUT/backbones" --set "data_dir=$DATA" "${smoke[@]}"
for backbone in tiny-t5 tiny-gpt2; do
  for method in "${methods[@]}"; do
    lr=$([ "$method" = full ] && echo 1e-3 || echo 3e-3)
    $PEFTBENCH run --method $method --task livedoor-title2article --backbone "$OUT/backbones/$backbone" \
      --results "$OUT/runs" --set "data_dir=$DATA" "${size[@]}" \
      --set batch_size=8 --set lr=$lr --set grad_clip=1.0 --set schedule=linear
  done
done
$PEFTBENCH report "$OUT/runs" --table s4
$PEFTBENCH human export "$OUT/runs" --out "$OUT/human/sheet.csv" --per-system 3
