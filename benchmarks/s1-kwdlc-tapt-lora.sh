#!/usr/bin/env bash
# Study S1 (docs/studies.md): full fine-tuning vs LoRA vs TAPT+LoRA on KWDLC NER,
# S1's hyper-parameters, then S1's tables 5.3, 6.1, 6.2 and 6.3.
#
#   KWDLC=/path/to/KWDLC bash benchmarks/s1-kwdlc-tapt-lora.sh
#   BACKBONE=/local/bert-base-japanese-whole-word-masking ... (default: the hub id)
#   QUICK=1 ...   a CPU-sized version (subset, few epochs, the offline MiniLM backbone)
#   SMOKE=1 ...   seconds: 3 documents, 1 epoch (CI runs this so the script cannot rot)
set -euo pipefail
KWDLC="${KWDLC:?set KWDLC to the KWDLC repository folder}"
RESULTS="${RESULTS:-results/s1}"
PEFTBENCH="${PEFTBENCH:-peftbench}"
BACKBONE="${BACKBONE:-cl-tohoku/bert-base-japanese-whole-word-masking}"

# S1: inputs truncated to 128 tokens; epochs chosen by dev loss (fine-tuning max 100, TAPT max 50).
common=(--task kwdlc-ner --backbone "$BACKBONE" --results "$RESULTS" --set data_dir="$KWDLC"
        --set max_length=128 --set monitor=loss --set patience=5 --set epochs=100 --set batch_size=64
        --set inference_split=train --set inference_repeats=3)
lora=(--set target=query,key,value --set r=8 --set alpha=16 --set method.lr=5e-4)
tapt=(--set tapt_lr=2e-4 --set tapt_batch_size=32 --set tapt_epochs=50 --set tapt_patience=5)
if [[ "${QUICK:-0}" == 1 ]]; then
  BACKBONE=minilm-l6
  common=(--task kwdlc-ner --backbone "$BACKBONE" --results "$RESULTS" --set data_dir="$KWDLC"
          --set max_length=128 --set max_documents=300 --set monitor=loss --set patience=2 --set epochs=6
          --set batch_size=16 --set inference_split=train --set inference_repeats=3)
  lora=(--set target=query,key,value --set r=8 --set alpha=16 --set method.lr=2e-3)
  tapt=(--set tapt_lr=1e-3 --set tapt_batch_size=16 --set tapt_epochs=3 --set tapt_patience=2)
fi
if [[ "${SMOKE:-0}" == 1 ]]; then
  BACKBONE=minilm-l6
  common=(--task kwdlc-ner --backbone "$BACKBONE" --results "$RESULTS" --set data_dir="$KWDLC" --quiet
          --set max_length=32 --set max_documents=3 --set epochs=1 --set batch_size=8
          --set inference_split=train --set inference_repeats=1)
  lora=(--set target=query,key,value --set r=8 --set alpha=16 --set method.lr=2e-3)
  tapt=(--set tapt_lr=1e-3 --set tapt_batch_size=8 --set tapt_epochs=1 --set tapt_patience=1)
fi

"$PEFTBENCH" run --method full "${common[@]}" --set method.lr=5e-5
"$PEFTBENCH" run --method lora "${common[@]}" "${lora[@]}"
"$PEFTBENCH" run --method tapt-lora "${common[@]}" "${lora[@]}" "${tapt[@]}"

for table in s1 s1-tapt-cost s1-finetune-cost s1-inference; do
  "$PEFTBENCH" report "$RESULTS" --table "$table"
  echo
done
