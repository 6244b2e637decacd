"""Fault injection: interrupts, bad inputs, duplicates, permissions, extreme scores. What README's
"Reliability" section promises, each kept true by a test here (SIGKILL + resume: test_suite.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from peftbench.records import record as records
from peftbench.records.files import write_json_atomic
from suite_files import livedoor_suite

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "livedoor-sample"
V1_RECORD = next((REPO / "tests" / "fixtures" / "records-v1").glob("*/record.json"))


def one_line_error(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.code == 1 and len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# ------------------------------------------------------------------ Ctrl-C in a suite


def two_run_suite(tmp_path: Path, tiny_bert: Path) -> Path:
    # 1000 epochs outlast the suite's 3-second grace before it interrupts its runs itself
    return livedoor_suite(tmp_path, tiny_bert, methods=["full"], settings={"epochs": 1000})


def wait_for_running(results: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if results.exists() and any(r["status"] == "running" for _, r in records.iter_records(results)):
            return
        time.sleep(0.1)
    process.kill()
    pytest.fail("the suite's first run did not start in time")


@pytest.mark.parametrize("whom", ["process group", "suite process only"])
def test_ctrl_c_stops_the_suite_at_once(tiny_bert, tmp_path, whom):
    """The run in flight is cancelled, no further run starts, exit 130, and a dry run after it
    shows the plan without touching any record."""
    path, results = two_run_suite(tmp_path, tiny_bert), tmp_path / "results"
    command = [sys.executable, "-m", "peftbench.cli", "suite", "run", str(path), "--results", str(results)]
    # As from a terminal: a shell running the tests in the background (`cmd &`) leaves SIGINT ignored,
    # and an ignored signal is inherited; the suite must see Ctrl-C as a user's terminal delivers it.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for_running(results, process)
    interrupted = time.time()
    if whom == "process group":  # what a terminal's Ctrl-C does
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert time.time() - interrupted < 20, "the suite went on after Ctrl-C"
    assert "interrupted: 0 of 2 runs finished" in stderr
    found = [r for _, r in records.iter_records(results)]
    assert [r["status"] for r in found] == ["cancelled"] and "interrupted" in found[0]["error"]
    before = {p: p.stat().st_mtime_ns for p in results.rglob("*.json")}
    plan = subprocess.run([*command, "--dry-run"], capture_output=True, text=True, timeout=120)
    assert plan.returncode == 0 and "2 runs: 0 done, 2 to run" in plan.stdout, plan.stderr
    assert {p: p.stat().st_mtime_ns for p in results.rglob("*.json")} == before  # a dry run writes nothing


def test_an_interrupt_a_finaliser_swallowed_still_stops_training():
    """Python drops a KeyboardInterrupt raised inside __del__ (seen under load: a regex object's
    finaliser took the suite's SIGINT, and the run went on with its record saying running). The
    run's handler remembers it, and the trainer raises it again between steps."""
    from peftbench.errors import Interrupted, raise_if_interrupted

    class Finalised:
        def __del__(self):
            Interrupted.requested = True  # what the run's SIGINT handler does, then raises...
            raise KeyboardInterrupt()  # ...here, where Python prints "Exception ignored" and goes on

    Finalised()  # collected at once: the interrupt is swallowed
    try:
        with pytest.raises(KeyboardInterrupt):
            raise_if_interrupted()
    finally:
        Interrupted.requested = False


# ------------------------------------------------------------------ bad inputs: one line each


def livedoor_with_a_latin1_article(tmp_path: Path) -> Path:
    root = tmp_path / "livedoor"
    shutil.copytree(SAMPLE, root)
    (root / "sports-watch" / "sports-watch-0000000.txt").write_bytes("http://x\n2012\nタイトル".encode("cp932"))
    return root


def csv_with_an_unclosed_quote(tmp_path: Path) -> Path:
    for split in ("train", "test"):
        (tmp_path / f"{split}.csv").write_text('label,text\na,"one, two\nb,three\na,four\n', encoding="utf-8")
    return tmp_path


def tsv_with_one_class(tmp_path: Path) -> Path:
    for split in ("train", "test"):
        (tmp_path / f"{split}.tsv").write_text("a\tone\na\ttwo\na\tthree\n", encoding="utf-8")
    return tmp_path


def pickle_only_backbone(tmp_path: Path) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    folder = tmp_path / "pickled"
    config = BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8)
    config.save_pretrained(folder)  # transformers 5's save_pretrained writes safetensors only: pickle by hand
    torch.save(BertModel(config).state_dict(), folder / "pytorch_model.bin")
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"]) + "\n")
    return folder


