"""What a suite costs beyond its training: the same N-run suite with warm workers (the local
executor's default), with warm workers in two CPU slots (`--set slots=2`: two runs at once, each
on one core) and with one fresh process per run (`--set warm=false`), in one invocation, each into
a fresh results folder. For each it prints suite wall time / the sum of the runs'
`time.train_seconds` (1.0 would be training only), and the quotient of the warm and per-process
ratios. Compare the walls too: two slots train each run on half the cores, so their train seconds
grow, and their ratio falls partly for that reason.

    python benchmarks/suite_overhead.py            # 6 runs: LoRA + full x 3 seeds, MiniLM-L6, livedoor
                                                   # sample, 1 epoch, max length 32, batch 8
    python benchmarks/suite_overhead.py --order cold-first   # which path runs first (disk caches)
    python benchmarks/suite_overhead.py --smoke    # 1 tiny LoRA run, warm and per-process paths (CI)

What is left above 1.0 with warm workers: one worker start (the imports), the suite's own start and
end, each run's backbone load and evaluation (not training, so not in train_seconds).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PATHS = {"warm workers": [], "two CPU slots": ["--set", "slots=2"], "one process per run": ["--set", "warm=false"]}
SMOKE_PATHS = ("warm workers", "one process per run")  # slots=2 has a test of its own


def suite_text(smoke: bool) -> str:
    methods = ["lora"] if smoke else ["lora", "full"]
    seeds = [1] if smoke else [1, 2, 3]
    blocks = "\n".join(f'[[runs]]\nmethod = "{m}"' for m in methods)
    return textwrap.dedent(f"""\
        description = "suite overhead benchmark"
        [defaults]
        task = "livedoor-news"
        backbone = "minilm-l6"
        seeds = {seeds}
        [defaults.set]
        data_dir = "{REPO / 'examples' / 'livedoor-sample'}"
        epochs = 1
        batch_size = 8
        max_length = {16 if smoke else 32}
        inference_repeats = 0
        save_artifact = false
        """) + ("per_category = 10\n" if smoke else "") + blocks + "\n"


def run_suite(suite: Path, results: Path, extra: list[str]) -> tuple[float, float, int]:
    """(suite wall seconds, summed train seconds, runs) of one `suite run` into ``results``."""
    from peftbench.results.analysis import load_results

    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "peftbench.cli", "suite", "run", str(suite), "--results",
                           str(results), *extra], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0 or "0 failed" not in done.stdout:
        raise SystemExit(f"suite run {' '.join(extra)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    frame = load_results(results)
    return wall, float(frame["time.train_seconds"].astype(float).sum()), len(frame)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="1 tiny LoRA run per path (warm, per-process)")
    parser.add_argument("--order", choices=("warm-first", "cold-first"), default="warm-first")
    args = parser.parse_args()
    paths = SMOKE_PATHS if args.smoke else tuple(PATHS)
    order = list(paths) if args.order == "warm-first" else list(reversed(paths))
    measured = {}
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "suite.toml"
        suite.write_text(suite_text(args.smoke), encoding="utf-8")
        for number, name in enumerate(order):
            measured[name] = run_suite(suite, Path(tmp) / f"results-{number}", PATHS[name])
    for name in paths:
        wall, train, runs = measured[name]
        print(f"{name:<20} {runs} runs: {wall:.1f} s wall / {train:.1f} s train = {wall / train:.2f}")
    warm, cold = (measured[name][0] / measured[name][1] for name in ("warm workers", "one process per run"))
    print(f"overhead ratio, warm workers / one process per run: {warm / cold:.2f}")


if __name__ == "__main__":
    main()
