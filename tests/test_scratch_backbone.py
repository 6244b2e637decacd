"""`peftbench backbone build`: vocabulary + MLM/NSP pre-training from scratch, resume, use as a backbone."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from peftbench.errors import ConfigError

from peftbench.records import record as records

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "livedoor-sample"


def build_args(out: Path, *extra: str) -> list[str]:
    return ["backbone", "build", "--corpus", "livedoor-news", "--set", f"data_dir={SAMPLE}", "--out", str(out),
            "--preset", "tiny", "--set", "epochs=2", "--set", "hidden=32", "--set", "heads=2", "--set", "layers=1",
            "--set", "max_documents=120", "--set", "seq_len=32", "--set", "vocab_size=3000", *extra]


def test_build_then_use_as_backbone(tmp_path, cli):
    out = tmp_path / "bb"
    built = cli(*build_args(out, "--name", "test-ja"))
    assert built.code == 0, built.stderr
    info = json.loads((out / "build_info.json").read_text())
    assert [h["epoch"] for h in info["history"]] == [1, 2]
    assert info["history"][-1]["held_out"]["mlm_accuracy"] > info["held_out_before_training"]["mlm_accuracy"]
    assert (out / "model.safetensors").exists() and (out / "vocab.txt").exists()
    assert not (out / ".checkpoint").exists()
    # Registered by name; records carry the build config and corpus hash. (A new process reads
    # the registry at start; in-process, the cached plugin load must be dropped.)
    from peftbench.components import plugins

    plugins.default.cache_clear()
    ran = cli("run", "--method", "lora", "--task", "livedoor-news", "--backbone", "test-ja", "--results",
              str(tmp_path / "r"), "--quiet", "--set", f"data_dir={SAMPLE}", "--set", "per_category=10",
              "--set", "max_length=32", "--set", "epochs=1")
    assert ran.code == 0, ran.stderr
    (_, record), = list(records.iter_records(tmp_path / "r"))
    assert record["backbone"]["info"]["build"]["corpus_sha256_16"] == info["corpus_sha256_16"]
    assert record["data"]["unk_token_rate"]["train"] < 0.05  # its own vocabulary covers the text
    # Its load takes no quantize arguments: refused in one line when the spec resolves, dry runs included.
    quantized = cli("run", "--method", "lora", "--task", "livedoor-news", "--backbone", "test-ja", "--results",
                    str(tmp_path / "r"), "--set", f"data_dir={SAMPLE}", "--set", "quantize=4bit", "--dry-run")
    assert quantized.code == 1 and quantized.stderr.strip().splitlines() == [
        "error: backbone test-ja cannot load a quantized base -- use a Hugging Face checkpoint, or drop quantize"]


class Planted:
    """Unpickling this would create a file: the proof that a pickle ran code."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_existing_output_needs_overwrite_and_resume_continues(tmp_path, cli):
    # A build interrupted during epoch 2 leaves epoch 1's checkpoint; the next call resumes from it.
    from peftbench.components import plugins
    from peftbench_plugins.backbones import scratch_build as scratch_backbone

    out = tmp_path / "bb"
    real_evaluate, calls = scratch_backbone.evaluate, []

    def interrupted(model, loader):
        calls.append(1)
        if len(calls) == 3:  # before training, after epoch 1, after epoch 2
            raise KeyboardInterrupt
        return real_evaluate(model, loader)

    settings = dict(epochs=2, hidden=32, heads=2, layers=1, max_documents=120, seq_len=32, vocab_size=3000)
    logs: list[str] = []
    scratch_backbone.evaluate = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            scratch_backbone.build(["livedoor-news"], [f"data_dir={SAMPLE}"], out, "tiny", settings, None, False,
                                   plugins.load(), log=logs.append)
    finally:
        scratch_backbone.evaluate = real_evaluate
    assert (out / ".checkpoint" / "state.pt").exists()
    with pytest.raises(ConfigError, match="interrupted build with other settings"):  # never mix two builds
        scratch_backbone.build(["livedoor-news"], [f"data_dir={SAMPLE}"], out, "tiny", dict(settings, hidden=64),
                               None, False, plugins.load(), log=logs.append)
    # A planted pickle in place of the checkpoint is refused, not executed.
    state = out / ".checkpoint" / "state.pt"
    good = state.read_bytes()
    state.write_bytes(pickle.dumps(Planted(tmp_path / "planted"), protocol=2))
    with pytest.raises(ConfigError, match="holds more than tensors"):
        scratch_backbone.build(["livedoor-news"], [f"data_dir={SAMPLE}"], out, "tiny", settings, None, False,
                               plugins.load(), log=logs.append)
    assert not (tmp_path / "planted").exists()
    state.write_bytes(good)
    info = scratch_backbone.build(["livedoor-news"], [f"data_dir={SAMPLE}"], out, "tiny", settings, None, False,
                                  plugins.load(), log=logs.append)
    assert "resuming after epoch 1" in logs
    assert [h["epoch"] for h in info["history"]] == [1, 2]
    again = cli(*build_args(out))  # a finished build is not overwritten unless asked
    assert again.code == 1 and "--overwrite" in again.stderr


def test_bad_corpora(tmp_path, cli):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("   \n", encoding="utf-8")
    result = cli("backbone", "build", "--corpus", str(empty), "--out", str(tmp_path / "o"))
    assert result.code == 1 and "holds no text" in result.stderr
    binary = tmp_path / "bin"
    binary.mkdir()
    (binary / "b.txt").write_bytes(b"\xff\xfe\x00\x81")
    result = cli("backbone", "build", "--corpus", str(binary), "--out", str(tmp_path / "o2"))
    assert result.code == 1 and "not UTF-8" in result.stderr
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    (tiny / "t.txt").write_text("これはペンです。あれは本です。", encoding="utf-8")
    result = cli("backbone", "build", "--corpus", str(tiny), "--out", str(tmp_path / "o3"))
    assert result.code == 1 and ("min_frequency" in result.stderr or "too small" in result.stderr)
