"""Benchmark: peftbench against the trainer decoder users write, TRL's SFTTrainer (completion-only loss).

The same model (SmolLM2-135M-Instruct, `--backbone smollm2-135m`), the same GSM8K examples tokenized
once by peftbench's task (prompt -> completion, the loss on the completion and EOS only: TRL takes
them as `input_ids` + `completion_mask`), the same order and batches (TRL's sampler replaced by the
order peftbench's loader draws for its seed), full fine-tuning with fused AdamW, the same learning
rate, linear schedule without warmup, gradient clipping at 1.0, no weight decay, fp32 without gradient
checkpointing (TRL's SFTConfig defaults to bf16 and gradient checkpointing; both are set off), one epoch.
Each side runs in a fresh process; the sides alternate (which goes first alternates too) for
several pairs.

Printed: per-step time (each side's median over its steps, batch fetching excluded on both sides:
peftbench's record, TRL's on_step_begin -> on_step_end), their ratio peftbench / TRL per pair and
its median (goal <= 1.0), and each side's mean training loss over the epoch and their relative
difference (goal: within 1%: the same computation).

    python benchmarks/vs_trl.py --pairs 5       # SmolLM2, 27 training examples, batch 4 (~5 minutes on 2 cores)
    python benchmarks/vs_trl.py --smoke         # a tiny Llama, 8 examples, 1 pair (CI)
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "gsm8k"


def settings(args) -> list[str]:
    return [f"data_dir={FIXTURE}", f"limit_train={args.examples}", "limit_eval=2", f"batch_size={args.batch_size}",
            "epochs=1", f"lr={args.lr}", "grad_clip=1.0", "max_new_tokens=2", "inference_repeats=0",
            "evaluate_test=false", "save_artifact=false", "max_length=256", "max_prompt_length=192", f"seed={args.seed}"]


def run_peftbench(args, backbone: str, out: Path) -> dict:
    results = out / "results"
    command = [sys.executable, "-m", "peftbench", "run", "--method", "full", "--task", "gsm8k", "--backbone", backbone,
               "--results", str(results), "--quiet", *[arg for pair in settings(args) for arg in ("--set", pair)]]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    record = json.loads(next(results.glob("*/record.json")).read_text(encoding="utf-8"))
    steps = record["time"]["step_seconds"]
    return {"step_median": steps["median"], "step_min": steps["min"], "loss": record["stages"]["finetune"]
            ["train_loss_epochs"][0], "steps": steps["count"]}


def peftbench_order(count: int, batch_size: int, seed: int) -> list[int]:
    """The example order peftbench's training loader draws (its sampler depends on count and seed only)."""
    from accelerate import Accelerator

    from peftbench.run.state import loader

    indices = Accelerator(cpu=True).prepare(loader([{"i": i} for i in range(count)], lambda rows: [r["i"] for r in rows],
                                                   batch_size, True, seed))
    return [i for batch in indices for i in batch]


def run_trl(args, backbone: str, out: Path) -> dict:
    import torch
    from datasets import Dataset
    from torch.utils.data import SequentialSampler
    from transformers import TrainerCallback, set_seed
    from trl import SFTConfig, SFTTrainer

    from peftbench.components.plugins import load
    from peftbench.run.spec import resolve

    resolved = resolve(load(), "full", "gsm8k", backbone, settings(args))
    config = resolved.spec.task_config
    loaded = resolved.backbone.load(resolved.task.head(config))
    task = resolved.task.for_backbone(loaded)
    rows = task.encode(task.load(config).train, loaded.tokenizer, config)
    ordered = [rows[i] for i in peftbench_order(len(rows), args.batch_size, args.seed)]
    data = Dataset.from_list([{"input_ids": r["input_ids"], "completion_mask": [int(label != -100) for label in r["labels"]]}
                              for r in ordered])
    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            self.start = time.perf_counter()

        def on_step_end(self, *_, **__):
            times.append(time.perf_counter() - self.start)

    class InOrder(SFTTrainer):
        def _get_train_sampler(self, *_args, **_kwargs):
            return SequentialSampler(self.train_dataset)

    set_seed(args.seed)
    trainer = InOrder(model=loaded.model, processing_class=loaded.tokenizer, train_dataset=data, callbacks=[StepTimer()],
                      args=SFTConfig(output_dir=str(out / "trl"), per_device_train_batch_size=args.batch_size,
                                     num_train_epochs=1, learning_rate=args.lr, lr_scheduler_type="linear",
                                     warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch_fused",
                                     logging_steps=1, save_strategy="no", eval_strategy="no", report_to=[],
                                     completion_only_loss=True, max_length=None, seed=args.seed, use_cpu=True,
                                     # TRL's own defaults are bf16 autocast and gradient checkpointing: off, as
                                     # on peftbench's side (the same computation; peftbench's levers are settings)
                                     bf16=False, gradient_checkpointing=False,
                                     dataloader_num_workers=0, disable_tqdm=True))
    torch.set_num_threads(torch.get_num_threads())
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"step_median": statistics.median(times), "step_min": min(times), "loss": statistics.fmean(losses),
            "steps": len(times)}


