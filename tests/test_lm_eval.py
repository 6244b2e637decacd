"""lm-evaluation-harness on peftbench's runs (`peftbench lm-eval`): the base loaded once, each run's model
put on it, lm-eval's per-sample log kept beside the run, and reports over lm-eval's values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peftbench.records import record as records

pytest.importorskip("lm_eval")

MR = Path(__file__).resolve().parents[2] / "shared" / "data" / "textgcn"


@pytest.fixture(scope="module")
def evaluated(tiny_llama, tmp_path_factory):
    """A zero-shot run and a LoRA run of MR as generation on the tiny Llama, then `peftbench lm-eval`."""
    import subprocess
    import sys

    if not (MR / "mr.txt").exists():
        pytest.skip("the shared MR corpus is not beside the repository")
    results = tmp_path_factory.mktemp("lm-eval") / "results"
    common = ["--task", "mr", "--backbone", str(tiny_llama), "--results", str(results), "--set", "seed=1"]
    for key, value in {"data_dir": MR, "train_per_class": 12, "test_per_class": 15, "as_generation": "true",
                       "max_length": 400, "epochs": 1, "save_artifact": "true", "inference_repeats": 0}.items():
        common += ["--set", f"{key}={value}"]
    for method in ("zero-shot", "lora"):
        done = subprocess.run([sys.executable, "-m", "peftbench.cli", "run", "--method", method, *common],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    scored = subprocess.run([sys.executable, "-m", "peftbench.cli", "lm-eval", str(results), "--tasks", "peftbench_mr"],
                            capture_output=True, text=True, timeout=300)
    assert scored.returncode == 0, scored.stderr[-3000:]
    return results, scored.stdout


def _runs(results: Path) -> dict[str, Path]:
    return {record["method"]["name"]: path.parent for path, record in records.iter_records(results)
            if record["config"]["task"] == "mr"}


def test_lm_eval_scores_each_run_like_peftbench_does(evaluated):
    """Fidelity: lm-eval's acc through the local task YAML, on the examples the run was tested on, gives
    the same per-sample answers and log-likelihoods as peftbench's own label-word ranking."""
    results, stdout = evaluated
    assert "base loaded once for 2 run(s)" in stdout
    for method, run in _runs(results).items():
        own = json.loads((run / "predictions.json").read_text(encoding="utf-8"))["test"]
        folder = run / "lm-eval" / "peftbench_mr"
        samples = sorted((json.loads(line) for line in (folder / "samples.jsonl").read_text(encoding="utf-8")
                          .splitlines()), key=lambda s: s["doc_id"])
        assert [s["doc"]["id"] for s in samples] == own["ids"]  # the run's own test split, in its order
        assert [s["target"] for s in samples] == own["references"]
        for sample, prediction in zip(samples, own["predictions"]):
            lm_eval_ll = [response[0][0] for response in sample["resps"]]
            assert lm_eval_ll == pytest.approx(prediction["loglik"], abs=1e-4), method
            assert sample["acc"] == float(prediction["label"] == sample["target"])
        record = json.loads((run / "record.json").read_text(encoding="utf-8"))
        described = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        assert described["results"]["acc,none"] == pytest.approx(record["scores"]["test"]["accuracy"])
        assert described["lm_eval_version"] and described["task_hash"]
        assert described["evaluated"] == ("base" if method == "zero-shot" else "adapter")


def test_a_report_compares_runs_on_lm_evals_samples(evaluated, cli):
    results, _ = evaluated
    report = cli("report", str(results), "--task", "lm-eval/peftbench_mr", "--baseline", "method.name=zero-shot",
                 "--test", "mcnemar")
    assert report.code == 0, report.stderr
    assert "lm-eval/peftbench_mr" in report.stdout and "p (mcnemar)" in report.stdout, report.stdout
    derived = [r for _, r in records.iter_records(results) if r["config"]["task"] == "lm-eval"]
    assert len(derived) == 2 and all(r["config"]["task_config"]["task"] == "peftbench_mr" for r in derived)


def test_bad_options_are_one_line_before_any_model_loads(evaluated, cli, tmp_path):
    results, _ = evaluated
    bad_limit = cli("lm-eval", str(results), "--tasks", "peftbench_mr", "--limit", "0")
    assert bad_limit.code == 1 and "limit must be a positive number" in bad_limit.stderr
    no_folder = cli("lm-eval", str(results), "--tasks", "peftbench_mr", "--include-path", str(tmp_path / "nope"))
    assert no_folder.code == 1 and "is not a folder" in no_folder.stderr


def test_a_merged_adapter_is_checked_against_the_unmerged_one(evaluated):
    """A mergeable adapter on a causal LM: the test split is predicted again merged; the record says how
    many label-word choices and greedy answers stayed the same, and which did not."""
    results, _ = evaluated
    record = json.loads((_runs(results)["lora"] / "record.json").read_text(encoding="utf-8"))
    merged = record["inference"]["merged"]
    assert merged["examples"] == 30 and 0.9 <= merged["agreement"] <= 1
    assert len(merged["changed"]) == round((1 - merged["agreement"]) * 30)


