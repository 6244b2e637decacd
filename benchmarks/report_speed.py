"""How long `peftbench report` takes over many run records (goal: 2,000 records in under 3 s).

Writes synthetic records (tests/synthetic.py: a real record with its method, seed and settings
varied, and per-example predictions) into a temporary folder, then times the CLI end to end in a
fresh process, the Python start included: the default table, and the table with a seed-level
comparison against a baseline (`--test t`; the example-level tests cost what their resamples cost,
see the note printed at the end).

    python benchmarks/report_speed.py                # 2,000 records, 3 repetitions
    python benchmarks/report_speed.py --smoke        # 40 records, 1 repetition (CI)
"""

from __future__ import annotations

import argparse
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


def time_command(args: list[str], repetitions: int) -> list[float]:
    seconds = []
    for _ in range(repetitions):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "peftbench.cli", *args], capture_output=True, text=True)
        seconds.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"peftbench {' '.join(args)} failed:\n{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="40 records, 1 repetition")
    args = parser.parse_args()
    count, repetitions = (40, 1) if args.smoke else (args.records, args.repetitions)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "results"
        start = time.perf_counter()
        write_records(folder, count)
        print(f"wrote {count} records in {time.perf_counter() - start:.1f} s")
        cases = {"report": ["report", str(folder)],
                 "report --baseline (t over seeds)": ["report", str(folder), "--baseline",
                                                      "method.name=full", "--test", "t"]}
        for name, command in cases.items():
            seconds = time_command(command, repetitions)
            print(f"{name:<34} {count} records: median {statistics.median(seconds):.2f} s "
                  f"(min {min(seconds):.2f}, max {max(seconds):.2f}, {repetitions} runs)")


if __name__ == "__main__":
    main()
