"""How long `peftbench report` takes over many run records (goal: 3,000 records in under 3 s for the
plain table, under 10 s with --stats, --baseline or --html, once a report has run over them).

Writes synthetic records (tests/synthetic.py: a real record with its method, seed and settings
varied, and per-example predictions) into a temporary folder, then times the CLI end to end in a
fresh process, the Python start included: the plain table, the per-configuration statistics, a
paired bootstrap against a baseline and the HTML report. Each twice: "cold" with the report cache
off (PEFTBENCH_REPORT_CACHE=0: every floor test, interval and paired test computed) and "warm",
after one report has filled the cache (peftbench/results/cache.py: what a lab re-running its report
over a grown folder pays, the new configurations aside).

    python benchmarks/report_speed.py                       # 3,000 and 10,000 records
    python benchmarks/report_speed.py --records 3000        # one size
    python benchmarks/report_speed.py --smoke               # 40 records, 1 repetition (CI)
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from synthetic import predictions_with_accuracy, write_run  # noqa: E402

METHODS = ("full", "lora", "adapter", "ia3", "dora", "prefix-tuning", "vera", "loha")


def write_records(folder: Path, count: int, seeds: int = 5, examples: int = 200) -> None:
    """``count`` runs: one full fine-tuning configuration (the baseline), then the other methods
    over a grid of learning rates, each configuration with ``seeds`` seeds and its own predictions."""
    rng = random.Random(0)
    references = [rng.randrange(9) for _ in range(examples)]
    configurations = [("full", 1e-4)] + [(method, round(1e-4 * 1.05 ** step, 8))
                                         for step in range(count) for method in METHODS[1:]]
    for number in range(count):
        method, lr = configurations[number // seeds]
        accuracy = 0.5 + 0.4 * rng.random()
        write_run(folder, number, method, number % seeds, predictions_with_accuracy(references, accuracy, number),
                  references, record={"config.method_config.lr": lr}, epochs=3)


def time_command(args: list[str], repetitions: int, env: dict[str, str]) -> list[float]:
    seconds = []
    for _ in range(repetitions):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "peftbench.cli", *args], capture_output=True, text=True, env=env)
        seconds.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"peftbench {' '.join(args)} failed:\n{done.stderr}")
    return seconds


def measure(count: int, repetitions: int, tmp: Path, smoke: bool = False) -> None:
    folder = tmp / f"results-{count}"
    start = time.perf_counter()
    write_records(folder, count)
    print(f"wrote {count} records in {time.perf_counter() - start:.1f} s")
    cases = {"report": ["report", str(folder)],
             "report --stats": ["report", str(folder), "--stats"],
             "report --baseline (bootstrap)": ["report", str(folder), "--baseline", "method.name=full"],
             "report --html": ["report", str(folder), "--html", str(tmp / "report.html")]}
    if smoke:  # the CLI paths the cache touches, at the least cost
        cases = {name: cases[name] for name in ("report", "report --baseline (bootstrap)")}
    for cache in ("cold", "warm"):
        env = {**os.environ, "PEFTBENCH_CACHE": str(tmp / f"cache-{count}"),
               "PEFTBENCH_REPORT_CACHE": "0" if cache == "cold" else "1"}
        if cache == "warm":  # fill the cache once
            for command in cases.values():
                time_command(command, 1, env)
        for name, command in cases.items():
            seconds = time_command(command, repetitions, env)
            print(f"{name:<31} {cache:<5} {count:>6} records: median {statistics.median(seconds):6.2f} s "
                  f"(min {min(seconds):.2f}, max {max(seconds):.2f}, {repetitions} runs)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs="+", default=[3000, 10000])
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="40 records, 1 repetition, two of the commands")
    args = parser.parse_args()
    counts, repetitions = ([40], 1) if args.smoke else (args.records, args.repetitions)
    with tempfile.TemporaryDirectory() as tmp:
        for count in counts:
            measure(count, repetitions, Path(tmp), args.smoke)


if __name__ == "__main__":
    main()