def test_the_report_says_where_merging_changed_a_prediction():
    import pandas as pd

    from peftbench.results.notes import merge_notes

    group = pd.DataFrame([{"method.name": "ia3", "config.train.seed": 1, "inference.merged.agreement": 0.95,
                           "inference.merged.examples": 40},
                          {"method.name": "ia3", "config.train.seed": 2, "inference.merged.agreement": 1.0,
                           "inference.merged.examples": 40}])
    (note,) = merge_notes([group], [])
    assert "seed 1: 2 of 40 test predictions differ merged vs unmerged" in note


def test_what_a_run_puts_on_the_base_is_read_from_its_artefact(tmp_path):
    from peftbench.errors import ConfigError
    from peftbench_plugins.commands.lm_eval import what_it_is

    def run(name, files=(), **artifact):
        folder = tmp_path / name
        for file in files:
            (folder / "artifact").mkdir(parents=True, exist_ok=True)
            (folder / "artifact" / file).write_text("{}", encoding="utf-8")
        return folder, {"run_id": name, "method": {"name": name}, "artifact": {"tensor_bytes": 1, **artifact}}

    assert what_it_is(*run("lora", ["adapter_config.json"])) == "adapter"
    assert what_it_is(*run("full", ["config.json", "model.safetensors"])) == "model"
    assert what_it_is(*run("zero-shot", tensor_bytes=0)) == "base"
    for name, files, artifact, message in [
            ("shared", [], {"path": "shared/artifact"}, "artefact folder is gone"),
            ("unsaved", [], {}, r"kept no artefact \(save_artifact = false\)"),
            ("bitfit", ["bias.safetensors"], {}, "neither a peft adapter nor a whole model")]:
        with pytest.raises(ConfigError, match=message):
            what_it_is(*run(name, files, **artifact))


def suite_with_lm_eval(tmp_path: Path, tiny_llama: Path, stage: str) -> Path:
    path = tmp_path / "suite.toml"
    path.write_text(f"""description = "zero-shot, then lm-eval"
[defaults]
task = "mr"
backbone = "{tiny_llama}"
seeds = [1]
[defaults.set]
data_dir = "{MR}"
train_per_class = 8
test_per_class = 6
as_generation = true
max_length = 400
inference_repeats = 0
[[runs]]
method = "zero-shot"
{stage}
""", encoding="utf-8")
    return path


def test_a_suite_scores_its_runs_with_lm_eval_when_they_succeeded(tiny_llama, tmp_path, cli):
    if not (MR / "mr.txt").exists():
        pytest.skip("the shared MR corpus is not beside the repository")
    path, results = suite_with_lm_eval(tmp_path, tiny_llama, '[lm_eval]\ntasks = ["peftbench_mr"]'), tmp_path / "r"
    done = cli("suite", "run", str(path), "--results", str(results))
    assert done.code == 0, done.stderr
    assert "stage [lm_eval]" in done.stdout and "base loaded once for 1 run(s)" in done.stdout
    (derived,) = [r for _, r in records.iter_records(results) if r["config"]["task"] == "lm-eval"]
    assert derived["scores"]["test"]["acc"] == pytest.approx(
        next(r for _, r in records.iter_records(results) if r["config"]["task"] == "mr")["scores"]["test"]["accuracy"])
    again = cli("suite", "run", str(path), "--results", str(results))  # resumed: nothing trains or scores again
    assert again.code == 0 and "already scored by lm-eval on peftbench_mr" in again.stdout


@pytest.mark.parametrize(("stage", "message"), [
    ('[lm_eval]\ntasks = "peftbench_mr"', r"\[lm_eval\]: tasks must be a list of lm-eval task names"),
    ('[lm_eval]\ntasks = ["peftbench_mr"]\nlimit = 0', r"\[lm_eval\]: limit must be a positive number"),
    ('[lm_eval]\ntask = ["peftbench_mr"]', r"\[lm_eval\]: unknown key 'task'"),
    ('[lm_evall]\ntasks = ["peftbench_mr"]', r"lm_evall: unknown key"),
])
def test_a_bad_lm_eval_table_is_refused_with_the_plan(tiny_llama, tmp_path, cli, stage, message):
    import re

    refused = cli("suite", "run", str(suite_with_lm_eval(tmp_path, tiny_llama, stage)), "--dry-run")
    assert refused.code == 1 and re.search(message, refused.stderr), refused.stderr


def test_a_task_scored_only_as_a_whole_is_one_line_not_a_traceback():
    """lm-eval's f1 / mcc log a (gold, prediction) pair per document and aggregate them at once: no
    per-document number to pair, so such a task is refused by name."""
    from peftbench.errors import ConfigError
    from peftbench_plugins.commands.lm_eval import _per_sample_metrics

    described = {"task": "some_f1_task", "config": {"metric_list": [{"metric": "f1", "aggregation": "f1"},
                                                                     {"metric": "acc"}]}}
    samples = [{"doc_id": 0, "f1": [1, 0], "acc": 1.0}, {"doc_id": 1, "f1": [0, 0], "acc": 0.0}]
    assert _per_sample_metrics(described, samples) == ["acc"]
    described["config"]["metric_list"] = [{"metric": "f1", "aggregation": "f1"}]
    with pytest.raises(ConfigError, match="'some_f1_task' has no metric that is a mean over documents"):
        _per_sample_metrics(described, samples)