def side(args) -> None:
    out = Path(args.out)
    result = (run_peftbench if args.side == "peftbench" else run_trl)(args, args.backbone, out)
    (out / "result.json").write_text(json.dumps(result), encoding="utf-8")


def tiny_backbone(folder: Path) -> str:
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_llama", REPO / "benchmarks" / "tiny_llama.py")
    tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny)
    return str(tiny.build(folder, [FIXTURE / "train.jsonl"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a tiny Llama, 8 examples, one pair (CI)")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--examples", type=int, default=30, help="at most this many (the fixture has 30; dev takes 3)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--side", choices=["peftbench", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--backbone", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        side(args)
        return
    if args.smoke:
        args.pairs, args.examples, args.lr = 1, 8, 1e-3
    with tempfile.TemporaryDirectory() as work:
        backbone = tiny_backbone(Path(work) / "tiny") if args.smoke else "smollm2-135m"
        compare(args, backbone, Path(work))


def compare(args, backbone: str, work: Path) -> None:
    ratios, pairs = [], []
    for pair in range(args.pairs):
        found = {}
        for name in (("peftbench", "trl") if pair % 2 == 0 else ("trl", "peftbench")):
            out = work / f"{name}-{pair}"
            out.mkdir()
            command = [sys.executable, __file__, "--side", name, "--backbone", backbone, "--out", str(out),
                       "--examples", str(args.examples), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
                       "--seed", str(args.seed)]
            subprocess.run(command, check=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
            found[name] = json.loads((out / "result.json").read_text(encoding="utf-8"))
        ratios.append(found["peftbench"]["step_median"] / found["trl"]["step_median"])
        pairs.append(found)
    print(f"\nfull fine-tuning, GSM8K fixture (at most {args.examples} examples before dev is carved off), batch "
          f"{args.batch_size}, one epoch; backbone {backbone}")
    print("| pair | peftbench s/step (median, min) | TRL s/step (median, min) | ratio | loss peftbench | loss TRL |")
    print("|---|---|---|---|---|---|")
    for number, (found, ratio) in enumerate(zip(pairs, ratios), 1):
        p, t = found["peftbench"], found["trl"]
        print(f"| {number} | {p['step_median']:.3f}, {p['step_min']:.3f} | {t['step_median']:.3f}, {t['step_min']:.3f} "
              f"| {ratio:.3f} | {p['loss']:.4f} | {t['loss']:.4f} |")
    loss = pairs[0]
    difference = abs(loss["peftbench"]["loss"] - loss["trl"]["loss"]) / loss["trl"]["loss"]
    print(f"per-step time ratio peftbench/TRL (median of pairs): {statistics.median(ratios):.3f}")
    print(f"epoch training loss: peftbench {loss['peftbench']['loss']:.5f}, TRL {loss['trl']['loss']:.5f}, "
          f"relative difference {100 * difference:.3f}%; steps {loss['peftbench']['steps']} and {loss['trl']['steps']}")


if __name__ == "__main__":
    main()