def files(folder: Path, suffix: str, **texts: str) -> Path:
    for stem, text in texts.items():
        (folder / f"{stem}{suffix}").write_text(text + "\n", encoding="utf-8")
    return folder


ALREADY_DONE = ["-m", "full", "-t", "livedoor-news", "--backbone", "minilm-l6", "--set", f"data_dir={SAMPLE}"]


def succeeded(folder: Path) -> Path:
    """A results folder holding a successful record of ALREADY_DONE's configuration and seed."""
    from peftbench.components import plugins
    from peftbench.run import spec

    resolved = spec.resolve(plugins.load(), "full", "livedoor-news", "minilm-l6", [f"data_dir={SAMPLE}"])
    record = records.read_record(V1_RECORD)
    record.update(config_hash=resolved.spec.hash, status="success")
    write_json_atomic(folder / "results" / "done" / records.RECORD_FILE, record)
    return folder / "results"


def unequal_parallel_files(folder: Path) -> Path:
    return files(folder, ".txt", text_train="x\ny", label_train="a", text_test="x", label_test="a")


def data_check(task: str, folder) -> list[str]:
    return ["data", "check", task, "--set", f"data_dir={folder}"]


def suite_text(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path / name


BAD_INPUTS = {
    "livedoor non-UTF-8 article": (lambda t: data_check("livedoor-news", livedoor_with_a_latin1_article(t)),
                                   "sports-watch-0000000.txt is not UTF-8"),
    "batch_size=0 (dry run too)": (lambda t: ["run", "-m", "lora", "-t", "livedoor-news", "--set", "batch_size=0",
                                              "--dry-run"], "batch_size must be >= 1"),
    "epochs=0": (lambda t: ["run", "-m", "full", "-t", "livedoor-news", "--set", "epochs=0", "--dry-run"],
                 "epochs must be >= 1"),
    "csv unclosed quote": (lambda t: data_check("text-classification", csv_with_an_unclosed_quote(t)),
                           "train.csv:2: not valid CSV"),
    "one training class": (lambda t: data_check("text-classification", tsv_with_one_class(t)),
                           "a classifier needs at least two"),
    "empty suite": (lambda t: ["suite", "run", str(suite_text(t, "empty.toml", ""))], "no [[runs]] blocks"),
    "yaml suite": (lambda t: ["suite", "run", str(suite_text(t, "s.yaml", "runs:\n  - method: lora\n"))],
                   "suites are TOML files, not YAML"),
    "garbled spec": (lambda t: ["run", "--spec", str(suite_text(t, "spec.json", "{nope"))], "cannot read run spec"),
    "pickle-only backbone": (lambda t: ["run", "-m", "full", "-t", "livedoor-news", "--backbone",
                                        str(pickle_only_backbone(t)), "--set", f"data_dir={SAMPLE}",
                                        "--set", "per_category=10", "--results", str(t / "r"), "--quiet"],
                             "PEFTBENCH_ALLOW_PICKLE=1"),
    "unwritable results folder": (lambda t: ["run", "-m", "full", "-t", "livedoor-news", "--backbone", "minilm-l6",
                                             "--results", str(suite_text(t, "a-file", "") / "results"), "--quiet"],
                                  "is not writable"),
    "jsonl line not an object": (lambda t: data_check("text-classification",
                                                      files(t, ".jsonl", train="[1]", test="[2]")),
                                 "train.jsonl:1 is not a JSON object"),
    "tsv line without a TAB": (lambda t: data_check("text-classification", files(t, ".tsv", train="a b", test="a b")),
                               "train.tsv:1 has no TAB"),
    "text and label files of different lengths": (
        lambda t: data_check("text-classification", unequal_parallel_files(t)), "has 2 lines but"),
    "livedoor archive that is not one": (
        lambda t: data_check("livedoor-news", suite_text(t, "ldcc.tar.gz", "garbage")), "cannot read archive"),
    "KWDLC folder without knp/": (lambda t: data_check("kwdlc-ner", t), "has no knp/ folder"),
    "title2article non-UTF-8 article": (
        lambda t: data_check("livedoor-title2article", livedoor_with_a_latin1_article(t)), "is not UTF-8"),
    "composition with nothing to wrap": (lambda t: ["run", "-m", "tapt+", "-t", "livedoor-news", "--dry-run"],
                                         "unknown method ''"),
    "peft setting of the wrong type": (lambda t: ["run", "-m", "ia3", "-t", "livedoor-news", "--set",
                                                  "init_ia3_weights=maybe", "--dry-run"],
                                       "init_ia3_weights='maybe' is not a boolean"),
    "stage setting out of range (dry run)": (lambda t: ["run", "-m", "tapt-lora", "-t", "livedoor-news", "--set",
                                                        "tapt_patience=0", "--dry-run"], "patience must be >= 1"),
    "spec without its method": (lambda t: ["run", "--spec",
                                           str(suite_text(t, "s.json", '{"format": "peftbench.run-spec/1"}'))],
                                "has no method"),
    "a configuration that already succeeded": (lambda t: ["run", *ALREADY_DONE, "--results", str(succeeded(t))],
                                               "already succeeded"),
    "record that is a list": (lambda t: ["report", str(suite_text(t, "record.json", "[1, 2, 3]").parent)],
                              "not an object"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line(case, tmp_path, cli):
    make_args, expected = BAD_INPUTS[case]
    line = one_line_error(cli(*make_args(tmp_path)))
    assert expected in line, line


# ------------------------------------------------------------------ duplicates, permissions, Viterbi


def synthetic_results(folder: Path, runs: list[tuple[str, int, float, str]]) -> Path:
    """Records (method, seed, accuracy, finished_at) made from a real v1 record."""
    base = records.read_record(V1_RECORD)
    for number, (method, seed, accuracy, finished) in enumerate(runs):
        record = json.loads(json.dumps(base))
        record.update(run_id=f"run-{number}", finished_at=finished, seed=seed, config_hash=f"{method}-{seed}")
        record["method"]["name"] = record["config"]["method"] = method
        record["config"]["train"]["seed"] = seed
        record["scores"]["test"]["accuracy"] = accuracy
        write_json_atomic(folder / f"run-{number}" / records.RECORD_FILE, record)
    return folder


def test_duplicate_records_are_set_aside_with_one_line(tmp_path, cli):
    runs = [("full", 1, 0.50, "2026-01-01"), ("full", 2, 0.60, "2026-01-01"),
            ("adapter", 1, 0.70, "2026-01-01"), ("adapter", 2, 0.90, "2026-01-01")]
    clean = synthetic_results(tmp_path / "clean", runs)
    doubled = synthetic_results(tmp_path / "doubled", [("full", 2, 0.10, "2025-12-31"), *runs,
                                                       ("adapter", 1, 0.70, "2026-01-02")])
    for args in ([], ["--stats"], ["--baseline", "method.name=full", "--test", "t"]):
        expected, got = cli("report", str(clean), *args), cli("report", str(doubled), *args)
        assert got.code == 0, got.stderr
        assert got.stdout == expected.stdout
        assert "set aside 2 duplicate record(s)" in got.stderr
    stats = json.loads(cli("report", str(doubled), "--stats", "--format", "json").stdout)
    assert {row["n"] for row in stats if row["metric"] == "accuracy"} == {2}


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_records_keep_the_users_umask(tmp_path, umask, mode):
    script = (f"import os; os.umask({umask}); from pathlib import Path; from peftbench.records import files; "
              f"files.write_json_atomic(Path({str(tmp_path / 'record.json')!r}), {{'a': 1}})")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    assert stat.S_IMODE((tmp_path / "record.json").stat().st_mode) == mode


def test_viterbi_never_returns_an_invalid_path_whatever_the_scores():
    from peftbench_plugins.tasks.ner import bio_constraints, bio_labels, viterbi

    labels = bio_labels(("PER", "LOC"))
    transitions, start = bio_constraints(labels)
    emissions = torch.zeros(1, 4, len(labels))
    emissions[0, :, labels.index("I-PER")] = 1e9  # far beyond any finite penalty
    emissions[0, 2, labels.index("B-LOC")] = 2e9
    (path,), = [viterbi(emissions, torch.tensor([4]), transitions, start)]
    tags = [labels[i] for i in path]
    for previous, tag in zip(["O", *tags], tags):
        assert not tag.startswith("I-") or previous[2:] == tag[2:] and previous != "O", tags


def test_a_record_without_scores_is_reported_as_such(tmp_path, cli):
    folder = synthetic_results(tmp_path, [("full", 1, 0.5, "2026-01-01"), ("adapter", 1, 0.6, "2026-01-01")])
    path = folder / "run-1" / records.RECORD_FILE
    record = json.loads(path.read_text())
    record["scores"] = {}
    path.write_text(json.dumps(record))
    shown = cli("report", str(folder))
    assert shown.code == 0 and "1 successful run(s) have no test score" in shown.stderr and "run-1" in shown.stderr


def test_a_second_suite_on_the_same_folder_is_refused(tiny_bert, tmp_path, cli):
    import fcntl

    results = tmp_path / "results"
    results.mkdir()
    with (results / ".suite.lock").open("w") as held:  # what a suite in progress holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        second = cli("suite", "run", str(two_run_suite(tmp_path, tiny_bert)), "--results", str(results))
    assert "another suite is running" in one_line_error(second)
    assert not list(results.rglob("record.json"))  # it started nothing
