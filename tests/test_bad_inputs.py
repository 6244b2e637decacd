"""Bad inputs end in one `error:` line (exit 1), never a traceback: the cases of the drill in issue
#45 fixed so far, each generated here from a valid file (nothing of it is kept in the repository)."""

from __future__ import annotations

import json

import pytest

from conftest import GSM8K_FIXTURE


def _one_line(result, *expected: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.code == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines and lines[-1].startswith("error:") and all(e in lines[-1] for e in expected), lines


@pytest.mark.parametrize("value", ["inf", "1e400", "nan", "-inf"])
def test_non_finite_numbers_are_refused_at_set(cli, value):
    _one_line(cli("run", "--method", "lora", "--task", "mr", "--set", f"lr={value}", "--dry-run"),
              f"lr='{value}' is not a finite number")


def test_processes_zero_is_one_line(cli, tmp_path, sample_dir):
    result = cli("run", "--method", "lora", "--task", "livedoor-news", "--backbone", "minilm-l6", "--processes", "0",
                 "--results", str(tmp_path), "--set", f"data_dir={sample_dir}")
    _one_line(result, "--processes 0")


def test_a_misspelt_backbone_gets_a_did_you_mean(cli):
    _one_line(cli("run", "--method", "lora", "--task", "mr", "--backbone", "minilm-l7", "--dry-run"),
              "unknown backbone 'minilm-l7'; did you mean 'minilm-l6'?")


def test_a_null_label_is_refused_with_file_and_line(cli, tmp_path):
    (tmp_path / "train.jsonl").write_text('{"label": "a", "text": "x"}\n{"label": null, "text": "y"}\n')
    (tmp_path / "test.jsonl").write_text('{"label": "a", "text": "x"}\n')
    result = cli("run", "--method", "lora", "--task", "text-classification", "--backbone", "minilm-l6",
                 "--results", str(tmp_path / "r"), "--set", f"data_dir={tmp_path}")
    _one_line(result, "train.jsonl:2 has a null label")


def test_files_that_are_not_utf8_are_one_line(cli, tmp_path, tiny_llama):
    data = tmp_path / "gsm8k"
    data.mkdir()
    for name in ("train.jsonl", "test.jsonl"):
        (data / name).write_bytes((GSM8K_FIXTURE / name).read_bytes() + b'{"question": "\xff", "answer": "#### 1"}\n')
    result = cli("run", "--method", "lora", "--task", "gsm8k", "--backbone", str(tiny_llama), "--results",
                 str(tmp_path / "r"), "--set", f"data_dir={data}")
    _one_line(result, "is not UTF-8 text")
    suite = tmp_path / "suite.toml"
    suite.write_bytes(b'description = "caf\xe9"\n[[runs]]\nmethod = "lora"\ntask = "mr"\n')
    _one_line(cli("suite", "run", str(suite), "--dry-run"), "is not UTF-8 text")


def test_unreadable_records_are_one_line(cli, tmp_path):
    for name, payload in (("latin", b'{"schema_version": 2, "run_id": "caf\xe9"}'),
                          ("nested", ("[" * 100_000 + "]" * 100_000).encode())):
        folder = tmp_path / name / "run"
        folder.mkdir(parents=True)
        (folder / "record.json").write_bytes(payload)
        _one_line(cli("report", str(tmp_path / name)), "is not a readable run record")


def test_a_torn_epochs_file_leaves_its_point_out_of_the_html_curves(tmp_path):
    from peftbench.results.html import _epochs

    (tmp_path / "epochs.jsonl").write_text(json.dumps({"epoch": 1, "train_loss": 0.5}) + '\n{"epoch": 2, "tr')
    assert _epochs(tmp_path) == [{"epoch": 1, "train_loss": 0.5}]


def _tmpfs(folder, size: str):
    """A tmpfs of ``size`` mounted on ``folder`` (mounting needs root; skipped, saying so, where refused)."""
    import os
    import shutil
    import subprocess

    folder.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                      capture_output=True).returncode:
        pytest.skip("this machine refuses to mount a tmpfs")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


@pytest.fixture
def read_only_folder(tmp_path):
    """A tmpfs the test remounts read-only once it has put a stale record in it."""
    yield from _tmpfs(tmp_path / "ro", "1m")


@pytest.fixture
def small_disk(tmp_path):
    yield from _tmpfs(tmp_path / "small", "2m")


