"""Gradient accumulation: k micro-batches per update give the update one batch k times the size gives."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from peftbench.records import record as records
from peftbench.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def trained_weights(cli, backbone: Path, results: Path, *sets: str) -> tuple[dict, dict]:
    # 36 training examples: batches of 8 (4 x 8 + 4) against micro-batches of 4 gathered in pairs
    # (4 x (4 + 4) + 4): the same examples in every update, the epoch's last update included.
    args = ["run", "--method", "full", "--task", "livedoor-news", "--backbone", str(backbone), "--results",
            str(results), "--set", f"data_dir={REPO / 'examples' / 'livedoor-sample'}", "--set", "per_category=10",
            "--set", "max_length=32", "--set", "epochs=2", "--set", "lr=1e-3", "--set", "inference_repeats=0",
            "--quiet"]
    for pair in sets:
        args += ["--set", pair]
    done = cli(*args)
    assert done.code == 0, done.stderr
    (path, record), = list(records.iter_records(results))
    return record, load_file(str(next((path.parent / "artifact").glob("*.safetensors"))))


def test_accumulated_micro_batches_update_like_one_big_batch(cli, tiny_bert_without_dropout, tmp_path):
    big_record, big = trained_weights(cli, tiny_bert_without_dropout, tmp_path / "big", "batch_size=8")
    # effective_batch_size=8 with batches of 4 picks grad_accum_steps=2 (the choice itself: test below).
    small_record, accumulated = trained_weights(cli, tiny_bert_without_dropout, tmp_path / "accumulated",
                                                "batch_size=4", "effective_batch_size=8")
    assert big_record["effective_batch_size"] == small_record["effective_batch_size"] == 8
    assert set(big) == set(accumulated)
    for name in big:
        torch.testing.assert_close(accumulated[name], big[name], rtol=1e-4, atol=1e-5, msg=name)
    # The tolerance can tell batchings apart: without accumulation, batches of 4 train other weights.
    plain_record, plain = trained_weights(cli, tiny_bert_without_dropout, tmp_path / "plain", "batch_size=4")
    assert plain_record["effective_batch_size"] == 4
    assert any(not torch.allclose(plain[name], big[name], rtol=1e-4, atol=1e-5) for name in big)


def test_accumulation_settings_are_checked_and_old_hashes_stay():
    import dataclasses

    from peftbench.config import config_hash
    from peftbench.run.spec import RunSpec

    @dataclasses.dataclass(frozen=True)
    class Settings:
        lr: float = 1e-3

    spec = RunSpec("m", "t", "b", Settings(), Settings(), TrainConfig())
    before = spec.config_dict()
    for name in ("grad_accum_steps", "effective_batch_size", "evaluate_test", "forgetting_data",
                 "forgetting_max_length", "quantize", "quantize_compute_dtype", "compile", "compile_backend",
                 "packing", "gradient_checkpointing", "optimizer", "gpu_memory_gb", "fit_memory", "memory_trace",
                 "forgetting_texts"):
        del before["train"][name]
    assert spec.hash == config_hash(before)  # a record written before these settings existed keeps its hash
    assert RunSpec("m", "t", "b", Settings(), Settings(), TrainConfig(quantize="4bit")).hash != spec.hash
    assert RunSpec("m", "t", "b", Settings(), Settings(), TrainConfig(compile=True)).hash != spec.hash
    assert RunSpec("m", "t", "b", Settings(), Settings(), TrainConfig(packing=True)).hash != spec.hash
    assert RunSpec("m", "t", "b", Settings(), Settings(), TrainConfig(grad_accum_steps=2)).hash != spec.hash
    assert RunSpec("m", "t", "b", Settings(), Settings(), TrainConfig(gradient_checkpointing=True)).hash != spec.hash
    assert RunSpec("m", "t", "b", Settings(), Settings(), TrainConfig(gpu_memory_gb=16.0)).hash == spec.hash
    assert TrainConfig(batch_size=4, effective_batch_size=16).accumulation_steps() == 4
    assert TrainConfig(batch_size=4, effective_batch_size=16).accumulation_steps(processes=2) == 2
    with pytest.raises(ValueError, match="not a multiple"):
        TrainConfig(batch_size=4, effective_batch_size=8).accumulation_steps(processes=3)
    with pytest.raises(ValueError, match="multiple of batch_size 4"):
        TrainConfig(batch_size=4, effective_batch_size=10)
    with pytest.raises(ValueError, match="not both"):
        TrainConfig(grad_accum_steps=2, effective_batch_size=16)
    with pytest.raises(ValueError, match="grad_accum_steps must be >= 1"):
        TrainConfig(grad_accum_steps=0)
