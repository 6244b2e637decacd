"""The report cache (peftbench/results/cache.py): a report read from it says exactly what a report
computed from the files says; a rewritten predictions file is tested again; a cache that cannot be
read or written never fails a report."""

from __future__ import annotations

import json
import os
import random

import pytest

from peftbench.results import cache as report_cache, analysis as results
from peftbench.records.record import load_frame
from synthetic import predictions_with_accuracy, write_run


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PEFTBENCH_REPORT_CACHE", raising=False)
    rng = random.Random(3)
    references = [rng.randrange(9) for _ in range(120)]
    out = tmp_path / "results"
    for number, (method, accuracy) in enumerate([("full", 0.8), ("full", 0.82), ("lora", 0.3), ("lora", 0.33),
                                                 ("ia3", 0.12), ("ia3", 0.1)]):
        write_run(out, number, method, number % 2, predictions_with_accuracy(references, accuracy, number),
                  references)
    return out


def _compared(folder):
    table = results.compare(load_frame(folder), "method.name=full")
    return table.drop(columns=["note"]).to_json()


def _floors(folder):
    return [(c.floor, c.delta, c.p, c.learned, c.note) for c in results.floor_checks(load_frame(folder))]


def test_a_cached_report_says_what_the_files_say(folder, monkeypatch):
    first, floors = _compared(folder), _floors(folder)
    cache = report_cache._file("tests.json")
    assert cache.exists() and report_cache._file("floors.json").exists()
    assert _compared(folder) == first and _floors(folder) == floors  # now from the cache
    monkeypatch.setenv("PEFTBENCH_REPORT_CACHE", "0")
    assert _compared(folder) == first and _floors(folder) == floors  # computed again, the same
    intervals = results.bootstrap_intervals(load_frame(folder), "accuracy")
    monkeypatch.setenv("PEFTBENCH_REPORT_CACHE", "1")
    assert results.bootstrap_intervals(load_frame(folder), "accuracy") == intervals
    assert results.bootstrap_intervals(load_frame(folder), "accuracy") == intervals


def test_a_rewritten_predictions_file_is_tested_again(folder):
    before = _floors(folder)
    assert [learned for _, _, _, learned, _ in before] == [True, True, False]
    path = folder / "run-4" / "predictions.json"
    data = json.loads(path.read_text())
    data["test"]["predictions"] = list(data["test"]["references"])  # ia3's first seed now right everywhere
    path.write_text(json.dumps(data))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    after = _floors(folder)
    assert after[:2] == before[:2] and after[2] != before[2]


def test_a_broken_or_unwritable_cache_never_fails_a_report(folder, monkeypatch):
    first = _compared(folder)
    cache = report_cache._file("tests.json")
    cache.write_text("{not json")
    assert _compared(folder) == first
    blocked = folder.parent / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("PEFTBENCH_CACHE", str(blocked / "cache"))  # a folder that cannot be made
    assert _compared(folder) == first and not report_cache._file("tests.json").exists()
