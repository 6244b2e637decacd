"""`--set compile=true`: the model runs through torch.compile for training and evaluation, and the
record keeps compiling's seconds apart from training's. The tests compile with the aot_eager
backend (tracing and AOT autograd, no generated code: seconds here, where inductor's C++ build
takes minutes on a cold cache); benchmarks/vs_trainer.py --compile times inductor against eager."""

from __future__ import annotations

from peftbench.records import record as records
from test_workers import run_args


def _record(results):
    ((_, record),) = list(records.iter_records(results))
    return record


def test_a_compiled_run_scores_like_eager_and_records_compile_seconds_apart(tiny_bert_without_dropout, tmp_path, cli):
    eager = cli(*run_args(tiny_bert_without_dropout, tmp_path / "eager", "lora"))
    assert eager.code == 0, eager.stderr
    compiled = cli(*run_args(tiny_bert_without_dropout, tmp_path / "compiled", "lora", "compile=true",
                             "compile_backend=aot_eager"))
    assert compiled.code == 0, compiled.stderr
    eager_record, compiled_record = _record(tmp_path / "eager"), _record(tmp_path / "compiled")
    assert eager_record["time"]["compile_seconds"] is None
    compile_seconds = compiled_record["time"]["compile_seconds"]
    assert compile_seconds > 0 and compiled_record["time"]["train_seconds"] > 0
    assert compiled_record["config"]["train"]["compile"] is True
    assert compiled_record["config_hash"] != eager_record["config_hash"]
    # The same weights, data and order: the compiled graph computes what eager does.
    for split in ("dev", "test"):
        assert compiled_record["scores"][split] == eager_record["scores"][split], split
    assert compiled_record["params"] == eager_record["params"]


def test_a_bad_compile_backend_is_one_line(tiny_bert, tmp_path, cli):
    wrong = cli(*run_args(tiny_bert, tmp_path, "lora", "compile=true", "compile_backend=tensorrt"))
    assert wrong.code != 0 and "compile_backend" in wrong.stderr and "Traceback" not in wrong.stderr


def test_compile_is_listed_with_the_train_settings(cli):
    shown = " ".join(cli("list").stdout.split())  # rich wraps long lines
    assert "compile=False, compile_backend='inductor'" in shown
