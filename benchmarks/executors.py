"""Suite wall time per executor: the same runs with `--executor local`, `ray` (a local instance)
and `slurm` in submitit's local mode, each into a fresh results folder, one after the other.

    python benchmarks/executors.py              # 4 runs: full + LoRA x 2 seeds, MiniLM-L6, livedoor sample
    python benchmarks/executors.py --smoke      # 1 tiny run on slurm (CI; the local executor's smoke is
                                                # suite_overhead.py's, Ray's start-up is
                                                # tests/test_slurm_executor.py's cost already)

On a 2-core machine expect about 1x: the engines add their start-up (Ray: a local instance) and
can only run as many runs at once as there are cores.
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
EXECUTORS = {"local": [], "ray": ["--set", "workers=2"], "slurm": ["--set", "cluster=local", "--set", "gpus_per_run=0",
                                                                     "--set", "poll_seconds=0.5"]}


def suite_text(smoke: bool) -> str:
    size = "per_category = 10\nmax_length = 16" if smoke else "per_category = 10\nmax_length = 128"
    methods = ["lora"] if smoke else ["full", "lora"]
    seeds = [1] if smoke else [1, 2]
    blocks = "\n".join(f'[[runs]]\nmethod = "{m}"' for m in methods)
    return textwrap.dedent(f"""\
        description = "executor benchmark"
        [defaults]
        task = "livedoor-news"
        backbone = "minilm-l6"
        seeds = {seeds}
        [defaults.set]
        data_dir = "{REPO / 'examples' / 'livedoor-sample'}"
        epochs = 1
        batch_size = 8
        inference_repeats = 0
        save_artifact = false
        """) + size + "\n" + blocks + "\n"


def wall(executor: str, suite: Path, results: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "peftbench.cli", "suite", "run", str(suite), "--results",
                           str(results), "--executor", executor, *EXECUTORS[executor]],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0 or "0 failed" not in done.stdout:
        raise SystemExit(f"--executor {executor} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="1 tiny run")
    parser.add_argument("--executors", default=None, help="comma-separated (default local,ray,slurm; "
                                                          "--smoke: slurm)")
    args = parser.parse_args()
    args.executors = args.executors or ("slurm" if args.smoke else "local,ray,slurm")
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "suite.toml"
        suite.write_text(suite_text(args.smoke), encoding="utf-8")
        walls = {name: wall(name, suite, Path(tmp) / name) for name in args.executors.split(",")}
    runs = 1 if args.smoke else 4
    base = walls.get("local")
    for name, seconds in walls.items():
        ratio = f", {seconds / base:.2f}x local" if base else ""
        print(f"--executor {name:<6} {runs} runs: {seconds:.1f} s wall{ratio}")


if __name__ == "__main__":
    main()
