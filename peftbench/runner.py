"""The one place that wires task + backbone + method + trainer into a run."""

from __future__ import annotations

import datetime as dt
import os
import statistics
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import torch
from torch.utils.data import DataLoader

from . import records
from .api import Backbone, Method, Task
from .config import RunConfig, TrainConfig, apply_sets, parse_sets
from .datacache import encode_cached, tokenizer_fingerprint
from .errors import PeftbenchError
from .measure import PeakMemory, Stopwatch, count_parameters, directory_bytes, environment, tensor_bytes
from .plugins import Components, distributions
from .progress import Progress
from .trainer import evaluate, fit


@dataclass
class Resolved:
    config: RunConfig
    method: Method
    task: Task
    backbone: Backbone


def resolve(
    components: Components, method: str, task: str, backbone: str | None = None, sets: list[str] | None = None
) -> Resolved:
    """Names + `--set` pairs -> validated RunConfig and the components it names."""
    method_obj = components.methods.get(method)
    task_obj = components.tasks.get(task)
    backbone_name = backbone or task_obj.metadata.default_backbone
    backbone_obj = components.resolve_backbone(backbone_name)
    sections = apply_sets(
        {"method": method_obj.default_config(), "task": task_obj.default_config(), "train": TrainConfig()},
        parse_sets(sets or []),
    )
    config = RunConfig(method, task, backbone_name, sections["method"], sections["task"], sections["train"])
    return Resolved(config, method_obj, task_obj, backbone_obj)


def _source(registry, name: str) -> str | None:
    return registry.entry(name).source if name in registry else None


# ------------------------------------------------------------------- dry run


def dry_run(resolved: Resolved) -> list[dict[str, Any]]:
    """Per stage: trainable params and the bytes the method would save. No data, no weights."""
    cfg = resolved.config
    rows = []
    previous = None
    for stage in resolved.method.stages(resolved.task, cfg.task_config, cfg.method_config):
        loaded = resolved.backbone.load(stage.head, weights=False)
        model = resolved.method.prepare(loaded, cfg.method_config, stage, previous)
        params = count_parameters(model, resolved.method.is_adapter_parameter, loaded.head_modules)
        artifact = tensor_bytes(resolved.method.artifact_tensors(model))
        rows.append({"stage": stage.name, "params": params, "artifact_tensor_bytes": artifact, "backbone": loaded.info})
        previous = model
    return rows


# ------------------------------------------------------------------- real run


