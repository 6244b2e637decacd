"""The one place that wires task + backbone + method + trainer into a run."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import platform
import uuid
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
from .errors import ConfigError, PeftbenchError
from .measure import PeakMemory, Stopwatch, count_parameters, directory_bytes, environment, tensor_bytes
from .plugins import Components, distributions
from .progress import Progress
from .trainer import evaluate, fit, model_inputs


@dataclass
class Resolved:
    config: RunConfig
    method: Method
    task: Task
    backbone: Backbone
    budget: dict[str, Any] | None = None  # set by match_params: target, setting, value, achieved


def match_params(components: Components, method: str, task: str, backbone: str | None, sets: list[str],
                 target: int) -> Resolved:
    """Resolve with the method's size setting chosen so the deployed stage's own parameters
    (``params.adapter``: the task head is the same for every method, so it is left out) come
    closest to ``target``. Binary search over the monotone counts; dry-run, no weights."""
    method_obj = components.methods.get(method)
    if method_obj.capacity is None:
        raise ConfigError(f"method {method!r} has no size setting to match a parameter budget",
                          "--match-params works with methods that declare one (e.g. lora: r, adapter: bottleneck)")
    key, allowed = method_obj.capacity
    allowed = list(allowed)
    counted: dict[int, tuple[int, Resolved]] = {}

    def count(index: int) -> int:
        if index not in counted:
            resolved = resolve(components, method, task, backbone, [*sets, f"{key}={allowed[index]}"])
            counted[index] = (dry_run(resolved)[-1]["params"]["adapter"], resolved)
        return counted[index][0]

    def valid(index: int) -> bool:
        try:
            count(index)
            return True
        except ConfigError:  # too large for this model (e.g. a bottleneck above the hidden size)
            return False

    low, high = 0, len(allowed) - 1
    if not valid(low):
        count(low)  # re-raise: even the smallest value does not fit
    if not valid(high):
        good, bad = low, high
        while bad - good > 1:
            middle = (good + bad) // 2
            good, bad = (middle, bad) if valid(middle) else (good, middle)
        high = good
    for edge, words in ((low, "smallest"), (high, "largest")):
        if (edge == low and target < count(low)) or (edge == high and target > count(high)):
            raise ConfigError(
                f"no {key} reaches {target:,} method parameters: the {words} ({key}={allowed[edge]}) gives "
                f"{count(edge):,}", f"the nearest reachable budget is {count(edge):,}")
    while high - low > 1:
        middle = (low + high) // 2
        if count(middle) < target:
            low = middle
        else:
            high = middle
    best = min((low, high), key=lambda i: abs(count(i) - target))
    achieved, resolved = counted[best]
    resolved.budget = {"target": target, "setting": key, "value": allowed[best], "achieved": achieved,
                       "deviation": (achieved - target) / target}
    return resolved


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
    method = resolved.method
    for stage in method.stages(resolved.task, cfg.task_config, cfg.method_config, resolved.backbone):
        loaded = resolved.backbone.load(stage.head, weights=False)
        model = method.prepare(loaded, cfg.method_config, stage, previous)
        params = count_parameters(model, method.is_adapter_parameter, loaded.head_modules,
                                  method.is_auxiliary_parameter)
        artifact = tensor_bytes(resolved.method.artifact_tensors(model))
        rows.append({"stage": stage.name, "params": params, "artifact_tensor_bytes": artifact, "backbone": loaded.info})
        previous = model
    return rows


# ------------------------------------------------------------------- real run


def _loader(encoded, collate, batch_size: int, shuffle: bool, seed: int, group_by_length: bool = False) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    if shuffle and group_by_length:
        from transformers.trainer_pt_utils import LengthGroupedSampler

        sampler = LengthGroupedSampler(batch_size, lengths=[len(ex["input_ids"]) for ex in encoded],
                                       generator=generator)
        return DataLoader(encoded, batch_size=batch_size, sampler=sampler, collate_fn=collate)
    return DataLoader(encoded, batch_size=batch_size, shuffle=shuffle, collate_fn=collate,
                      generator=generator if shuffle else None)


def _unk_rates(encoded: dict[str, list], tokenizer) -> dict[str, float | None]:
    """Share of input tokens the tokenizer could not represent: a mismatched backbone shows here."""
    unk = getattr(tokenizer, "unk_token_id", None)
    rates: dict[str, float | None] = {}
    for split, examples in encoded.items():
        total = sum(len(ex["input_ids"]) for ex in examples)
        rates[split] = None if unk is None or not total else sum(
            ids.count(unk) for ids in (ex["input_ids"] for ex in examples)) / total
    return rates


def _time_inference(model, method: Method, task: Task, loader: DataLoader, accelerator, repeats: int,
                    split: str, progress: Progress) -> dict:
    """Forward passes over a split per inference mode (e.g. LoRA merged/unmerged), warm-up excluded."""
    model.eval()
    batches = [model_inputs(task, batch) for batch in loader]
    result: dict[str, Any] = {"split": split, "examples": sum(b["input_ids"].shape[0] for b in batches),
                              "repeats": repeats, "mergeable": method.mergeable, "modes": {}}
    reference_logits = None
    with torch.no_grad(), method.inference_modes(model) as modes:
        for mode in modes:
            with accelerator.autocast():
                first = model(**batches[0]).logits.float()  # warm-up, also used for the agreement check
            seconds = []
            for _ in range(repeats):
                with progress.steps(f"inference ({mode})", len(batches)) as advance, \
                        Stopwatch(accelerator.device) as watch:
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


class _Marks:
    """Wall-clock seconds since the process started, for startup-latency accounting."""

    def __init__(self) -> None:
        self.origin = psutil.Process().create_time()
        self.marks: dict[str, float] = {}

    def __call__(self, name: str, at: float | None = None) -> None:
        if name not in self.marks:
            self.marks[name] = (at if at is not None else time.time()) - self.origin


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
    run_id = f"{started:%Y%m%d-%H%M%S}-{cfg.method}-{cfg.task}-{cfg.hash[:8]}-{uuid.uuid4().hex[:6]}"
    run_dir = results_dir / run_id
    run_dir.mkdir(parents=True)
    record_path = run_dir / records.RECORD_FILE

    record = records.new_record()
    record.update(
        run_id=run_id,
        pid=os.getpid(),
        host=platform.node(),
        started_at=started.isoformat(),
        config=cfg.to_dict(),
        config_hash=cfg.hash,
        seed=cfg.train.seed,
        method={"name": cfg.method, "plugin": _source(components.methods, cfg.method)},
        task={"name": cfg.task, "plugin": _source(components.tasks, cfg.task),
              "main_score": task.metadata.main_score, "greater_is_better": dict(task.metadata.greater_is_better)},
        backbone={"name": cfg.backbone, "plugin": _source(components.backbones, cfg.backbone), "info": None},
        budget=resolved.budget,
    )
    records.write_json_atomic(record_path, record)
    run_start = time.perf_counter()
    accelerator = Accelerator(mixed_precision=cfg.train.mixed_precision)
    record["environment"] = environment(accelerator.device, distributions(components))

    marks = _Marks()
    marks("run_started")
    try:
        set_seed(cfg.train.seed)
        previous = None
        stages = method.stages(task, cfg.task_config, cfg.method_config, backbone)
        loaded_splits: dict[int, Any] = {}
        with PeakMemory(accelerator.device) as memory:
            for index, stage in enumerate(stages):
                objective = stage.objective or task
                train_cfg = dataclasses.replace(cfg.train, **dict(stage.train_overrides))
                with PeakMemory(accelerator.device) as stage_memory:
                    if id(objective) not in loaded_splits:
                        loaded_splits[id(objective)] = objective.load(cfg.task_config)
                    splits = loaded_splits[id(objective)]
                    data_info = {"sizes": {name: len(examples) for name, examples in splits.items()}, **splits.info}
                    if index == len(stages) - 1:  # the deployed stage's data is the run's data
                        record["data"] = data_info
                    marks("data_loaded")
                    progress.log(f"[{stage.name}] loading backbone {cfg.backbone}")
                    load_start = time.perf_counter()
                    loaded = backbone.load(stage.head)
                    model_load_seconds = time.perf_counter() - load_start
                    objective = objective.for_backbone(loaded)
                    marks("model_loaded")
                    record["backbone"]["info"] = loaded.info
                    key = {"objective": objective.name, "task": cfg.task,
                           "task_config": objective.cache_key(cfg.task_config),
                           "tokenizer": tokenizer_fingerprint(loaded.tokenizer)}
                    encoded = {}
                    for split, examples in splits.items():
                        encoded[split], cached = encode_cached(
                            dict(key, split=split), examples,
                            lambda ex: objective.encode(ex, loaded.tokenizer, cfg.task_config))
                        progress.log(f"[{stage.name}] {split}: {len(examples)} examples "
                                     f"({'cached' if cached else 'encoded'})")
                    marks("data_encoded")
                    data_info["unk_token_rate"] = _unk_rates(encoded, loaded.tokenizer)
                    data_info["encoding"] = {split: objective.encoding_report(splits_list, encoded[split], cfg.task_config)
                                             for split, splits_list in splits.items()}
                    collate = objective.collator(loaded.tokenizer, cfg.task_config, train_cfg.padding)
                    model = method.prepare(loaded, cfg.method_config, stage, previous)
                    params = count_parameters(model, method.is_adapter_parameter, loaded.head_modules,
                                              method.is_auxiliary_parameter)
                    loaders = {
                        "train": _loader(encoded["train"], collate, train_cfg.batch_size, True, train_cfg.seed,
                                         train_cfg.group_by_length),
                        **{split: _loader(encoded[split], collate, train_cfg.eval_batch_size, False, train_cfg.seed)
                           for split in ("dev", "test")},
                    }
                    model, *prepared = accelerator.prepare(model, *loaders.values())
                    loaders = dict(zip(loaders, prepared))
                    marks("model_prepared")
                    epochs_file = run_dir / records.EPOCHS_FILE

                    def on_epoch(entry: dict[str, Any], _stage: str = stage.name) -> None:
                        records.append_jsonl(epochs_file, {"stage": _stage, **entry})

                    train_watch = time.perf_counter()
                    result = fit(model, method, cfg.method_config, stage, objective, cfg.task_config,
                                 loaders["train"], loaders["dev"], train_cfg, accelerator, progress, on_epoch)
                    train_seconds = time.perf_counter() - train_watch
                    marks("first_step_started", result.first_step_started_at)
                    marks("first_step_done", result.first_step_done_at)
                    unwrapped = accelerator.unwrap_model(model)
                    stage_record = {
                        "objective": objective.name,
                        "train_overrides": dict(stage.train_overrides),
                        "learning_rate": method.learning_rate(cfg.method_config, stage),
                        "data_sizes": data_info["sizes"],
                        "params": params,
                        "epoch_seconds": result.epoch_seconds,
                        "epoch_mean_seconds": statistics.fmean(result.epoch_seconds) if result.epoch_seconds else None,
                        "train_seconds": train_seconds,
                        "best_epoch": result.best_epoch,
                        "stopped_because": result.stopped_because,
                        "best_dev": next((h for h in result.history if h["epoch"] == result.best_epoch), None),
                        "model_load_seconds": model_load_seconds,
                        "backbone": loaded.info,
                        "artifact_tensor_bytes": tensor_bytes(method.artifact_tensors(unwrapped)),
                        "auxiliary_tensor_bytes": tensor_bytes(method.auxiliary_tensors(unwrapped)),
                    }
                previous = unwrapped
                stage_record["memory"] = stage_memory.result
                record["stages"][stage.name] = stage_record
                if index < len(stages) - 1:
                    continue
                # The last stage is the deployed model: score it, time it, save it.
                predictions = {}
                predicting = False
                for split in ("dev", "test"):
                    scored = evaluate(model, loaders[split], objective, cfg.task_config, accelerator, progress, split,
                                      final=True)
                    record["scores"][split] = scored.scores
                    predictions[split] = {"predictions": scored.predictions, "references": scored.references}
                    predicting = scored.predict_seconds is not None
                    if predicting and split == cfg.train.inference_split:
                        # Predicting (generating) is the inference: the time inside the task's predict is it.
                        seconds, tokens = scored.predict_seconds, scored.scores.get("generated_tokens")
                        record["inference"] = {
                            "split": split, "examples": len(scored.predictions), "mode": "predict",
                            "mergeable": method.mergeable, "seconds": seconds,
                            "examples_per_second": len(scored.predictions) / seconds,
                            "generated_tokens": tokens,
                            "tokens_per_second": tokens / seconds if tokens is not None else None}
                # Per-example outputs make paired significance tests (and human evaluation) possible later.
                records.write_json_atomic(run_dir / records.PREDICTIONS_FILE, predictions)
                # A task that predicts is timed while predicting (above); timing its forward passes
                # (teacher-forced, with labels) would be mislabelled as inference.
                if cfg.train.inference_repeats > 0 and not predicting:
                    split = cfg.train.inference_split
                    loader = loaders[split] if split != "train" else accelerator.prepare(
                        _loader(encoded["train"], collate, train_cfg.eval_batch_size, False, train_cfg.seed))
                    record["inference"] = _time_inference(model, method, objective, loader, accelerator,
                                                          cfg.train.inference_repeats, split, progress)
                record["artifact"]["tensor_bytes"] = stage_record["artifact_tensor_bytes"]
                # Trained, then thrown away: not part of what a user stores per task.
                record["artifact"]["auxiliary_tensor_bytes"] = stage_record["auxiliary_tensor_bytes"]
                if cfg.train.save_artifact:
                    artifact_dir = run_dir / "artifact"
                    method.save(unwrapped, str(artifact_dir))
                    record["artifact"].update(path=str(artifact_dir), bytes=directory_bytes(artifact_dir),
                                              format=sorted({p.suffix.lstrip('.') for p in artifact_dir.rglob('*')
                                                             if p.is_file()}))
        record["memory"] = memory.result
        last = list(record["stages"].values())[-1]
        record["params"] = last["params"]
        record["best_epoch"] = last["best_epoch"]
        record["stopped_because"] = last["stopped_because"]
        record["time"].update(
            epoch_seconds=last["epoch_seconds"],
            epoch_mean_seconds=last["epoch_mean_seconds"],
            train_seconds=sum(stage["train_seconds"] for stage in record["stages"].values()),
            model_load_seconds=sum(stage["model_load_seconds"] for stage in record["stages"].values()),
            process_start_to_first_step_seconds=marks.marks.get("first_step_started"),
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
        record["time"]["startup_marks"] = marks.marks
        record["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
        record["time"]["run_seconds"] = time.perf_counter() - run_start
        records.write_json_atomic(record_path, record)
    return record, record_path
