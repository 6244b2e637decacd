#!/usr/bin/env bash
# Issue #8 / study S3: does a small BERT pre-trained from scratch on the tasks' own Japanese
# training text beat a mismatched pre-trained model (English MiniLM-L6) at this scale?
#   PEFTBENCH_DATA=../shared/data bash benchmarks/scratch-vs-minilm.sh
# CPU-sized: tiny preset, livedoor 40 articles per category, KWDLC 300 documents per split.
# SMOKE=1: seconds (1 pre-training epoch on 60 of the livedoor sample's files, then LoRA on the
# built backbone only, 1 epoch); CI runs it so the script cannot rot.
set -euo pipefail
PEFTBENCH="${PEFTBENCH:-peftbench}"
RESULTS="${RESULTS:-results/scratch-vs-minilm}"
BUILT="${BUILT:-results/scratch-ja}"
: "${PEFTBENCH_DATA:?set PEFTBENCH_DATA to a folder holding livedoor/ and kwdlc/}"

SMOKE=${SMOKE:-0}
corpora=(--corpus livedoor-news --corpus kwdlc-ner)
build=() per_category=40 documents=300 epochs=6 backbones=(minilm-l6 scratch-ja)
if [ "$SMOKE" = 1 ]; then  # the sample's text files: no pass over the two whole corpora
  corpora=(--corpus "$(dirname "$0")/../examples/livedoor-sample")
  build=(--set epochs=1 --set max_documents=60 --set hidden=32 --set heads=2 --set seq_len=32 --set vocab_size=3000)
  per_category=10 documents=3 epochs=1 backbones=(scratch-ja)
fi
"$PEFTBENCH" backbone build "${corpora[@]}" --out "$BUILT" --name scratch-ja \
  --preset tiny --overwrite "${build[@]}"

for backbone in "${backbones[@]}"; do
  livedoor=(--task livedoor-news --backbone "$backbone" --results "$RESULTS" --quiet --set per_category=$per_category
            --set text=title+body --set max_length=128 --set batch_size=16 --set epochs=$epochs --set inference_repeats=0)
  kwdlc=(--task kwdlc-ner --backbone "$backbone" --results "$RESULTS" --quiet --set max_documents=$documents
         --set batch_size=16 --set epochs=$epochs --set inference_repeats=0)
  [ "$SMOKE" = 1 ] || "$PEFTBENCH" run --method full "${livedoor[@]}" --set lr=2e-4
  "$PEFTBENCH" run --method lora "${livedoor[@]}" --set lr=5e-3
  [ "$SMOKE" = 1 ] || "$PEFTBENCH" run --method full "${kwdlc[@]}" --set lr=2e-4
  "$PEFTBENCH" run --method lora "${kwdlc[@]}" --set target=query,key,value --set lr=5e-3
done

"$PEFTBENCH" report "$RESULTS" --task livedoor-news --columns \
  backbone.name,method.name,scores.test.accuracy,scores.test.macro_f1,params.trainable,data.unk_token_rate.train
"$PEFTBENCH" report "$RESULTS" --task kwdlc-ner --columns \
  backbone.name,method.name,scores.test.f1,scores.test.precision,scores.test.recall,params.trainable,data.unk_token_rate.train
