"""Benchmark: time from `peftbench run` to the first finished training step, on a
second run of the same config (tokenised data cached), minus model loading.

Runs the real CLI twice in fresh processes and reads the records. Goal: < 2 s
plus model loading. For scale it also times what any Hugging Face training script
pays before its first step (importing torch and transformers), and
prints peftbench's own share: start -> first step, minus model loading, minus that
import floor. Last, the imports a run makes (torch, transformers' BERT, peft) under
CPython's default cycle-collector thresholds and under the ones every peftbench
process sets (collector.tune_collection), alternating, and their ratio. And the plugin index
(peftbench/components/index.py): a fresh process that resolves a run's method, task and backbone
(what `peftbench run` does before it imports torch) with the index kept (only the plugins the run
names are imported) and without it (the first start after an install: every plugin imported),
alternating, and their ratio.

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
    parser.add_argument("--smoke", action="store_true", help="a small subset of the sample: checks it runs (CI)")
    args = parser.parse_args()
    subset = ["--set", "per_category=10", "--set", "max_length=32"] if args.smoke else ["--set", "max_length=128"]

    with tempfile.TemporaryDirectory() as results:
        command = [sys.executable, "-m", "peftbench.cli", "run", "--method", args.method, "--task", "livedoor-news",
                   "--backbone", args.backbone, "--results", results, "--quiet",
                   "--set", f"data_dir={args.data}", *subset, "--set", "epochs=1",
                   "--set", "inference_repeats=0", "--set", "save_artifact=false", "--force"]
        rows = []
        # The smoke runs one attempt: the second runs the same code on a warm cache.
        for attempt in ("first (encodes)",) if args.smoke else ("first (encodes)", "second (cached)"):
            subprocess.run(command, check=True)
            records = sorted(Path(results).glob("*/record.json"), key=lambda p: p.stat().st_mtime)
            t = json.loads(records[-1].read_text())["time"]
            rows.append((attempt, t["startup_marks"], t["model_load_seconds"]))
    for attempt, marks, load in rows:
        steps = " -> ".join(f"{name} {at:.2f}s" for name, at in marks.items())
        print(f"{attempt}: seconds since process start: {steps}")
    marks, load = rows[-1][1], rows[-1][2]
    total = marks["first_step_started"]
    imports = marks["run_started"]
    print(f"\n{rows[-1][0].split()[0]} run: process start -> first training step {total:.2f}s = interpreter + imports "
          f"{imports:.2f}s + model loading {load:.2f}s + peftbench's own setup (data, model wrap, "
          f"loaders) {total - imports - load:.2f}s")
    print(f"start -> first step minus model loading: {total - load:.2f}s (goal < 2 s)")
    # The smoke times a light import instead: seconds of CPU per process, and nothing to learn from.
    floor_code, run_imports, repeats = ("import json", "import json", 1) if args.smoke else (FLOOR, RUN_IMPORTS, 3)
    floor = min(_seconds(floor_code) for _ in range(repeats))
    print(f"import floor: `python -c '{floor_code}'` takes {floor:.2f}s here (best of {repeats}; any Hugging Face "
          f"training script pays it)\npeftbench's own share: {total - load - floor:.2f}s")
    print_collector_comparison(run_imports, repeats=1 if args.smoke else 5)
    print_plugin_index_comparison(args, repeats=1 if args.smoke else 7)


FLOOR = "import torch, transformers"  # transformers' model classes load lazily: model loading counts them
RUN_IMPORTS = "import torch, transformers.models.bert.modeling_bert, peft"  # what a LoRA run on BERT imports


def _seconds(code: str) -> float:
    import time

    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def print_collector_comparison(run_imports: str, repeats: int) -> None:
    """A run's imports under CPython's default young-generation threshold (this script never changes
    it) and under peftbench's (collector.tune_collection), in turn; the ratio is taken pair by pair, as the
    machine's speed drifts."""
    import gc
    import statistics

    from peftbench.collector import COLLECT_YOUNG_EVERY as ours

    default = gc.get_threshold()[0]
    pairs = [(_seconds(f"import gc; gc.set_threshold({ours}); {run_imports}"),
              _seconds(f"import gc; gc.set_threshold({default}); {run_imports}")) for _ in range(repeats)]
    print(f"a run's imports (`{run_imports}`), median of {repeats} alternating pairs: collector threshold "
          f"{ours} {statistics.median(p[0] for p in pairs):.2f}s, CPython's default {default} "
          f"{statistics.median(p[1] for p in pairs):.2f}s, ratio {statistics.median(a / b for a, b in pairs):.3f}")


def print_plugin_index_comparison(args: argparse.Namespace, repeats: int) -> None:
    """The run's components resolved with the plugin index kept and removed, in turn, in a cache of
    its own (its catalogues warmed by a first call)."""
    import os
    import shutil
    import statistics
    import time

    from peftbench.records.files import cache_root

    with tempfile.TemporaryDirectory() as cache:
        for name in os.listdir(cache_root()) if cache_root().exists() else ():  # peft's catalogue, parsed data
            if name.endswith(".json"):
                shutil.copy(cache_root() / name, Path(cache) / name)
        env = dict(os.environ, PEFTBENCH_CACHE=cache)
        command = [sys.executable, "-c", "from peftbench.components import plugins; c = plugins.load(); "
                   f"c.resolve_method({args.method!r}); c.tasks.get('livedoor-news'); c.resolve_backbone({args.backbone!r})"]

        def seconds(keep_index: bool) -> float:
            if not keep_index:
                shutil.rmtree(Path(cache) / "plugin-index", ignore_errors=True)
            start = time.perf_counter()
            subprocess.run(command, check=True, env=env, capture_output=True)
            return time.perf_counter() - start

        seconds(True)  # warms the catalogues and writes the index
        pairs = [(seconds(True), seconds(False)) for _ in range(repeats)]
    print(f"{args.method}, livedoor-news and {args.backbone} resolved in a fresh process, median of {repeats} alternating "
          f"pairs: plugin index "
          f"kept {statistics.median(p[0] for p in pairs):.2f}s, every plugin imported "
          f"{statistics.median(p[1] for p in pairs):.2f}s, ratio {statistics.median(a / b for a, b in pairs):.3f}")


if __name__ == "__main__":
    main()
