"""The method zoo: every registered (non-composed) method on the embedded livedoor sample with MiniLM-L6,
sized to one parameter budget where the method has a size setting (its defaults otherwise).

Writes a suite file (one [[runs]] block per method, with `match_params` where the budget is
reachable), runs it with `peftbench suite run` (resumable: rerun the same command after a stop;
failures are recorded and the suite goes on), then prints the comparison table
(`peftbench report`), what failed and why, and writes the Pareto plots.

    python benchmarks/method_zoo.py --results results/zoo            # all methods x 3 seeds (hours on 2 cores)
    python benchmarks/method_zoo.py --results results/zoo --max-length 128 --epochs 3   # a GPU's scale
    python benchmarks/method_zoo.py --results results/zoo --methods lora,ia3,vera --seeds 1
    python benchmarks/method_zoo.py --smoke                           # 2 methods, 1 seed, tiny subset (CI)

The budget defaults to LoRA r=8 on query/value of MiniLM-L6 (73,728 adapter parameters; the
task head, the same for every method, is not counted).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUDGET = 73_728
COMPOSED = ("mtl-", "tapt-")  # wrappers around other methods: the zoo runs the methods themselves
# What a user sets for MiniLM's 384-wide layers where a default cannot apply (refused otherwise):
# LN tuning has no default targets for BERT; VB-LoRA's vectors and C3A's blocks must divide 384.
SETTINGS = {"ln-tuning": {"target_modules": "LayerNorm"}, "vblora": {"vector_length": 128},
            "c3a": {"block_size": 128}}


def methods(components) -> list[str]:
    """Every base method whose libraries are installed (AdapterHub's need the extra `adapters`)."""
    from peftbench.components.installed import missing_libraries

    names = sorted(e.name for e in components.methods if not e.name.startswith(COMPOSED))
    absent = [n for n in names if missing_libraries(components.methods.get(n))]
    if absent:
        print(f"left out {len(absent)} methods whose libraries are not installed: {', '.join(absent)}")
    return [n for n in names if n not in absent]


def smoke_methods() -> list[str]:
    """One method from each library: peft's LoRA, and AdapterHub's Compacter where its extra is installed."""
    from peftbench.components.installed import is_installed

    return ["lora", "adapters-compacter" if is_installed("adapters") else "vera"]


def run_blocks(components, names: list[str], budget: int, sets: list[str]) -> tuple[list[str], list[str]]:
    """Suite blocks per method, and a note per method the budget could not size (run at defaults)."""
    from peftbench.errors import PeftbenchError
    from peftbench.run.counting import match_params

    blocks, notes = [], []
    for name in names:
        method = components.resolve_method(name)
        own = SETTINGS.get(name, {})
        block = f'[[runs]]\nmethod = "{name}"\n'
        if method.capacity is not None:
            try:
                match_params(components, name, "livedoor-news", "minilm-l6",
                             [*sets, *(f"{k}={v}" for k, v in own.items())], budget)
                block += f"match_params = {budget}\n"
            except PeftbenchError as exc:
                notes.append(f"{name}: run at its defaults ({exc.what})")
        if own:
            block += "[runs.set]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in own.items())  # TOML values
        blocks.append(block)
    return blocks, notes


def suite_text(blocks: list[str], seeds: list[int], smoke: bool, max_length: int, epochs: int) -> str:
    size = "per_category = 10\nmax_length = 16\nepochs = 1\ninference_repeats = 0" if smoke else \
        f"max_length = {max_length}\nepochs = {epochs}\ninference_repeats = 1\ninference_split = \"dev\""
    return (f'description = "method zoo: livedoor sample, MiniLM-L6, one parameter budget"\n'
            f'[defaults]\ntask = "livedoor-news"\nbackbone = "minilm-l6"\nseeds = {seeds}\n'
            f'[defaults.set]\ndata_dir = "{REPO / "examples" / "livedoor-sample"}"\nbatch_size = 16\n{size}\n\n'
            + "\n".join(blocks))


def main() -> None:
    from peftbench.components import plugins
    from peftbench.records import record as records

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=None, help="run records (default: a temporary folder)")
    parser.add_argument("--methods", default=None, help="comma-separated (default: every non-composed method)")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--budget", type=int, default=BUDGET)
    # CPU-sized defaults (inference timed on the 36 dev articles): 74 methods x 3 seeds is ~1.5 h on 2 cores.
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--suite-args", default="", help='passed to `suite run`, e.g. "--executor ray --set workers=2"')
    parser.add_argument("--smoke", action="store_true", help="lora (peft) and adapters-compacter (adapters; vera where the extra is "
                        "not installed); 1 seed; tiny subset")
    args = parser.parse_args()
    components = plugins.load()
    names = smoke_methods() if args.smoke else \
        (args.methods.split(",") if args.methods else methods(components))
    seeds = [1] if args.smoke else [int(s) for s in args.seeds.split(",")]
    blocks, notes = run_blocks(components, names, args.budget, [f"data_dir={REPO / 'examples' / 'livedoor-sample'}"])
    with tempfile.TemporaryDirectory() as tmp:
        results = args.results or Path(tmp) / "results"
        results.mkdir(parents=True, exist_ok=True)
        suite = results / "zoo-suite.toml"
        suite.write_text(suite_text(blocks, seeds, args.smoke, args.max_length, args.epochs), encoding="utf-8")
        peftbench = [sys.executable, "-m", "peftbench"]
        # Not check=True: a method that cannot apply fails its runs, the suite goes on and exits 1,
        # and the table and the list of failures below are the point.
        subprocess.run([*peftbench, "suite", "run", str(suite), "--results", str(results), *args.suite_args.split()])
        subprocess.run([*peftbench, "report", str(results), "--table", "methods", "--plot", str(results / "plots")],
                       check=True)
        failed: dict[tuple[str, str], list[int]] = {}  # (method, error) -> seeds
        for _, r in records.iter_records(results):
            if r.get("status") == "failed":
                failed.setdefault((r["method"]["name"], r.get("error")), []).append(r["seed"])
    print(f"\n{len(names)} methods x {len(seeds)} seeds; budget {args.budget:,} adapter parameters")
    for note in notes:
        print(f"- {note}")
    for (name, error), failed_seeds in sorted(failed.items()):
        print(f"- FAILED {name} (seeds {', '.join(map(str, sorted(failed_seeds)))}): {error}")


if __name__ == "__main__":
    main()
