"""Benchmark (S1, issue #3): NER fine-tuning epoch time with length-grouped dynamic
padding vs S1's pad-every-sentence-to-128, same data, model, method and seed; the
F1 of both (must agree within noise); and merged-LoRA vs full-FT inference latency.

    python benchmarks/ner_padding.py --data ../shared/data/kwdlc          # MiniLM-L6, CPU
    python benchmarks/ner_padding.py --data DIR --backbone cl-tohoku/bert-base-japanese-whole-word-masking

Goals: padded-to-longest epoch time <= 0.5x the pad-to-128 time; merged LoRA
inference <= 1.02x full fine-tuning's.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from peftbench.components import plugins
from peftbench.run import runner, spec
from peftbench.run.progress import Progress


def run(comps, method: str, backbone: str, sets: list[str], results: Path) -> dict:
    resolved = spec.resolve(comps, method, "kwdlc-ner", backbone, sets)
    record, _ = runner.run(comps, resolved, results, Progress(quiet=True))
    return record.to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="KWDLC repository folder")
    parser.add_argument("--backbone", default="minilm-l6")
    parser.add_argument("--documents", type=int, default=150, help="documents per split (subset for CPU)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", default="2e-3")
    parser.add_argument("--repeats", type=int, default=3, help="inference timing repeats (median)")
    parser.add_argument("--smoke", action="store_true", help="3 documents, 1 epoch, 1 repeat: checks it runs (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.documents, args.epochs, args.repeats = 3, 1, 1

    import transformers

    transformers.logging.set_verbosity_error()
    comps = plugins.load()
    common = [f"data_dir={args.data}", f"max_documents={args.documents}", "batch_size=16", "max_length=128", "save_artifact=false", "inference_split=train",
              f"inference_repeats={args.repeats}"]
    lora = ["target=query,key,value", "r=8", "alpha=16", f"method.lr={args.lr}", f"epochs={args.epochs}"]
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp)
        padded = run(comps, "lora", args.backbone, [*common, *lora, "padding=max_length"], results)
        grouped = run(comps, "lora", args.backbone, [*common, *lora, "padding=longest", "group_by_length=true"],
                      results)
        full = run(comps, "full", args.backbone, [*common, "method.lr=5e-5", "epochs=1"], results)

    def epoch(record):
        return statistics.median(record["time"]["epoch_seconds"])

    sizes = padded["data"]["sizes"]
    print(f"{args.backbone}, KWDLC subset {sizes} sentences, LoRA q,k,v r=8, {args.epochs} epochs, "
          f"device {padded['environment']['device']}")
    for name, record in (("pad to 128", padded), ("dynamic, length-grouped", grouped)):
        test = record["scores"]["test"]
        print(f"  {name:24s} median epoch {epoch(record):7.2f}s  test F1 {test['f1']:.4f} "
              f"(P {test['precision']:.4f} R {test['recall']:.4f})")
    print(f"epoch time ratio dynamic/padded: {epoch(grouped) / epoch(padded):.3f} (goal <= 0.5)")
    print(f"F1 difference dynamic - padded: {grouped['scores']['test']['f1'] - padded['scores']['test']['f1']:+.4f}")
    merged = grouped["inference"]["modes"]["merged"]["seconds"]
    unmerged = grouped["inference"]["modes"]["unmerged"]["seconds"]
    plain = full["inference"]["modes"]["default"]["seconds"]
    n = grouped["inference"]["examples"]
    print(f"inference over the {n} training sentences (median of {args.repeats}): full FT {plain:.2f}s, "
          f"LoRA merged {merged:.2f}s, LoRA not merged {unmerged:.2f}s")
    print(f"merged LoRA / full FT latency ratio: {merged / plain:.3f} (goal <= 1.02); "
          f"not merged / full FT: {unmerged / plain:.3f}")


if __name__ == "__main__":
    main()
