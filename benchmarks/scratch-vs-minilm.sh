#!/usr/bin/env bash
# Issue #8 / study S3: does a small BERT pre-trained from scratch on the tasks' own Japanese
# training text beat a mismatched pre-trained model (English MiniLM-L6) at this scale?
#   PEFTBENCH_DATA=../shared/data bash benchmarks/scratch-vs-minilm.sh
# CPU-sized: tiny preset, livedoor 40 articles per category, KWDLC 300 documents per split.
set -euo pipefail
PEFTBENCH="${PEFTBENCH:-peftbench}"
RESULTS="${RESULTS:-results/scratch-vs-minilm}"
BUILT="${BUILT:-results/scratch-ja}"
: "${PEFTBENCH_DATA:?set PEFTBENCH_DATA to a folder holding livedoor/ and kwdlc/}"

"$PEFTBENCH" backbone build --corpus livedoor-news --corpus kwdlc-ner --out "$BUILT" --name scratch-ja \
  --preset tiny --overwrite

for backbone in minilm-l6 scratch-ja; do
  livedoor=(--task livedoor-news --backbone "$backbone" --results "$RESULTS" --quiet --set per_category=40
            --set text=title+body --set max_length=128 --set batch_size=16 --set epochs=6 --set inference_repeats=0)
  kwdlc=(--task kwdlc-ner --backbone "$backbone" --results "$RESULTS" --quiet --set max_documents=300
         --set batch_size=16 --set epochs=6 --set inference_repeats=0)
  "$PEFTBENCH" run --method full "${livedoor[@]}" --set lr=2e-4
  "$PEFTBENCH" run --method lora "${livedoor[@]}" --set lr=5e-3
  "$PEFTBENCH" run --method full "${kwdlc[@]}" --set lr=2e-4
  "$PEFTBENCH" run --method lora "${kwdlc[@]}" --set target=query,key,value --set lr=5e-3
done

"$PEFTBENCH" report "$RESULTS" --task livedoor-news --columns \
  backbone.name,method.name,scores.test.accuracy,scores.test.macro_f1,params.trainable,data.unk_token_rate.train
"$PEFTBENCH" report "$RESULTS" --task kwdlc-ner --columns \
  backbone.name,method.name,scores.test.f1,scores.test.precision,scores.test.recall,params.trainable,data.unk_token_rate.train
