"""What packing saves: the same LoRA training of a causal LM with padded batches, with padded batches
of similar lengths (`group_by_length=true`) and with packed batches (`packing=true`), on livedoor
news titles -> their article's first paragraph (real text whose lengths vary), with a Llama built
from a config (benchmarks/tiny_llama.py: BPE trained on the text). The three layouts run in turn,
`--rounds` times, each run its own process; printed per layout: the median seconds per epoch, the
token positions the model computed per epoch (padding included), their ratios to padded batches,
and the largest relative difference of a layout's per-epoch train loss from padded batches' (the
same examples in the same batches and the same loss: only float rounding may differ).

    python benchmarks/packing.py                 # 400 articles, hidden 256 x 4 layers, max length 256,
                                                 # batch 8, 1 epoch, 3 rounds
    python benchmarks/packing.py --hidden 512    # a wider model: attention is a smaller share
    python benchmarks/packing.py --smoke         # 40 articles, hidden 64 x 2, max length 64, 1 round,
                                                 # padded and packed only (CI)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_llama  # noqa: E402  (the benchmark folder's own builder)

LAYOUTS = {"padded": [], "grouped": ["--set", "group_by_length=true"], "packed": ["--set", "packing=true"]}


def first_paragraphs(corpus: Path, articles: int) -> list[dict[str, str]]:
    """{"prompt": title, "completion": first paragraph} of ``articles`` articles taken evenly from
    every category (a livedoor file: URL, date, title, then the body)."""
    files = sorted(f for f in corpus.glob("*/*-*.txt") if f.name != "LICENSE.txt")
    if not files:
        raise SystemExit(f"no livedoor articles under {corpus} (give --data)")
    step = max(1, len(files) // articles)
    rows = []
    for path in files[::step][:articles]:
        lines = path.read_text(encoding="utf-8").splitlines()
        body = [line.strip() for line in lines[3:]]
        paragraph = next((line for line in body if line), "")
        if lines[2:3] and paragraph:
            rows.append({"prompt": lines[2].strip(), "completion": paragraph})
    return rows


def write_data(folder: Path, rows: list[dict[str, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cut = len(rows) * 9 // 10
    for name, part in (("train.jsonl", rows[:cut]), ("test.jsonl", rows[cut:])):
        (folder / name).write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in part) + "\n", encoding="utf-8")
    return folder


def run(layout: str, model: Path, data: Path, results: Path, args: argparse.Namespace) -> dict:
    """One training run; its deployed stage's record."""
    sets = {"data_dir": data, "epochs": args.epochs, "batch_size": 8, "max_length": args.max_length,
            "max_prompt_length": args.max_length // 4, "max_new_tokens": 2, "limit_eval": 8, "seed": 1,
            "lr": 1e-3, "inference_repeats": 0, "save_artifact": "false"}
    command = [sys.executable, "-m", "peftbench.cli", "run", "--method", "lora", "--task", "instruction-sft",
               "--backbone", str(model), "--results", str(results), *LAYOUTS[layout]]
    for key, value in sets.items():
        command += ["--set", f"{key}={value}"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{layout} run failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    record = json.loads(next(results.glob("*/record.json")).read_text(encoding="utf-8"))
    return record["stages"]["finetune"]


def report(stages: dict[str, list[dict]]) -> None:
    def seconds(layout: str) -> float:
        return statistics.median(s for stage in stages[layout] for s in stage["epoch_seconds"])

    def positions(layout: str) -> float:
        return statistics.median(p for stage in stages[layout] for p in stage["train_positions"])

    padded_losses = [stage["train_loss_epochs"] for stage in stages["padded"]]
    for layout in stages:
        losses = [stage["train_loss_epochs"] for stage in stages[layout]]
        drift = max(abs(a - b) / abs(b) for run_a, run_b in zip(losses, padded_losses) for a, b in zip(run_a, run_b))
        print(f"{layout:<8} {len(stages[layout])} runs: {seconds(layout):.2f} s/epoch (x{seconds(layout) / seconds('padded'):.3f}), "
              f"{positions(layout):,.0f} token positions/epoch (x{positions(layout) / positions('padded'):.3f}), "
              f"train loss vs padded: max relative difference {drift:.1e}")
    grouped = f"; packed / grouped: {seconds('packed') / seconds('grouped'):.3f}" if "grouped" in stages else ""
    print(f"packed / padded s/epoch: {seconds('packed') / seconds('padded'):.3f}{grouped}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "livedoor")
    parser.add_argument("--articles", type=int, default=400)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="40 articles, a 2-layer model, one round, padded and "
                                                             "packed")
    args = parser.parse_args()
    if args.smoke:
        args.articles, args.hidden, args.layers, args.max_length, args.rounds = 40, 64, 2, 64, 1
    with tempfile.TemporaryDirectory() as tmp:
        data = write_data(Path(tmp) / "data", first_paragraphs(args.data, args.articles))
        model = tiny_llama.build(Path(tmp) / "model", [data / "train.jsonl"], vocab_size=2000,
                                 hidden_size=args.hidden, layers=args.layers)
        layouts = ("padded", "packed") if args.smoke else tuple(LAYOUTS)
        stages: dict[str, list[dict]] = {layout: [] for layout in layouts}
        for round_ in range(args.rounds):
            for layout in layouts:
                stages[layout].append(run(layout, model, data, Path(tmp) / f"{layout}-{round_}", args))
    report(stages)


if __name__ == "__main__":
    main()
