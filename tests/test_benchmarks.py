"""Every benchmark script runs in its smoke mode (seconds, tiny subsets), so an API change that
breaks one fails CI instead of surfacing when someone tries to reproduce a figure. Their
figures come from the full modes (benchmarks/README.md), never from here.

Most of a smoke run is starting Python and importing torch, one core's work: the scripts run
two at a time (this machine has two cores), the one that parses KWDLC first so the others find
its parse in the session's cache."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import SHARED_DATA, corpus_or_skip
from peftbench.records import record as records

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def smoke_commands(tmp: Path) -> dict[str, tuple[list[str], dict[str, str]]]:
    """name -> (command, extra environment), in the order they start."""
    kwdlc, textgcn = SHARED_DATA / "kwdlc", SHARED_DATA / "textgcn"
    return {
        "s1-kwdlc-tapt-lora.sh": (["bash", "benchmarks/s1-kwdlc-tapt-lora.sh"],
                                  {"SMOKE": "1", "KWDLC": str(kwdlc), "RESULTS": str(tmp / "s1")}),
        "s4-title2article-cpu.sh": (["bash", "benchmarks/s4-title2article-cpu.sh"],
                                    {"SMOKE": "1", "OUT": str(tmp / "s4")}),
        "overhead.py": ([sys.executable, "benchmarks/overhead.py", "--smoke"], {}),
        "startup.py": ([sys.executable, "benchmarks/startup.py", "--smoke"], {}),
        "s5-r8-cpu.sh": (["bash", "benchmarks/s5-r8-cpu.sh"],
                         {"SMOKE": "1", "DATA": str(textgcn), "OUT": str(tmp / "s5")}),
        "ner_padding.py": ([sys.executable, "benchmarks/ner_padding.py", "--smoke", "--data", str(kwdlc)], {}),
        "gpu.py": ([sys.executable, "benchmarks/gpu.py", "--smoke"], {}),
        "memory_table.py": ([sys.executable, "benchmarks/memory_table.py", "--smoke"], {}),
        "report_speed.py": ([sys.executable, "benchmarks/report_speed.py", "--smoke"], {}),
        "executors.py": ([sys.executable, "benchmarks/executors.py", "--smoke"], {}),
        "suite_overhead.py": ([sys.executable, "benchmarks/suite_overhead.py", "--smoke"], {}),
        "pruning.py": ([sys.executable, "benchmarks/pruning.py", "--smoke"], {}),
        "method_zoo.py": ([sys.executable, "benchmarks/method_zoo.py", "--smoke"], {}),
        "gsm8k_suite.py": ([sys.executable, "benchmarks/gsm8k_suite.py", "--smoke", "--results",
                            str(tmp / "gsm8k")], {}),
        "tiny_llama.py": ([sys.executable, "benchmarks/tiny_llama.py", "--smoke"], {}),
        "packing.py": ([sys.executable, "benchmarks/packing.py", "--smoke", "--data", str(SHARED_DATA / "livedoor")],
                       {}),
        "vs_trainer.py": ([sys.executable, "benchmarks/vs_trainer.py", "--smoke", "--kwdlc", str(kwdlc)], {}),
        "vs_trl.py": ([sys.executable, "benchmarks/vs_trl.py", "--smoke"], {}),
        "scratch-vs-minilm.sh": (["bash", "benchmarks/scratch-vs-minilm.sh"],
                                 {"SMOKE": "1", "PEFTBENCH_DATA": str(SHARED_DATA), "RESULTS": str(tmp / "sv"),
                                  "BUILT": str(tmp / "built")}),
    }


@pytest.fixture(scope="module")
def smoked(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    for corpus in ("kwdlc", "textgcn", "livedoor"):
        corpus_or_skip(corpus)
    tmp = tmp_path_factory.mktemp("benchmarks")
    base = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHON": sys.executable,
            "PEFTBENCH": str(BIN / "peftbench"), "HF_HUB_OFFLINE": "1",
            "PEFTBENCH_CACHE": str(tmp_path_factory.getbasetemp() / "cache")}

    def run(item: tuple[str, tuple[list[str], dict[str, str]]]) -> tuple[str, subprocess.CompletedProcess]:
        name, (command, env) = item
        return name, subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=500,
                                    env={**base, **env})

    with ThreadPoolExecutor(max_workers=2) as pool:
        return {**dict(pool.map(run, smoke_commands(tmp).items())), "folder": tmp}


def output(smoked: dict[str, subprocess.CompletedProcess], name: str) -> str:
    done = smoked[name]
    assert done.returncode == 0, f"{name}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_every_script_has_a_smoke_test(tmp_path):
    scripts = {p.name for p in (REPO / "benchmarks").iterdir() if p.suffix in (".py", ".sh")}
    tested = set(smoke_commands(tmp_path)) | {"s4_tiny_backbones.py", "s5_corpus.py"}  # run by others
    assert scripts == tested, f"add a smoke test for {sorted(scripts - tested)}"


def test_overhead_smoke(smoked):
    assert "median ratio peftbench/plain" in output(smoked, "overhead.py")


def test_startup_smoke(smoked):
    assert "start -> first step minus model loading" in output(smoked, "startup.py")
    assert re.search(r"plugin index kept \d+\.\d+s, every plugin imported \d+\.\d+s, ratio \d", output(smoked, "startup.py"))


def test_gpu_script_smoke_falls_back_to_cpu(smoked):
    shown = output(smoked, "gpu.py")
    assert "bf16 autocast | skipped: no CUDA device" in shown and "GPU peaks skipped" in shown
    assert "lora: inference over" in shown and "(merged)" in shown and "tokens/s" in shown
    # The decoder table: the prediction beside the step traced on the CPU, with and without checkpointing.
    rows = {row.split(" | ")[0].strip("| "): row.split(" | ") for row in shown.splitlines() if row.startswith("| lora")}
    assert "(traced)" in rows["lora"][2] and "ms a batch" in rows["lora"][4]
    assert float(rows["lora + checkpointing"][1].split()[0]) < float(rows["lora"][1].split()[0])


def test_memory_table_smoke_predicts_that_checkpointing_cuts_the_peak(smoked):
    rows = [row.split(" | ") for row in output(smoked, "memory_table.py").splitlines()
            if row.startswith("| Qwen/Qwen2.5-0.5B")]
    assert [row[1] for row in rows] == ["LoRA r=8", "LoRA r=8 + checkpointing"]
    assert float(rows[1][2].split()[0]) < float(rows[0][2].split()[0]) and rows[0][4] == "fits"


def test_vs_trl_smoke_trains_the_same_batches_to_the_same_loss(smoked):
    shown = output(smoked, "vs_trl.py")
    assert "per-step time ratio peftbench/TRL (median of pairs):" in shown
    difference = float(shown.split("relative difference ")[1].split("%")[0])
    assert difference < 1.0  # percent: the same tokens, order, batches and optimizer give the same loss


def test_report_speed_smoke(smoked):
    shown = output(smoked, "report_speed.py")
    assert "wrote 40 records" in shown
    for cache in ("cold", "warm"):
        assert f"report --baseline (bootstrap)   {cache}      40 records: median" in shown, shown


def test_executors_smoke(smoked):
    shown = output(smoked, "executors.py")  # the local executor: suite_overhead.py's smoke
    assert "--executor slurm  1 runs:" in shown, shown


def test_suite_overhead_smoke_measures_both_paths(smoked):
    shown = output(smoked, "suite_overhead.py")
    for name in ("warm workers", "one process per run"):
        line = next(line for line in shown.splitlines() if line.startswith(name))
        wall, train = (float(part.split()[0]) for part in line.split(":")[1].split("/"))
        assert "1 runs" in line and 0 < train < wall, line  # the suite's wall holds its runs' training
    assert "overhead ratio, warm workers / one process per run:" in shown


def test_pruning_smoke_runs_one_study_with_and_without_pruning(smoked):
    shown = output(smoked, "pruning.py")
    lines = {pruner: next(line for line in shown.splitlines() if line.startswith(f"pruner {pruner}"))
             for pruner in ("median", "none")}
    assert "2 trials (0 pruned), 4 trial epochs" in lines["none"], lines  # no pruner: every trial's 2 epochs
    assert "chosen lr=" in lines["median"] and "trial epochs, median / none:" in shown


def test_gsm8k_suite_smoke_tunes_runs_and_reports_on_a_tiny_llama(smoked):
    from peftbench.components.installed import is_installed

    shown = output(smoked, "gsm8k_suite.py")
    finals = 3 if is_installed("bitsandbytes") else 2  # QLoRA where the extra quant is installed
    assert f"suite finished: {finals} finals succeeded, 0 failed" in shown, shown
    rows = [line for line in shown.splitlines() if line.startswith(("| lora ", "| prompt-tuning "))]
    assert len(rows) == finals and "test exact_match" in shown and "vs majority floor" in shown


def test_packing_smoke_trains_padded_grouped_and_packed_alike(smoked):
    shown = output(smoked, "packing.py")
    packed = next(line for line in shown.splitlines() if line.startswith("packed "))
    drift = float(packed.rsplit("difference", 1)[1])
    assert drift < 1e-3 and "packed / padded s/epoch:" in shown, shown  # the same loss, padding gone


def test_tiny_llama_smoke_builds_loads_and_generates(smoked):
    assert "generated 4 tokens" in output(smoked, "tiny_llama.py")


def test_method_zoo_smoke(smoked):
    shown = output(smoked, "method_zoo.py")
    assert "suite finished: 2 succeeded, 0 failed" in shown
    from peftbench.components.installed import is_installed

    assert "| lora " in shown and ("| adapters-compacter " if is_installed("adapters") else "| vera ") in shown
    lora = next(line for line in shown.splitlines() if line.startswith("| lora "))
    cells = [cell.strip() for cell in lora.strip("|").split("|")]
    assert cells[1:3] == ["r", "8"] and cells[4] == "73,728"  # sized to the budget: its adapter parameters


def test_vs_trainer_smoke(smoked):
    shown = output(smoked, "vs_trainer.py")
    versus, compiled = [line for line in shown.splitlines() if line.startswith("| kwdlc-lora")]
    assert versus.count("|") == 7, shown  # peftbench / Trainer: s/epoch and wall ratios, step minima, scores
    assert compiled.count("|") == 6 and float(compiled.split("|")[3]) > 0, shown  # compile: ratio, seconds, scores


def test_ner_padding_smoke(smoked):
    shown = output(smoked, "ner_padding.py")
    assert "epoch time ratio dynamic/padded" in shown and "merged LoRA / full FT latency ratio" in shown


def test_s1_script_smoke_three_methods_on_kwdlc(smoked):
    """Full, LoRA and TAPT+LoRA on a KWDLC subset with the offline MiniLM: entity F1 is seqeval's on
    the saved predictions, and the record says MiniLM's MLM head was newly initialised."""
    from seqeval.metrics import f1_score
    from seqeval.scheme import IOB2

    shown = output(smoked, "s1-kwdlc-tapt-lora.sh")
    assert shown.count("| ") > 10 and "tapt-lora" in shown
    found = {r["method"]["name"]: (p, r) for p, r in records.iter_records(smoked["folder"] / "s1")}
    assert set(found) == {"full", "lora", "tapt-lora"}
    for path, record in found.values():
        saved = json.loads((path.parent / records.PREDICTIONS_FILE).read_text())["test"]
        assert record["scores"]["test"]["f1"] == pytest.approx(
            f1_score(saved["references"], saved["predictions"], mode="strict", scheme=IOB2, zero_division=0))
    new_in_tapt = found["tapt-lora"][1]["stages"]["tapt"]["backbone"]["newly_initialized"]
    assert any(key.startswith("cls.predictions") for key in new_in_tapt)


def test_s4_script_and_tiny_backbones_smoke(smoked):
    shown = output(smoked, "s4-title2article-cpu.sh")
    assert "tiny-t5" in shown and "chrF" in shown and "sheet.csv" in shown


def test_s5_script_and_corpus_smoke(smoked):
    shown = output(smoked, "s5-r8-cpu.sh")
    assert "wrote 40 training documents" in shown and "21 runs" in shown and "mtl-ngram" in shown


def test_scratch_vs_minilm_smoke(smoked):
    shown = output(smoked, "scratch-vs-minilm.sh")
    assert "scratch-ja" in shown and "built" in shown
