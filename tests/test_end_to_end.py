"""Real runs through the CLI: tiny BERT from a config, the shipped livedoor sample."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sklearn.metrics import accuracy_score, f1_score

from peftbench.records import record as records

pytestmark = pytest.mark.smoke  # also run in .venv-adapters (transformers 4.57)

REPO = Path(__file__).resolve().parents[1]


def run_args(method: str, backbone: Path, data: Path, results: Path, *extra: str, epochs: int = 2) -> list[str]:
    return ["run", "--method", method, "--task", "livedoor-news", "--backbone", str(backbone),
            "--results", str(results), "--set", f"data_dir={data}", "--set", "per_category=10",
            "--set", "max_length=64", "--set", f"epochs={epochs}", "--set", "batch_size=8", "--quiet", *extra]


def only_record(results: Path) -> dict:
    (path, record), = list(records.iter_records(results))
    return record


@pytest.fixture(scope="module")
def two_runs(tiny_bert, tmp_path_factory):
    """full + lora on the same data: shared by the record/report tests below."""
    from peftbench.cli.entry import main

    results = tmp_path_factory.mktemp("results")
    sample = REPO / "examples" / "livedoor-sample"
    # S2's learning rates, so the runs also fill the S2 table layout.
    for method, extra in (("full", ["--set", "lr=5e-5"]), ("lora", ["--set", "r=4", "--set", "lr=5e-4"])):
        sys.argv = ["peftbench", *run_args(method, tiny_bert, sample, results, *extra)]
        with pytest.raises(SystemExit) as exit_info:
            main()
        assert exit_info.value.code in (0, None)
    return results


EVERY_FIELD = [
    "schema_version", "run_id", "status", "config", "config_hash", "method", "task", "backbone", "seed",
    "data", "scores", "params", "time", "memory", "artifact", "inference", "environment", "best_epoch",
]


def test_records_have_every_field(two_runs):
    found = {r["method"]["name"]: r for _, r in records.iter_records(two_runs)}
    assert set(found) == {"full", "lora"}
    # The same pre-trained weights, whatever head each run added: one fingerprint.
    assert len({r["backbone"]["info"]["fingerprint"] for r in found.values()}) == 1
    for record in found.values():
        assert record["status"] == "success" and record["error"] is None
        for key in EVERY_FIELD:
            assert record[key] is not None, key
        assert set(record["scores"]) == {"dev", "test"}
        assert set(record["scores"]["test"]) == {"accuracy", "macro_f1", "micro_f1"}
        assert len(record["time"]["epoch_seconds"]) == 2 and record["time"]["epoch_mean_seconds"] > 0
        assert record["memory"]["cpu_peak_rss_bytes"] > 0
        assert record["memory"]["cuda_max_allocated_bytes"] is None  # no GPU: null, never a made-up 0
        energy = record["energy"]  # RAPL where this user can read it, else null with the reason
        assert (energy["joules"] or 0) > 0 and energy["source"].startswith("rapl") or energy["error"]
        assert record["effective_batch_size"] == 8
        assert record["artifact"]["bytes"] > record["artifact"]["tensor_bytes"] > 0
        assert "safetensors" in record["artifact"]["format"] and "bin" not in record["artifact"]["format"]
        assert record["environment"]["packages"]["torch"]
        assert record["data"]["sizes"] == {"train": 36, "dev": 9, "test": 45}
        assert record["config"]["task_config"]["per_category"] == 10
        run_dir = Path(record["artifact"]["path"]).parent
        lines = (run_dir / records.EPOCHS_FILE).read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def test_parameter_split(two_runs):
    found = {r["method"]["name"]: r for _, r in records.iter_records(two_runs)}
    lora, full = found["lora"]["params"], found["full"]["params"]
    # tiny BERT: 2 layers x (query, value) x (32x4 + 4x32); head 32x9+9.
    assert lora["adapter"] == 2 * 2 * (32 * 4 + 4 * 32)
    assert lora["head"] == full["head"] == 32 * 9 + 9
    assert lora["backbone_trainable"] == 0
    assert full["adapter"] == 0 and full["trainable"] == full["total"]


def test_recorded_scores_equal_sklearn_on_saved_predictions(two_runs):
    for _, record in records.iter_records(two_runs):
        run_dir = Path(record["artifact"]["path"]).parent
        saved = json.loads((run_dir / records.PREDICTIONS_FILE).read_text())
        preds, refs = saved["test"]["predictions"], saved["test"]["references"]
        assert len(preds) == 45
        assert record["scores"]["test"]["accuracy"] == pytest.approx(accuracy_score(refs, preds))
        assert record["scores"]["test"]["macro_f1"] == pytest.approx(
            f1_score(refs, preds, labels=list(range(9)), average="macro", zero_division=0))


def test_lora_merged_and_unmerged_agree(two_runs):
    found = {r["method"]["name"]: r for _, r in records.iter_records(two_runs)}
    modes = found["lora"]["inference"]["modes"]
    assert set(modes) == {"unmerged", "merged"}
    assert modes["merged"]["max_abs_logit_diff_vs_first_mode"] < 1e-4
    assert set(found["full"]["inference"]["modes"]) == {"default"}


def test_lora_artifact_reloads_to_the_same_predictions(two_runs, tiny_bert):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    found = {r["method"]["name"]: r for _, r in records.iter_records(two_runs)}
    artifact = Path(found["lora"]["artifact"]["path"])
    assert (artifact / "adapter_model.safetensors").exists()
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=9)
    model = PeftModel.from_pretrained(base, artifact).eval()
    trained = [n for n, _ in model.named_parameters() if "lora_" in n]
    assert trained  # the adapter was restored, not silently dropped
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[2, 10, 11, 12, 3]])).logits
    assert torch.isfinite(logits).all()


def test_report_markdown_csv_json(two_runs, cli):
    md = cli("report", str(two_runs))
    assert md.code == 0, md.stderr
    assert "| method" in md.stdout and "full" in md.stdout and "lora" in md.stdout
    assert "test accuracy" in md.stdout and "size MB" in md.stdout and "**" in md.stdout
    assert "backbone:" in md.stdout and "examples train/dev/test: 36/9/45" in md.stdout
    s2 = cli("report", str(two_runs), "--table", "s2")
    assert s2.code == 0, s2.stderr
    header = next(line for line in s2.stdout.splitlines() if line.startswith("| r"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["r", "accuracy %", "size MB", "train time s",
                                                                  "vs majority floor"]
    assert "| 4 " in s2.stdout and "| full" in s2.stdout
    extra = cli("report", str(two_runs), "--table", "s2-extra-2")  # no early-stopping runs here
    assert extra.code == 1 and "no run in" in extra.stderr
    csv = cli("report", str(two_runs), "--format", "csv")
    assert csv.code == 0 and csv.stdout.splitlines()[0].startswith("method,")
    as_json = cli("report", str(two_runs), "--format", "json", "--columns", "method.name,scores.test.accuracy")
    rows = json.loads(as_json.stdout)
    assert {row["name"] for row in rows} == {"full", "lora"}
    both = json.loads(cli("report", str(two_runs), "--format", "json", "--columns",
                          "method.name,backbone.name").stdout)
    assert {row["method.name"] for row in both} == {"full", "lora"} and all(row["backbone.name"] for row in both)


def test_report_errors_are_one_line(tmp_path, cli):
    missing = cli("report", str(tmp_path / "nothing"))
    assert missing.code == 1 and "does not exist" in missing.stderr
    empty = cli("report", str(tmp_path))
    assert empty.code == 1 and "no successful run records" in empty.stderr
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "record.json").write_text(json.dumps({"schema_version": 999}))
    other = cli("report", str(tmp_path))
    assert other.code == 1 and "schema version 999" in other.stderr


def test_second_run_uses_cached_encoding(tiny_bert, sample_dir, tmp_path, cli):
    args = run_args("lora", tiny_bert, sample_dir, tmp_path, "--set", "inference_repeats=0", epochs=1)
    args.remove("--quiet")
    first = cli(*args)
    second = cli(*args, "--force")  # the same configuration again, on purpose
    assert first.code == second.code == 0, second.stderr
    assert "(encoded)" in first.stderr and "(cached)" in second.stderr and "(encoded)" not in second.stderr
    scores = [r["scores"]["test"] for _, r in records.iter_records(tmp_path)]
    assert scores[0] == scores[1]  # same seed, same data, same result


def test_unwritable_results_folder(tiny_bert, sample_dir, tmp_path, cli):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = cli(*run_args("lora", tiny_bert, sample_dir, blocker / "results"))
    assert result.code == 1 and "not writable" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "lorra", "--task", "livedoor-news"], "did you mean 'lora'"),
        (["--method", "lora", "--task", "livedor-news"], "did you mean 'livedoor-news'"),
        (["--method", "lora", "--task", "livedoor-news", "--set", "r=eight"], "r='eight' is not an int"),
        (["--method", "lora", "--task", "livedoor-news", "--set", "rank=8"], "unknown setting 'rank'"),
        (["--method", "lora", "--task", "livedoor-news", "--set", "target=query,nope", "--dry-run"],
         "LoRA target nope not found"),
        (["--method", "lora", "--task", "livedoor-news", "--backbone", "no-such-org/no-such-model",
          "--set", f"data_dir={REPO / 'examples' / 'livedoor-sample'}"], "cannot load backbone"),
        (["--method", "lora", "--task", "livedoor-news", "--set", "data_dir=/no/such/dir"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(args, message, cli, tmp_path):
    result = cli("run", *args, "--results", str(tmp_path), "--quiet")
    assert result.code == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_failed_run_keeps_a_record(sample_dir, tmp_path, cli):
    result = cli(*run_args("lora", tmp_path / "no-model-here", sample_dir, tmp_path / "results"))
    assert result.code == 1 and "does not exist" in result.stderr
    record = only_record(tmp_path / "results")
    assert record["status"] == "failed" and "no-model-here does not exist" in record["error"]
    assert record["config_hash"] and record["environment"]
    listed = cli("report", str(tmp_path / "results"), "--all")
    assert listed.code == 0 and "failed" in listed.stdout


def test_nan_loss_stops_the_run_and_records_failure(tiny_bert, sample_dir, tmp_path):
    """A third-party method whose loss is NaN: the trainer stops, the record says failed."""
    from peftbench.components import plugins
    from peftbench.run import runner, spec
    from peftbench.errors import TrainingError
    from peftbench.run.progress import Progress
    from peftbench_plugins.methods.full_model import FullFineTuning

    class NaNMethod(FullFineTuning):
        name = "nan-loss"

        def loss(self, model, batch):
            return model(**batch).loss * float("nan")

    class Plugin:
        @plugins.hookspecs.hookimpl
        def register_methods(self, register):
            register(NaNMethod())

    comps = plugins.load(extra_plugins=(Plugin(),))
    resolved = spec.resolve(comps, "nan-loss", "livedoor-news", str(tiny_bert),
                              [f"data_dir={sample_dir}", "per_category=10", "max_length=32"])
    with pytest.raises(TrainingError, match="NaN"):
        runner.run(comps, resolved, tmp_path, Progress(quiet=True))
    record = only_record(tmp_path)
    assert record["status"] == "failed" and "NaN" in record["error"]
    # At once, at the step where it happened: not after the epoch, not with a score.
    assert "at step 1 of finetune epoch 1 (last finite loss none)" in record["error"]
    assert record["scores"] == {} and record["traceback"] is None


def test_third_party_distribution_appears_and_runs(tiny_bert, sample_dir, tmp_path):
    """Install the example plugin as a separate distribution (dist-info + module on a path
    entry, as pip lays it out) and use it with no edit to peftbench."""
    site = tmp_path / "site"
    dist = site / "peftbench_plugin_embedding_tuning-0.1.0.dist-info"
    dist.mkdir(parents=True)
    source = REPO / "examples" / "peftbench-plugin-embedding-tuning" / "peftbench_embedding_tuning.py"
    (site / "peftbench_embedding_tuning.py").write_text(source.read_text())
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: peftbench-plugin-embedding-tuning\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[peftbench]\nembedding-tuning = peftbench_embedding_tuning\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "peftbench.cli"]
    listed = subprocess.run([*command, "list", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert listed.returncode == 0, listed.stderr
    methods = {m["name"]: m for m in json.loads(listed.stdout)["methods"]}
    assert methods["embedding-tuning"]["plugin"] == "peftbench-plugin-embedding-tuning 0.1.0"
    assert methods["embedding-tuning"]["settings"] == [{"name": "lr", "type": "float", "default": "0.001"}]
    ran = subprocess.run([*command, *run_args("embedding-tuning", tiny_bert, sample_dir, tmp_path / "r", epochs=1)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert ran.returncode == 0, ran.stderr
    record = only_record(tmp_path / "r")
    assert record["method"] == {"name": "embedding-tuning", "plugin": "peftbench-plugin-embedding-tuning 0.1.0",
                                "family": None, "family_settings": {}}
    assert record["params"]["head"] > 0 and record["params"]["adapter"] > 0 and record["params"]["backbone_trainable"] == 0


def test_records_written_validate_against_the_schema(two_runs):
    for path, record in records.iter_records(two_runs):
        typed = records.load_record(path)
        assert typed.to_dict()["params"] == record["params"] and typed.environment.packages["peft" if
                                                                typed.method.name == "lora" else "torch"]


def test_default_report_is_compact_and_all_columns_has_the_rest(two_runs, cli):
    compact = cli("report", str(two_runs))
    header = next(line for line in compact.stdout.splitlines() if line.startswith("| method"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "method", "task", "backbone", "settings", "test accuracy", "trainable params", "size MB", "s/epoch",
        "vs majority floor"]
    assert "lr=5e-05" in compact.stdout and "lr=0.0005" in compact.stdout  # what tells the rows apart
    wide = cli("report", str(two_runs), "--all-columns")
    assert "train time s" in wide.stdout and "test macro_f1" in wide.stdout and "peak RSS MiB" in wide.stdout


def test_list_never_cuts_a_name_in_80_columns():
    from peftbench.components import plugins

    shown = subprocess.run([sys.executable, "-m", "peftbench.cli", "list"], capture_output=True, text=True,
                           timeout=120, env=dict(os.environ, COLUMNS="80"))
    assert shown.returncode == 0, shown.stderr
    assert max(len(line) for line in shown.stdout.splitlines()) <= 80
    comps = plugins.load()
    for registry in (comps.methods, comps.tasks, comps.backbones, comps.tables):
        for entry in registry:
            assert re.search(rf"│ {re.escape(entry.name)} +│", shown.stdout), entry.name


def test_log_lines_are_not_wrapped_when_output_is_not_a_terminal(tiny_bert, sample_dir, tmp_path):
    """A CI log or `| tee` gets one line per epoch, however long the line."""
    args = run_args("lora", tiny_bert, sample_dir, tmp_path / ("a-long-folder-name" * 4), "--set",
                    "inference_repeats=0", epochs=1)
    args.remove("--quiet")
    shown = subprocess.run([sys.executable, "-m", "peftbench.cli", *args], capture_output=True, text=True,
                           timeout=300, env=dict(os.environ, COLUMNS="60"))
    assert shown.returncode == 0, shown.stderr
    epoch = [line for line in shown.stderr.splitlines() if "epoch 1:" in line]
    assert len(epoch) == 1 and re.search(r"dev accuracy \d\.\d{4}, [\d.]+s$", epoch[0]), shown.stderr
    assert re.fullmatch(r"run \S+: test accuracy .*, record \S+record\.json", shown.stdout.strip()), shown.stdout


def test_the_learning_rate_is_read_back_from_the_optimizer_as_it_ran(two_runs):
    """The record's rate is the optimizer's own peak; each epoch line says where the schedule left it
    (linear decay to 0 over the run, after the warmup)."""
    for path, record in records.iter_records(two_runs):
        configured = record["config"]["method_config"]["lr"]
        (stage,) = record["stages"].values()
        assert stage["learning_rate"] == configured
        rates = [json.loads(line)["learning_rate"] for line in (path.parent / "epochs.jsonl").read_text().splitlines()]
        assert len(rates) == 2 and configured > rates[0] > rates[1] == 0.0
