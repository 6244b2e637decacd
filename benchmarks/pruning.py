"""What pruning saves in tuning, and whether it changes the choice: the same tuned suite (one
study: LoRA on livedoor news, MiniLM-L6) with `pruner = "median"` and with `pruner = "none"`,
one after the other in one invocation, each into a fresh results folder. Printed per pruner: the
trials, how many were pruned, the trial epochs spent (epochs that reported a dev score to the
study), the settings chosen on dev and the final's test accuracy; then the epoch ratio and whether
the two choices agree.

The sampler is a seeded grid by default, so both studies try the same settings in the same order
and differ in pruning alone; `--sampler tpe` is how users tune (its later proposals then depend on
what was pruned).

    python benchmarks/pruning.py                   # 9 trials x 3 epochs; 100 articles per category of the
                                                   # shared corpus, title+body, max length 48, batch 16
    python benchmarks/pruning.py --sampler tpe --trials 12
    python benchmarks/pruning.py --smoke           # 2 trials x 2 epochs on a tiny subset (CI)
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
PRUNERS = ("median", "none")


def suite_text(pruner: str, args: argparse.Namespace) -> str:
    size = ("per_category = 10\nmax_length = 16\nbatch_size = 8\nepochs = 2" if args.smoke else
            "per_category = 100\ndev_fraction = 0.2\ntext = \"title+body\"\nmax_length = 48\nbatch_size = 16\n"
            "epochs = 3")
    return textwrap.dedent(f"""\
        description = "pruning benchmark ({pruner})"
        [defaults]
        task = "livedoor-news"
        backbone = "minilm-l6"
        seeds = [1]
        [defaults.set]
        data_dir = "{args.data}"
        inference_repeats = 0
        save_artifact = false
        """) + size + textwrap.dedent(f"""
        [tune]
        trials = {args.trials}
        sampler = "{args.sampler}"
        pruner = "{pruner}"
        parallel = 1
        [tune.space.lora]
        lr = {{low = 1e-5, high = 1e-2}}
        [[runs]]
        method = "lora"
        """)


def study_outcome(results: Path) -> dict:
    """The one study's trials, pruned trials, trial epochs and chosen settings, and the final's test score."""
    import optuna

    from peftbench.results.analysis import load_results

    storage = f"sqlite:///{results / 'tuning.db'}"
    name = optuna.get_all_study_summaries(storage)[0].study_name
    study = optuna.load_study(study_name=name, storage=storage)
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    finals = load_results(results)
    finals = finals[finals["scores.test.accuracy"].notna()]
    return {"trials": len(study.trials), "pruned": pruned,
            "epochs": sum(len(t.intermediate_values) for t in study.trials),
            "chosen": study.best_trial.params, "dev": study.best_value,
            "test": float(finals["scores.test.accuracy"].astype(float).mean())}


def run(pruner: str, args: argparse.Namespace, folder: Path) -> tuple[dict, float]:
    suite = folder / f"{pruner}.toml"
    suite.write_text(suite_text(pruner, args), encoding="utf-8")
    results = folder / f"results-{pruner}"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "peftbench.cli", "suite", "run", str(suite), "--results",
                           str(results)], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0 or "0 failed" not in done.stdout:
        raise SystemExit(f"pruner {pruner} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return study_outcome(results), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="2 trials x 2 epochs, tiny subset")
    parser.add_argument("--sampler", choices=("grid", "tpe", "random"), default="grid")
    parser.add_argument("--trials", type=int, default=None, help="default 9 (--smoke: 2)")
    parser.add_argument("--data", default=None, help="a livedoor folder (default: ../shared/data/livedoor where it "
                                                     "exists, else the sample; --smoke: the sample)")
    args = parser.parse_args()
    shared = REPO.parent / "shared" / "data" / "livedoor"
    args.data = args.data or (shared if shared.is_dir() and not args.smoke else REPO / "examples" / "livedoor-sample")
    args.trials = args.trials or (2 if args.smoke else 9)
    with tempfile.TemporaryDirectory() as tmp:
        outcomes = {pruner: run(pruner, args, Path(tmp)) for pruner in PRUNERS}
    for pruner, (outcome, wall) in outcomes.items():
        chosen = ", ".join(f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}"
                           for key, value in outcome["chosen"].items())
        print(f"pruner {pruner:<6} {outcome['trials']} trials ({outcome['pruned']} pruned), "
              f"{outcome['epochs']} trial epochs, chosen {chosen} (dev {outcome['dev']:.3f}), "
              f"final test accuracy {outcome['test']:.3f}, suite {wall:.0f} s")
    (median, _), (none, _) = outcomes["median"], outcomes["none"]
    print(f"trial epochs, median / none: {median['epochs'] / none['epochs']:.2f}; "
          f"chosen settings agree: {'yes' if median['chosen'] == none['chosen'] else 'no'}")


if __name__ == "__main__":
    main()
