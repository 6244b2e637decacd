"""Benchmark: peftbench's training step time vs a plain hand-written PyTorch loop.

Same model, method, batches (same DataLoader, same shuffling) and device; the
two loops alternate, several repeats, and the median of the per-repeat ratios
is printed. Goal: ratio <= 1.03.

    python benchmarks/overhead.py                      # MiniLM-L6 + LoRA r=8, CPU
    python benchmarks/overhead.py --method full --steps 8
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from rich.console import Console
from torch.utils.data import DataLoader

from peftbench.components import plugins
from peftbench.run import spec
from peftbench.run.progress import Progress
from peftbench.run.trainer import FitContext, fit

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="lora")
    parser.add_argument("--backbone", default="minilm-l6")
    parser.add_argument("--data", default=str(REPO / "examples" / "livedoor-sample"))
    parser.add_argument("--steps", type=int, default=8, help="training steps per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra method settings")
    parser.add_argument("--smoke", action="store_true", help="1 step of batch 2, 1 repeat: checks it runs (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.repeats, args.batch_size, args.max_length = 1, 1, 2, 32

    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    comps = plugins.load()
    resolved = spec.resolve(comps, args.method, "livedoor-news", args.backbone, [
        f"data_dir={args.data}", f"max_length={args.max_length}", f"batch_size={args.batch_size}",
        "epochs=1", *args.sets])
    cfg, task, method = resolved.spec, resolved.task, resolved.method
    splits = task.load(cfg.task_config)
    stage = method.stages(task, cfg.task_config, cfg.method_config)[0]
    loaded = resolved.backbone.load(stage.head)
    n = args.steps * args.batch_size
    train = task.encode(splits.train[:n], loaded.tokenizer, cfg.task_config)
    assert len(train) == n, f"need {n} training examples, the data has {len(train)}"
    dev = task.encode(splits.dev[:1], loaded.tokenizer, cfg.task_config)
    collate = task.collator(loaded.tokenizer, cfg.task_config)
    model = method.prepare(loaded, cfg.method_config, stage)
    accelerator = Accelerator()

    def loader(data, shuffle):
        return DataLoader(data, batch_size=args.batch_size, shuffle=shuffle, collate_fn=collate,
                          generator=torch.Generator().manual_seed(0) if shuffle else None)

    def plain_loop() -> float:
        train_loader = loader(train, True)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=method.learning_rate(cfg.method_config, stage), fused=True)
        scheduler = transformers.get_linear_schedule_with_warmup(optimizer, 0, len(train_loader))
        model.train()
        start = time.perf_counter()
        for batch in train_loader:
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        if accelerator.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    def peftbench_loop() -> float:
        prepared, train_loader, dev_loader = accelerator.prepare(model, loader(train, True), loader(dev, False))
        # Progress bars on, rendered into a buffer: their cost is part of peftbench's.
        console = Console(file=io.StringIO(), force_terminal=True)
        with Progress(console, quiet=False) as progress:
            progress.log = lambda message: None
            result = fit(FitContext(prepared, method, cfg.method_config, stage, task, cfg.task_config, train_loader,
                                    dev_loader, cfg.train, accelerator, progress, on_epoch=lambda entry: None))
        return result.epoch_seconds[0]  # training only; the dev evaluation is excluded

    plain_loop()  # warm-up (allocator, kernels)
    plain_times, bench_times, ratios = [], [], []
    for repeat in range(args.repeats):
        p = plain_loop()
        b = peftbench_loop()
        plain_times.append(p)
        bench_times.append(b)
        ratios.append(b / p)
        print(f"repeat {repeat + 1}: plain {p:.3f}s  peftbench {b:.3f}s  ratio {b / p:.3f}", flush=True)
    print(f"\n{args.method} on {args.backbone}, {args.steps} steps of batch {args.batch_size} x <= {args.max_length} "
          f"tokens, device {accelerator.device}, torch threads {torch.get_num_threads()}")
    print(f"median step time: plain {statistics.median(plain_times) / args.steps:.4f}s, "
          f"peftbench {statistics.median(bench_times) / args.steps:.4f}s")
    print(f"median ratio peftbench/plain over {args.repeats} repeats: {statistics.median(ratios):.3f} (goal <= 1.03)")


if __name__ == "__main__":
    main()
