"""Which methods fit on which GPU: the predicted peak memory (peftbench/run/memory.py, fake tensors, no
weights, no GPU) of a training step at batch 4 x 1,024 tokens on GSM8K-shaped data, for published
decoder configs, against 16, 24 and 80 GB cards. Prints a Markdown table (docs/memory.md holds it).

A run fits a card when both its training step and its evaluation forward pass (also batch 4) stay
under the card's memory; the CUDA context (~0.5 GB) and allocator fragmentation are not in the
prediction, so a figure within a few percent of a card's size is a close call.

    python benchmarks/memory_table.py            # Qwen2.5-0.5B, Llama-3.2-1B, Llama-3.1-8B (a few minutes)
    python benchmarks/memory_table.py --smoke    # one small config, two methods, 128 tokens (seconds)
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import time

from peftbench.run import memory
from peftbench.components.plugins import default
from peftbench.run.spec import resolve

MODELS = ("Qwen/Qwen2.5-0.5B", "meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.1-8B")
# (row label, method, settings)
ROWS = (
    ("full FT", "full", []),
    ("full FT, 8-bit AdamW + checkpointing", "full", ["optimizer=adamw8bit", "gradient_checkpointing=true"]),
    ("LoRA r=8", "lora", []),
    ("LoRA r=8 + checkpointing", "lora", ["gradient_checkpointing=true"]),
    ("QLoRA (4-bit base, LoRA r=8)", "lora", ["quantize=4bit"]),
    ("QLoRA + checkpointing", "lora", ["quantize=4bit", "gradient_checkpointing=true"]),
    ("IA3", "ia3", []),
    ("prompt tuning (20 tokens)", "prompt-tuning", []),
)
CARDS = (16, 24, 80)


def table(models: tuple[str, ...], rows: tuple, length: int) -> list[str]:
    components = default()
    lines = ["| model | method | training peak GB (weights + grads + optimizer + activations) | evaluation GB | "
             + " | ".join(f"{card} GB" for card in CARDS) + " |",
             "|---|---|---|---|" + "---|" * len(CARDS)]
    for model in models:
        for label, method, sets in rows:
            resolved = resolve(components, method, "gsm8k", model, ["batch_size=4", "eval_batch_size=4",
                                                                    f"max_length={length}",
                                                                    f"max_prompt_length={min(384, length // 2)}", *sets])
            p = memory.predict(resolved)
            t, peak = p.train, memory.peak_bytes(p)
            split = " + ".join(f"{getattr(t, part) / memory.GB:.2f}" for part in
                               ("weights", "gradients", "optimizer", "activations"))
            fits = " | ".join("fits" if peak <= card * memory.GB else "no" for card in CARDS)
            lines.append(f"| {model} | {label} | {t.peak_bytes / memory.GB:.2f} ({split}) | "
                         f"{p.evaluation.peak_bytes / memory.GB:.2f} | {fits} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="one small config, two methods, 128 tokens")
    args = parser.parse_args()
    start = time.perf_counter()
    if args.smoke:
        lines = table(MODELS[:1], ROWS[2:4], 128)
    else:
        lines = table(MODELS, ROWS, 1024)
    print(f"predicted on {dt.date.today()} ({platform.machine()}, {platform.node() and 'CPU only'}), "
          f"{time.perf_counter() - start:.0f} s:")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