def test_a_read_only_folder_is_one_line_for_reports_suites_and_runs(cli, read_only_folder, tmp_path, sample_dir):
    import subprocess

    results = tmp_path / "results"
    args = ["--task", "livedoor-news", "--backbone", "minilm-l6", "--set", f"data_dir={sample_dir}", "--set",
            "per_category=10", "--set", "epochs=1", "--set", "max_length=16", "--set", "inference_repeats=0",
            "--set", "save_artifact=false"]
    assert cli("run", "--method", "lora", "--results", str(results), *args).code == 0
    stale = json.loads(next(results.glob("*/record.json")).read_text(encoding="utf-8"))
    (read_only_folder / "stale").mkdir()
    (read_only_folder / "stale" / "record.json").write_text(json.dumps({**stale, "status": "running", "pid": 1 << 22}))
    subprocess.run(["mount", "-o", "remount,ro", str(read_only_folder)], check=True)
    _one_line(cli("report", str(results), "--html", str(read_only_folder / "report.html")), "cannot write",
              "report.html")
    _one_line(cli("report", str(results), "--out", str(read_only_folder / "table.md")), "cannot write")
    _one_line(cli("run", "--method", "lora", "--results", str(read_only_folder), *args), "is not writable")
    suite = tmp_path / "suite.toml"
    suite.write_text(f'[defaults]\ntask = "livedoor-news"\nbackbone = "minilm-l6"\n'
                     f'set = {{ data_dir = "{sample_dir}", per_category = 10, epochs = 1 }}\n[[runs]]\nmethod = "lora"\n')
    _one_line(cli("suite", "run", str(suite), "--results", str(read_only_folder)), "is not writable")


def test_a_full_disk_keeps_the_scores_or_leaves_nothing_and_is_one_line(cli, small_disk, sample_dir):
    args = ["--task", "livedoor-news", "--backbone", "minilm-l6", "--set", f"data_dir={sample_dir}", "--set",
            "per_category=10", "--set", "epochs=1", "--set", "max_length=16", "--set", "inference_repeats=0"]
    # Full fine-tuning's artefact (90 MB) cannot fit: the run keeps its scores and says why there is no artefact.
    saved = cli("run", "--method", "full", "--results", str(small_disk / "a"), *args)
    assert saved.code == 0, saved.stderr
    record = json.loads(next((small_disk / "a").glob("*/record.json")).read_text(encoding="utf-8"))
    assert record["status"] == "success" and "accuracy" in record["scores"]["test"]
    assert record["artifact"]["error"].startswith("not saved: no room in") and record["artifact"]["path"] is None
    assert not list((small_disk / "a").glob("*/artifact"))
    # A disk with no room at all: one line, and no run folder or `running` record left behind.
    import os

    filler = os.open(small_disk / "filler", os.O_CREAT | os.O_WRONLY)
    try:
        while os.write(filler, b"\0" * 4096):
            pass
    except OSError:  # full
        pass
    finally:
        os.close(filler)
    full = cli("run", "--method", "lora", "--results", str(small_disk / "a"), "--force", *args)
    _one_line(full, "No space left on device")
    assert len([p for p in (small_disk / "a").iterdir() if p.name != ".claims"]) == 1  # the first run's only
    assert not list((small_disk / "a" / ".claims").iterdir())  # and no claim left


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_safetensors_file_is_one_line(cli, tiny_llama, tmp_path, damage):
    import shutil

    folder = tmp_path / "damaged"
    shutil.copytree(tiny_llama, folder)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\xff" * 64)
    result = cli("run", "--method", "lora", "--task", "gsm8k", "--backbone", str(folder), "--results",
                 str(tmp_path / "r"), "--set", f"data_dir={GSM8K_FIXTURE}")
    _one_line(result, "are not a readable safetensors file")


def test_a_backbone_folder_without_tokenizer_files_is_one_line(cli, tiny_bert, tmp_path, sample_dir):
    """transformers 5 would build a tokenizer of the special tokens alone: every word [UNK], chance
    accuracy, exit 0. The folder is refused before anything trains."""
    import shutil

    folder = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_bert, folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    result = cli("run", "--method", "lora", "--task", "livedoor-news", "--backbone", str(folder), "--results",
                 str(tmp_path / "r"), "--set", f"data_dir={sample_dir}", "--set", "per_category=10")
    _one_line(result, "has no tokenizer files")
