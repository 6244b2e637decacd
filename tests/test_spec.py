"""The typed run spec and run record: one JSON form each, a hash computed once, a schema file
kept equal to the dataclasses, migration of older records, refusal of newer ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from peftbench.run import counting, spec
from peftbench.components import plugins
from peftbench.records import record as records
from peftbench.errors import ConfigError, ResultsError
from suite_files import livedoor_suite

REPO = Path(__file__).resolve().parents[1]
V1_RECORDS = REPO / "tests" / "fixtures" / "records-v1"


@pytest.fixture(scope="module")
def comps():
    return plugins.load()


def test_spec_json_round_trip_keeps_settings_hash_and_budget(comps):
    resolved = counting.match_params(comps, "lora", "livedoor-news", None, ["target=query,value", "seed=3"], 300_000)
    data = json.loads(json.dumps(resolved.spec.to_json()))  # through text, as a child process reads it
    again = spec.resolve_json(comps, data)
    assert again.spec == resolved.spec and again.spec.hash == resolved.spec.hash
    assert again.spec.method_config.target == ("query", "value")  # JSON lists come back as tuples
    assert again.spec.budget.target == 300_000 and again.spec.budget.value == resolved.spec.method_config.r


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.update(format="x"), "not a peftbench run spec"),
    (lambda d: d["method_config"].update(rank=3), "method_config.rank: unknown setting"),
    (lambda d: d["method_config"].update(r=0), "r must be >= 1"),
    (lambda d: d["train"].update(epochs=9), "hash to"),  # edited by hand: the hash no longer matches
    (lambda d: d.update(method="lorra"), "did you mean 'lora'"),
])
def test_bad_specs_are_one_line_errors(comps, edit, message):
    data = spec.resolve(comps, "lora", "livedoor-news").spec.to_json()
    edit(data)
    with pytest.raises(ConfigError, match=message):
        spec.resolve_json(comps, data)


def test_spec_file_cannot_be_mixed_with_names(cli, tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec.resolve(plugins.load(), "lora", "livedoor-news").spec.to_json()))
    mixed = cli("run", "--spec", str(path), "--method", "full", "--dry-run")
    assert mixed.code == 1 and "cannot be combined" in mixed.stderr
    alone = cli("run", "--spec", str(path), "--dry-run")
    assert alone.code == 0 and "method lora" in alone.stdout
    neither = cli("run", "--dry-run")
    assert neither.code == 1 and "needs --method and --task" in neither.stderr


def test_schema_file_is_generated_from_the_dataclasses():
    written = json.loads((REPO / "docs" / "record.schema.json").read_text(encoding="utf-8"))
    assert written == records.json_schema(), "regenerate: python -m peftbench.records.record > docs/record.schema.json"


def test_v1_record_loads_through_the_migration(tmp_path):
    shutil.copytree(V1_RECORDS, tmp_path / "results")
    (path, record), = records.iter_records(tmp_path / "results")
    assert record["schema_version"] == records.SCHEMA_VERSION and record["traceback"] is None
    typed = records.load_record(path)
    assert typed.params.trainable == record["params"]["trainable"] and typed.status == "success"
    frame = records.load_frame(tmp_path / "results")
    assert frame["scores.test.accuracy"].notna().all()


def test_future_and_malformed_records_are_refused_with_one_line(tmp_path, cli):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "record.json").write_text(json.dumps({"schema_version": records.SCHEMA_VERSION + 1}))
    future = cli("report", str(tmp_path))
    assert future.code == 1 and "upgrade peftbench" in future.stderr and "Traceback" not in future.stderr
    (tmp_path / "a" / "record.json").write_text("[1, 2, 3]")
    with pytest.raises(ResultsError, match="not an object"):
        list(records.iter_records(tmp_path))
    (tmp_path / "a" / "record.json").write_text(json.dumps({"schema_version": 2, "status": "exploded"}))
    with pytest.raises(ResultsError, match="status"):
        records.load_record(tmp_path / "a" / "record.json")


def test_every_table_column_names_a_field_of_the_schema(comps):
    fields = [(table.name, column.field) for table in (e.component for e in comps.tables)
              for column in table.columns] + [(table.name, column.fallback) for table in
                                              (e.component for e in comps.tables)
                                              for column in table.columns if column.fallback]
    unknown = [(name, field) for name, field in fields if not records.is_known_field(field)]
    assert not unknown
    assert not records.is_known_field("params.trainabel") and records.is_known_field("scores.test.f1")


def test_suite_with_a_parameter_budget_records_it(tiny_bert, sample_dir, tmp_path, cli):
    """The budget crosses to the child run inside the spec, so the record has it (it used to be lost)."""
    suite_file = livedoor_suite(tmp_path / "budget.toml", tiny_bert, methods=["lora"], seeds=None,
                                settings={"data_dir": str(sample_dir)}, defaults="match_params = 2000")
    done = cli("suite", "run", str(suite_file), "--results", str(tmp_path / "results"))
    assert done.code == 0, done.stderr + done.stdout
    (path, record), = records.iter_records(tmp_path / "results")
    # tiny BERT: 2 layers x (query, value) x r x (32 + 32) parameters = 256 r; 2000 -> r = 8
    assert record["budget"] == {"target": 2000, "setting": "r", "value": 8, "achieved": 2048, "deviation": 0.024}
    assert records.load_record(path).config_hash == record["config_hash"]