def _loader(encoded, collate, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(encoded, batch_size=batch_size, shuffle=shuffle, collate_fn=collate, generator=generator)


def _unk_rates(encoded: dict[str, list], tokenizer) -> dict[str, float | None]:
    """Share of input tokens the tokenizer could not represent: a mismatched backbone shows here."""
    unk = getattr(tokenizer, "unk_token_id", None)
    rates: dict[str, float | None] = {}
    for split, examples in encoded.items():
        total = sum(len(ex["input_ids"]) for ex in examples)
        rates[split] = None if unk is None or not total else sum(
            ids.count(unk) for ids in (ex["input_ids"] for ex in examples)) / total
    return rates


def _time_inference(model, method: Method, loader: DataLoader, accelerator, repeats: int, progress: Progress) -> dict:
    """Forward passes over a split per inference mode (e.g. LoRA merged/unmerged), warm-up excluded."""
    model.eval()
    batches = list(loader)
    result: dict[str, Any] = {"split": "test", "examples": sum(b["input_ids"].shape[0] for b in batches),
                              "repeats": repeats, "modes": {}}
    reference_logits = None
    with torch.no_grad(), method.inference_modes(model) as modes:
        for mode in modes:
            with accelerator.autocast():
                first = model(**batches[0]).logits.float()  # warm-up, also used for the agreement check
            seconds = []
            for _ in range(repeats):
                with Stopwatch(accelerator.device) as watch, progress.steps(f"inference ({mode})", len(batches)) as advance:
                    for batch in batches:
                        with accelerator.autocast():
                            model(**batch)
                        advance()
                seconds.append(watch.seconds)
            median = statistics.median(seconds)
            entry = {"seconds": median, "all_seconds": seconds, "examples_per_second": result["examples"] / median}
            if reference_logits is None:
                reference_logits = first
            else:
                entry["max_abs_logit_diff_vs_first_mode"] = (first - reference_logits).abs().max().item()
            result["modes"][mode] = entry
    return result


def run(
    components: Components,
    resolved: Resolved,
    results_dir: Path,
    progress: Progress,
) -> tuple[dict[str, Any], Path]:
    """Train, evaluate, measure and record one configuration. Returns (record, record path).

    The record is written when the run starts (status running) and replaced
    atomically when it ends, whatever the outcome.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    cfg = resolved.config
    method, task, backbone = resolved.method, resolved.task, resolved.backbone
    records.ensure_writable(results_dir)
    started = dt.datetime.now(dt.timezone.utc)
    run_id = f"{started:%Y%m%d-%H%M%S}-{cfg.method}-{cfg.task}-{cfg.hash[:8]}-{os.getpid()}"
    run_dir = results_dir / run_id
    run_dir.mkdir(parents=True)
    record_path = run_dir / records.RECORD_FILE

    record = records.new_record()
    record.update(
        run_id=run_id,
        started_at=started.isoformat(),
        config=cfg.to_dict(),
        config_hash=cfg.hash,
        seed=cfg.train.seed,
        method={"name": cfg.method, "plugin": _source(components.methods, cfg.method)},
        task={"name": cfg.task, "plugin": _source(components.tasks, cfg.task),
              "main_score": task.metadata.main_score, "greater_is_better": dict(task.metadata.greater_is_better)},
        backbone={"name": cfg.backbone, "plugin": _source(components.backbones, cfg.backbone), "info": None},
    )
    records.write_json_atomic(record_path, record)
    run_start = time.perf_counter()
    accelerator = Accelerator(mixed_precision=cfg.train.mixed_precision)
    record["environment"] = environment(accelerator.device, distributions(components))

    try:
        set_seed(cfg.train.seed)
        with PeakMemory(accelerator.device) as memory:
            splits = task.load(cfg.task_config)
            record["data"] = {"sizes": {name: len(examples) for name, examples in splits.items()}, **splits.info}
            previous = None
            stages = method.stages(task, cfg.task_config, cfg.method_config)
            for index, stage in enumerate(stages):
                progress.log(f"[{stage.name}] loading backbone {cfg.backbone}")
                load_start = time.perf_counter()
                loaded = backbone.load(stage.head)
                model_load_seconds = time.perf_counter() - load_start
                record["backbone"]["info"] = loaded.info
                key = {"task": cfg.task, "task_config": task.cache_key(cfg.task_config),
                       "tokenizer": tokenizer_fingerprint(loaded.tokenizer)}
                encoded = {}
                for split, examples in splits.items():
                    encoded[split], cached = encode_cached(
                        dict(key, split=split), examples,
                        lambda ex: task.encode(ex, loaded.tokenizer, cfg.task_config))
                    progress.log(f"[{stage.name}] {split}: {len(examples)} examples ({'cached' if cached else 'encoded'})")
                record["data"]["unk_token_rate"] = _unk_rates(encoded, loaded.tokenizer)
                collate = task.collator(loaded.tokenizer)
                model = method.prepare(loaded, cfg.method_config, stage, previous)
                params = count_parameters(model, method.is_adapter_parameter, loaded.head_modules)
                train_loader = _loader(encoded["train"], collate, cfg.train.batch_size, True, cfg.train.seed)
                dev_loader = _loader(encoded["dev"], collate, cfg.train.eval_batch_size, False, cfg.train.seed)
                test_loader = _loader(encoded["test"], collate, cfg.train.eval_batch_size, False, cfg.train.seed)
                model, train_loader, dev_loader, test_loader = accelerator.prepare(
                    model, train_loader, dev_loader, test_loader)
                epochs_file = run_dir / records.EPOCHS_FILE

                def on_epoch(entry: dict[str, Any], _stage: str = stage.name) -> None:
                    records.append_jsonl(epochs_file, {"stage": _stage, **entry})

                train_watch = time.perf_counter()
                result = fit(model, method, cfg.method_config, task, train_loader, dev_loader, cfg.train,
                             accelerator, progress, on_epoch)
                train_seconds = time.perf_counter() - train_watch
                stage_record = {
                    "name": stage.name,
                    "params": params,
                    "epoch_seconds": result.epoch_seconds,
                    "epoch_mean_seconds": statistics.fmean(result.epoch_seconds) if result.epoch_seconds else None,
                    "train_seconds": train_seconds,
                    "best_epoch": result.best_epoch,
                    "stopped_because": result.stopped_because,
                    "model_load_seconds": model_load_seconds,
                    # From process start (interpreter, imports, data, cache) to the first step done.
                    "process_start_to_first_step_seconds": (
                        result.first_step_done_at - psutil.Process().create_time()
                        if result.first_step_done_at else None),
                }
                record["stages"].append(stage_record)
                previous = model
                if index < len(stages) - 1:
                    continue
                # The last stage is the deployed model: score it, time it, save it.
                unwrapped = accelerator.unwrap_model(model)
                predictions = {}
                for split, loader in (("dev", dev_loader), ("test", test_loader)):
                    result_split = evaluate(model, loader, task, accelerator, progress, split)
                    record["scores"][split] = result_split.scores
                    predictions[split] = {"predictions": result_split.predictions,
                                          "references": result_split.references}
                # Per-example outputs make paired significance tests possible later.
                records.write_json_atomic(run_dir / records.PREDICTIONS_FILE, predictions)
                if cfg.train.inference_repeats > 0:
                    record["inference"] = _time_inference(model, method, test_loader, accelerator,
                                                          cfg.train.inference_repeats, progress)
                artifact_tensor_bytes = tensor_bytes(method.artifact_tensors(unwrapped))
                record["artifact"]["tensor_bytes"] = artifact_tensor_bytes
                if cfg.train.save_artifact:
                    artifact_dir = run_dir / "artifact"
                    method.save(unwrapped, str(artifact_dir))
                    record["artifact"].update(path=str(artifact_dir), bytes=directory_bytes(artifact_dir),
                                              format=sorted({p.suffix.lstrip('.') for p in artifact_dir.rglob('*') if p.is_file()}))
        record["memory"] = memory.result
        last = record["stages"][-1]
        record["params"] = last["params"]
        record["best_epoch"] = last["best_epoch"]
        record["stopped_because"] = last["stopped_because"]
        all_epochs = [s for stage in record["stages"] for s in stage["epoch_seconds"]]
        record["time"].update(
            epoch_seconds=last["epoch_seconds"],
            epoch_mean_seconds=last["epoch_mean_seconds"],
            train_seconds=sum(stage["train_seconds"] for stage in record["stages"]),
            all_stages_epoch_seconds=all_epochs,
            model_load_seconds=record["stages"][0]["model_load_seconds"],
            process_start_to_first_step_seconds=record["stages"][0]["process_start_to_first_step_seconds"],
        )
        record["status"] = "success"
    except KeyboardInterrupt:
        record["status"] = "cancelled"
        record["error"] = "interrupted by the user"
        raise
    except PeftbenchError as exc:
        record["status"] = "failed"
        record["error"] = str(exc)
        raise
    except Exception as exc:
        record["status"] = "failed"
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc()
        raise
    finally:
        record["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
        record["time"]["run_seconds"] = time.perf_counter() - run_start
        records.write_json_atomic(record_path, record)
    return record, record_path
