"""Memory before a run (peftbench/run/memory.py): the fake-tensor prediction held to the accounting of real
CPU steps, the levers (gradient checkpointing, 8-bit and paged optimizers) and planning a run or a
suite against a GPU's memory."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from peftbench.run import memory
from peftbench.components.plugins import default
from peftbench.run.spec import resolve

from conftest import GSM8K_FIXTURE

# Every training batch exactly max_length wide, as the prediction assumes (the worst batch).
FULL_WIDTH = ["data_dir=" + str(GSM8K_FIXTURE), "epochs=1", "max_new_tokens=4", "inference_repeats=0",
              "padding=max_length", "max_length=96", "max_prompt_length=48", "batch_size=4", "eval_batch_size=4"]


def _sets(pairs: list[str]) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


def _record(results) -> dict:
    return json.loads(next(results.glob("*/record.json")).read_text(encoding="utf-8"))


@pytest.mark.parametrize("method, extra", [("full", []), ("lora", []), ("ia3", []), ("prompt-tuning", []),
                                           ("lora", ["gradient_checkpointing=true"])])
def test_a_real_cpu_training_step_takes_the_memory_the_fake_tensors_predicted(cli, tiny_llama, tmp_path, method,
                                                                             extra):
    result = cli("run", "--method", method, "--task", "gsm8k", "--backbone", str(tiny_llama), "--results",
                 str(tmp_path), *_sets([*FULL_WIDTH, "memory_trace=true", *extra]))
    assert result.code == 0, result.stderr
    record = _record(tmp_path)
    predicted, traced = record["memory_predicted"]["train"], record["memory_traced"]
    assert record["memory_predicted"]["device"] == "cpu" and traced["peak_bytes"] > 0
    assert abs(predicted["peak_bytes"] - traced["peak_bytes"]) <= 0.05 * traced["peak_bytes"], (predicted, traced)
    assert predicted["weights"] == traced["weights"] and predicted["optimizer"] == traced["optimizer"]
    if method == "full":  # AdamW's two moments of every weight
        assert traced["optimizer"] > 1.99 * traced["weights"]  # (weights also hold the buffers)


def test_a_4bit_base_fake_step_equals_the_same_step_on_real_tensors_and_halves_the_weights(tiny_llama):
    components = default()
    quantized = resolve(components, "lora", "gsm8k", str(tiny_llama), [*FULL_WIDTH, "quantize=4bit"])
    fake, real = memory.predict(quantized, "cpu"), memory.predict(quantized, "cpu", fake=False)
    assert abs(fake.train.peak_bytes - real.train.peak_bytes) <= 0.05 * real.train.peak_bytes, (fake, real)
    plain = memory.predict(resolve(components, "lora", "gsm8k", str(tiny_llama), FULL_WIDTH), "cpu")
    # Only the linear layers (not the output layer) go to 4 bits: half a byte a weight, plus an 8-bit
    # scale per 64 weights and a float32 per 256 of those, in place of 4 bytes.
    import torch

    model = quantized.backbone.load(quantized.task.head(quantized.spec.task_config), weights=False).model
    linear = sum(m.weight.numel() for m in model.modules()
                 if type(m) is torch.nn.Linear and m is not model.get_output_embeddings())
    per_weight = 0.5 + 1 / 64 + 4 / (64 * 256)
    assert plain.train.weights - fake.train.weights == pytest.approx(linear * (4 - per_weight), rel=0.01)


def _parts(stdout: str) -> dict[str, float]:
    line = next(line for line in stdout.splitlines() if line.startswith("predicted peak memory"))
    return {name: float(value) for name, value in re.findall(r"(weights|gradients|state|activations) ([\d.]+)",
                                                              line.replace("optimizer state", "state"))}


def test_a_dry_run_predicts_the_peak_by_part_offline_and_checkpointing_cuts_activations(cli):
    base = ["run", "--method", "lora", "--task", "gsm8k", "--backbone", "meta-llama/Llama-3.2-1B", "--dry-run",
            "--set", "batch_size=4", "--set", "max_length=1024"]
    plain, checkpointed = cli(*base), cli(*base, "--set", "gradient_checkpointing=true")
    assert plain.code == 0 and checkpointed.code == 0, plain.stderr + checkpointed.stderr
    assert "batch 4 x 1024 tokens" in plain.stdout
    before, after = _parts(plain.stdout), _parts(checkpointed.stdout)
    assert before["weights"] == pytest.approx(2.47, abs=0.02)  # 1.24B bf16 weights
    assert after["weights"] == before["weights"] and after["activations"] < before["activations"] / 1.5


def test_gpu_memory_gb_refuses_a_run_that_does_not_fit_and_accumulates_one_when_asked(cli, tiny_llama, tmp_path):
    base = ["run", "--method", "full", "--task", "gsm8k", "--backbone", str(tiny_llama), "--dry-run", *_sets(FULL_WIDTH)]
    refused = cli(*base, "--set", "gpu_memory_gb=0.006")
    assert refused.code == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "is predicted to need" in refused.stderr and "above gpu_memory_gb=0.006" in refused.stderr
    fitted = cli(*base, "--set", "gpu_memory_gb=0.006", "--set", "fit_memory=accumulate")
    assert fitted.code == 0, fitted.stderr
    assert "batch_size 4 -> 2 with 2 accumulation steps" in fitted.stdout


def test_a_suite_plan_names_the_runs_that_do_not_fit(cli, tiny_llama, tmp_path):
    suite = tmp_path / "suite.toml"
    settings = ", ".join(f'{k} = "{v}"' for k, v in (pair.split("=", 1) for pair in FULL_WIDTH))
    suite.write_text(f'[defaults]\ntask = "gsm8k"\nbackbone = "{tiny_llama}"\nset = {{ {settings} }}\n'
                     '[[runs]]\nmethod = "full"\n[[runs]]\nmethod = "lora"\n', encoding="utf-8")
    plan = cli("suite", "run", str(suite), "--dry-run", "--results", str(tmp_path / "r"), "--set", "gpu_memory_gb=0.006")
    assert plan.code == 1
    assert "DOES NOT FIT" in plan.stdout and "fits:" in plan.stdout
    assert "1 of 2 runs do not fit gpu_memory_gb=0.006: #1 runs[0]" in plan.stderr


def test_planning_settings_leave_the_runs_identity_and_levers_change_it(tiny_llama):
    components = default()
    plain = resolve(components, "lora", "gsm8k", str(tiny_llama), [])
    planned = resolve(components, "lora", "gsm8k", str(tiny_llama), ["gpu_memory_gb=24", "memory_trace=true"])
    assert planned.spec.hash == plain.spec.hash
    for lever in ("gradient_checkpointing=true", "optimizer=adamw8bit"):
        assert resolve(components, "lora", "gsm8k", str(tiny_llama), [lever]).spec.hash != plain.spec.hash
    with pytest.raises(Exception, match="gpu_memory_gb must be a positive number"):
        resolve(components, "lora", "gsm8k", str(tiny_llama), ["gpu_memory_gb=0"])


def test_an_8bit_optimizer_predicts_a_quarter_of_adamws_state(tiny_llama):
    components = default()
    adamw = memory.predict(resolve(components, "full", "gsm8k", str(tiny_llama), FULL_WIDTH), "cpu")
    eight = memory.predict(resolve(components, "full", "gsm8k", str(tiny_llama), [*FULL_WIDTH, "optimizer=adamw8bit"]),
                           "cpu")
    assert eight.train.optimizer < adamw.train.optimizer / 2.5  # 8-bit moments; small tensors stay 32-bit


def test_an_8bit_optimizer_without_bitsandbytes_is_predicted_but_not_run(cli, tiny_llama, tmp_path, monkeypatch):
    import peftbench.components.installed

    monkeypatch.setattr(peftbench.components.installed, "is_installed", lambda name: name != "bitsandbytes")
    args = ["run", "--method", "lora", "--task", "gsm8k", "--backbone", str(tiny_llama), "--results", str(tmp_path),
            *_sets([*FULL_WIDTH, "optimizer=adamw8bit"])]
    dry = cli(*args, "--dry-run")  # a laptop without bitsandbytes plans for the GPU machine
    assert dry.code == 0 and "optimizer state" in dry.stdout, dry.stderr
    result = cli(*args)
    assert result.code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "error: optimizer=adamw8bit needs bitsandbytes, which is not installed" in result.stderr
    assert not list(tmp_path.glob("*/record.json"))  # refused before a run starts


@pytest.mark.quant
def test_an_8bit_optimizer_trains_on_cpu_and_a_paged_one_is_refused_there(cli, tiny_llama, tmp_path):
    trained = cli("run", "--method", "lora", "--task", "gsm8k", "--backbone", str(tiny_llama), "--results",
                  str(tmp_path / "a"), *_sets([*FULL_WIDTH, "optimizer=adamw8bit"]))
    assert trained.code == 0, trained.stderr
    record = _record(tmp_path / "a")
    assert record["status"] == "success" and record["config"]["train"]["optimizer"] == "adamw8bit"
    paged = cli("run", "--method", "lora", "--task", "gsm8k", "--backbone", str(tiny_llama), "--results",
                str(tmp_path / "b"), *_sets([*FULL_WIDTH, "optimizer=paged_adamw8bit"]))
    assert paged.code == 1 and "optimizer=paged_adamw8bit pages its state between a CUDA GPU" in paged.stderr


def test_the_traced_step_keeps_gradients_as_gradients():
    """A step's accounting by hand: two linear layers, SGD-free; the gradients live after backward."""
    import torch

    from peftbench.run.memory_accounting import accounted

    model = torch.nn.Sequential(torch.nn.Linear(256, 256, bias=False), torch.nn.Linear(256, 256, bias=False))
    optimizer = torch.optim.AdamW(model.parameters(), fused=True)
    with accounted(model, optimizer, torch.device("cpu")) as accounting:
        model(torch.ones(8, 256)).sum().backward()
    weights = 2 * 256 * 256 * 4
    assert accounting.peak.weights == weights and accounting.live["gradients"] == weights
    assert dataclasses.asdict(accounting.peak)["optimizer"] == 0
