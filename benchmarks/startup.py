"""Benchmark: time from `peftbench run` to the first finished training step, on a
second run of the same config (tokenised data cached), minus model loading.

Runs the real CLI twice in fresh processes and reads the records. Goal: < 3 s
plus model loading.

    python benchmarks/startup.py            # MiniLM-L6 + LoRA on the livedoor sample
    python benchmarks/startup.py --data ../shared/data/livedoor   # full corpus (7,367 files)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="minilm-l6")
    parser.add_argument("--method", default="lora")
    parser.add_argument("--data", default=str(REPO / "examples" / "livedoor-sample"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as results:
        command = [sys.executable, "-m", "peftbench.cli", "run", "--method", args.method, "--task", "livedoor-news",
                   "--backbone", args.backbone, "--results", results, "--quiet",
                   "--set", f"data_dir={args.data}", "--set", "max_length=128", "--set", "epochs=1",
                   "--set", "inference_repeats=0", "--set", "save_artifact=false"]
        rows = []
        for attempt in ("first (encodes)", "second (cached)"):
            subprocess.run(command, check=True)
            records = sorted(Path(results).glob("*/record.json"), key=lambda p: p.stat().st_mtime)
            t = json.loads(records[-1].read_text())["time"]
            rows.append((attempt, t["process_start_to_first_step_seconds"], t["model_load_seconds"]))
    for attempt, first_step, load in rows:
        print(f"{attempt}: process start -> first step done {first_step:.2f}s, of which model loading "
              f"{load:.2f}s; without model loading {first_step - load:.2f}s")
    print(f"second run, start -> first step minus model loading: {rows[1][1] - rows[1][2]:.2f}s (goal < 3 s)")


if __name__ == "__main__":
    main()
