"""Floors: what a run that learned nothing scores, and the report's "did not learn" mark."""

from __future__ import annotations

from peftbench import load_results
from peftbench.components import plugins
from peftbench.results.report import DID_NOT_LEARN, FLOOR_HEADER, build_table, compact_columns
from peftbench.results.analysis import compare

from synthetic import predictions_with_accuracy, write_run


def test_classification_floors_are_majority_and_one_over_k():
    task = plugins.load().tasks.get("livedoor-news")
    config = task.default_config()
    references = [0] * 6 + [1] * 3 + [2]
    floors = task.floors(references, config)
    assert floors["majority"]["accuracy"] == 0.6
    assert abs(floors["chance"]["accuracy"] - 1 / 9) < 1e-12 and floors["chance"]["micro_f1"] == 1 / 9
    ner = plugins.load().tasks.get("kwdlc-ner")
    assert ner.floors([["B-PERSON", "O"], ["O"]], ner.default_config())["majority"]["f1"] == 0.0


def test_a_run_at_its_majority_floor_is_marked_did_not_learn(tmp_path):
    references = [i % 9 if i % 3 == 0 else 0 for i in range(300)]  # class 0 is the majority
    for seed in (1, 2):
        write_run(tmp_path, seed, "full", seed, predictions_with_accuracy(references, 0.95, seed), references)
        write_run(tmp_path, 10 + seed, "lora", seed, [0] * len(references), references)  # always the majority
    frame = load_results(tmp_path)
    table, notes = build_table(frame, compact_columns(frame))
    marks = dict(zip(table["method"], table[FLOOR_HEADER]))
    assert marks["lora"].startswith(DID_NOT_LEARN) and not marks["full"].startswith(DID_NOT_LEARN)
    assert any(line.startswith(f"{DID_NOT_LEARN}: lora") for line in notes)
    result = compare(frame, "method.name=full")
    assert dict(zip(result["method"], result["learned"])) == {"full": True, "lora": False}


def test_resamples_named_on_the_command_line_reach_the_floor_test(tmp_path, cli):
    references = [i % 9 if i % 3 == 0 else 0 for i in range(120)]
    write_run(tmp_path, 1, "lora", 1, [0] * len(references), references)
    named = cli("report", str(tmp_path), "--resamples", "300")
    assert named.code == 0, named.stderr
    assert "(1 seed(s) pooled), 300 resamples" in named.stdout and "pooled, 300 resamples" in named.stdout
    default = cli("report", str(tmp_path))
    assert "pooled, 1000 resamples" in default.stdout and "300 resamples" not in default.stdout


def test_zero_resamples_is_one_line_not_the_default(tmp_path, cli):
    references = [i % 9 for i in range(60)]
    write_run(tmp_path, 1, "lora", 1, references, references)
    result = cli("report", str(tmp_path), "--resamples", "0")
    assert result.code == 1 and result.stderr.strip().splitlines() == [
        "error: --resamples 0: a resampling test needs at least 1 resample -- drop --resamples for the defaults "
        "(2000, and 1000 for the floor test)"]
