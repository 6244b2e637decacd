"""Runs one RunSpec, in named steps a reader follows top to bottom:

    start (record written, status running)
    -> per stage: load data -> load backbone and encode -> prepare (method wraps the model)
       -> train (trainer.fit) -> stage record
    -> deployed (last) stage: score dev/test -> time inference -> save the artefact
    -> summarise -> finish (record replaced atomically, whatever the outcome)

The only place that wires task + backbone + method + trainer together; it names
none of them. What the steps share is in run_state.py; what the deployed stage's
model gives the record (scores, predictions, inference times, artefact) in deployed.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import platform
import signal
import statistics
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

import torch

from ..records import files, record as records
from . import forgetting, memory, tracking
from ..api import Splits, Stage, Task
from .compiled import compile_in_place, compile_seconds_so_far, measured_compile_seconds
from ..config import TrainConfig
from .counting import stage_train
from .datacache import encode_cached, examples_fingerprint, load_splits, tokenizer_fingerprint
from .deployed import save_artifact, score, time_inference
from ..errors import ConfigError, PeftbenchError, Terminated
from .measure.energy import EnergyMeter
from .measure.environment import environment
from .measure.peak_memory import PeakMemory
from .measure.sizes import count_parameters, tensor_bytes
from ..components.plugins import Components, distributions
from .progress import Progress
from ..records.record import BackboneRef, Energy, Environment, Forgetting, Memory, MethodRef, Params, RunRecord, StageRecord, StepTimes, TaskRef
from .state import PreparedStage, RunState, loader
from .spec import Resolved
from .trainer import FitContext, FitResult, fit


def _accumulation(train: TrainConfig, processes: int) -> int:
    try:
        return train.accumulation_steps(processes)
    except ValueError as exc:
        raise ConfigError(str(exc), "pick an effective_batch_size that batch_size x processes divides") from None


# ------------------------------------------------------------------- one run


def run(components: Components, resolved: Resolved, results_dir: Path, progress: Progress,
        track: tuple[str, ...] = ()) -> tuple[RunRecord, Path | None]:
    """Train, evaluate, measure and record one configuration. Returns (record, record path).

    The record is written when the run starts (status running) and replaced
    atomically when it ends, whatever the outcome. ``track`` names experiment
    trackers (tensorboard, mlflow, wandb) that follow the run as well.

    Started as several processes (``peftbench run --processes N``, ``accelerate launch``,
    torchrun) it trains data-parallel: only the main process writes, and its returned path
    is the record's; the other processes return None.
    """
    track = tracking.check(track)
    state = _process_state()
    if not state.is_main_process:
        progress = Progress(enabled=False, quiet=True)
    current = _start(components, resolved, results_dir, progress, state.is_main_process)
    current.track = track
    try:  # from here on, whatever happens ends in a final record
        _set_up(current, components)
        with PeakMemory(current.accelerator.device) as memory, EnergyMeter(current.accelerator.device) as energy:
            _train_stages(current)
        current.record.energy = Energy(**energy.result)
        _summarise(current, _over_processes(current, Memory(**memory.result)))
        current.accelerator.log(tracking.final_metrics(current.record))
        current.record.status = "success"
    except KeyboardInterrupt as exc:
        current.record.status = "cancelled"
        current.record.error = ("terminated (SIGTERM: a scheduler's time limit or preemption, or kill)"
                                if isinstance(exc, Terminated) else "interrupted by the user")
        raise
    except PeftbenchError as exc:
        current.record.status, current.record.error = "failed", str(exc)
        raise
    except Exception as exc:
        current.record.status, current.record.error = "failed", f"{type(exc).__name__}: {exc}"
        current.record.traceback = traceback.format_exc()
        raise
    finally:
        _finish(current)
    return current.record, current.record_path if current.writes else None


def _process_state():
    """accelerate's view of the processes this run is one of (one, unless a launcher started several).
    On a machine without CUDA, several processes train on the CPU and talk over gloo; accelerate
    needs to be told so (`cpu=True`), or each process would train alone."""
    from accelerate import PartialState

    return PartialState(cpu=_cpu_processes())


def _cpu_processes() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def _start(components: Components, resolved: Resolved, results_dir: Path, progress: Progress,
           writes: bool = True) -> RunState:
    """The run's folder and its record, written at once with status running (by the main process,
    whose run id every process takes)."""
    from accelerate.utils import broadcast_object_list

    spec = resolved.spec
    started = dt.datetime.now(dt.timezone.utc)
    run_id = f"{started:%Y%m%d-%H%M%S}-{spec.method}-{spec.task}-{spec.hash[:8]}-{uuid.uuid4().hex[:6]}"
    run_id = broadcast_object_list([run_id])[0]
    run_dir = results_dir / run_id
    if writes:
        files.ensure_writable(results_dir)

    def source(registry, name: str) -> str | None:
        return registry.entry(name).source if name in registry else None

    metadata = resolved.task.metadata
    record = RunRecord(
        run_id=run_id, pid=os.getpid(), host=platform.node(), started_at=started.isoformat(),
        config=spec.config_dict(), config_hash=spec.hash, seed=spec.seed, budget=spec.budget,
        # the storage URL stays out of the record: an RDB URL may hold a password
        tuning=spec.tuning.to_json(storage=False) if spec.tuning else None,
        method=MethodRef(spec.method, components.method_source(spec.method), resolved.method.family,
                         resolved.method.family_settings(spec.method_config)),
        task=TaskRef(spec.task, source(components.tasks, spec.task), metadata.main_score,
                     dict(metadata.greater_is_better)),
        backbone=BackboneRef(spec.backbone, source(components.backbones, spec.backbone)),
    )
    if writes:
        files.write_record_or_clean(run_dir / records.RECORD_FILE, record, "the run did not start")
    return RunState(resolved, record, run_dir, progress, writes=writes)


def _set_up(current: RunState, components: Components) -> None:
    """Device, mixed precision, environment and seed."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from accelerate.utils import DistributedDataParallelKwargs

    resolved = current.resolved
    trackers = tracking.make_trackers(current.track, current.run_dir.parent, current.record.run_id) \
        if current.writes else []
    # Data-parallel: a step may leave a trained parameter unused (e.g. an auxiliary head when a batch
    # drew no token to mask), which DDP refuses unless it looks for such parameters.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    current.accelerator = Accelerator(mixed_precision=resolved.spec.train.mixed_precision, log_with=trackers or None,
                                      kwargs_handlers=[ddp], cpu=_cpu_processes())
    current.record.processes = current.accelerator.num_processes
    if trackers:
        current.accelerator.init_trackers(tracking.PROJECT, tracking.flat_config(current.record.config,
                                                                                  current.record.config_hash))
    libraries = {*resolved.method.libraries, *resolved.task.libraries, *resolved.backbone.libraries}
    if resolved.spec.train.quantized or resolved.spec.train.optimizer != "adamw":
        libraries.add("bitsandbytes")  # the k-bit base's or the optimizer's: its version is part of the result
    current.record.environment = Environment(**environment(current.accelerator.device, distributions(components),
                                                           libraries))
    current.record.memory_predicted = memory.for_record(resolved, current.accelerator.device, current.progress)
    current.marks("run_started")
    set_seed(resolved.spec.seed)


def _train_stages(current: RunState) -> None:
    spec, method = current.resolved.spec, current.resolved.method
    stages = method.stages(current.resolved.task, spec.task_config, spec.method_config, current.resolved.backbone)
    current.stages = stages
    previous = None
    for index, stage in enumerate(stages):
        deployed = index == len(stages) - 1
        with PeakMemory(current.accelerator.device) as stage_memory:
            prepared = _prepare_stage(current, stage, previous, deployed)
            result, train_seconds = _train_stage(current, prepared)
            model = current.accelerator.unwrap_model(prepared.model)
            stage_record = _stage_record(current, prepared, result, train_seconds, model)
        stage_record.memory = Memory(**stage_memory.result)
        current.record.memory_traced = result.traced_step if deployed else None
        current.record.stages[stage.name] = stage_record
        previous = model
        if deployed and current.record.forgetting is not None:
            _forgetting_after(current, model, prepared.loaded.tokenizer)
        if deployed:
            predicted = score(current, prepared)
            if spec.train.inference_repeats > 0 and not predicted:
                current.record.inference = time_inference(current, prepared)
            save_artifact(current, model, stage_record)


def _load_data(current: RunState, objective: Task, deployed: bool) -> Splits:
    if id(objective) not in current.splits:
        current.splits[id(objective)] = load_splits(objective, current.resolved.spec.task_config)
    splits = current.splits[id(objective)]
    if deployed:  # the deployed stage's data is the run's data
        current.record.data = {"sizes": {name: len(examples) for name, examples in splits.items()},
                               "fingerprints": {name: examples_fingerprint(examples) for name, examples in splits.items()
                                                if name != "train"}, **splits.info}
    current.marks("data_loaded")
    return splits


def _encode(current: RunState, stage: Stage, objective: Task, splits: Splits, tokenizer: Any,
            deployed: bool) -> dict[str, list]:
    """Tokenised splits, from the on-disk cache when this tokenizer encoded them before."""
    task_config = current.resolved.spec.task_config
    key = {"objective": objective.name, "task": current.resolved.spec.task,
           "task_config": objective.cache_key(task_config), "tokenizer": tokenizer_fingerprint(tokenizer)}
    encoded = {}
    for split, examples in splits.items():
        encoded[split], cached = encode_cached(dict(key, split=split), examples,
                                               lambda ex: objective.encode(ex, tokenizer, task_config))
        current.progress.log(f"[{stage.name}] {split}: {len(examples)} examples ({'cached' if cached else 'encoded'})")
    current.marks("data_encoded")
    if deployed:
        current.record.data["unk_token_rate"] = _unk_rates(encoded, tokenizer)
        current.record.data["encoding"] = {split: objective.encoding_report(examples, encoded[split], task_config)
                                           for split, examples in splits.items()}
    return encoded


def _prepare_stage(current: RunState, stage: Stage, previous: torch.nn.Module | None, deployed: bool) -> PreparedStage:
    """Data, backbone, encoding and the method's model for one stage, with loaders, under accelerate."""
    spec, method = current.resolved.spec, current.resolved.method
    objective = stage.objective or current.resolved.task
    train = stage_train(spec.train, stage)
    if deployed:
        processes = current.accelerator.num_processes
        current.record.effective_batch_size = train.batch_size * _accumulation(train, processes) * processes
    splits = _load_data(current, objective, deployed)
    current.progress.log(f"[{stage.name}] loading backbone {spec.backbone}")
    load_start = time.perf_counter()
    loaded = current.resolved.backbone.load(stage.head, **spec.train.loading())
    if train.gradient_checkpointing:  # before the method wraps it (and before peft's k-bit preparation)
        memory.enable_gradient_checkpointing(loaded.model, spec.backbone)
    model_load_seconds = time.perf_counter() - load_start
    current.marks("model_loaded")
    current.record.backbone.info = loaded.info
    objective = objective.for_backbone(loaded)
    if deployed and spec.train.forgetting_data:  # on the base model, before the method touches it
        _forgetting_before(current, loaded)
    encoded = _encode(current, stage, objective, splits, loaded.tokenizer, deployed)
    collate = objective.collator(loaded.tokenizer, spec.task_config, train.padding)
    model = method.prepare(loaded, spec.method_config, stage, previous)
    params = Params(**count_parameters(model, method.is_adapter_parameter, loaded.head_modules,
                                       method.is_auxiliary_parameter))
    train_collate = objective.packed_collator(loaded.tokenizer, spec.task_config) if train.packing else collate
    loaders = {"train": loader(encoded["train"], train_collate, train.batch_size, True, train.seed,
                               train.group_by_length),
               **{split: loader(encoded[split], collate, train.eval_batch_size, False, train.seed)
                  for split in ("dev", "test")}}
    model, *prepared = current.accelerator.prepare(model, *loaders.values())
    if train.compile:
        compile_in_place(model, train.compile_backend)  # compiles lazily: on the first batches
    current.marks("model_prepared")
    return PreparedStage(stage, objective, train, loaded, model, dict(zip(loaders, prepared)), encoded, collate, params,
                  splits, model_load_seconds)


def _train_stage(current: RunState, prepared: PreparedStage) -> tuple[FitResult, float]:
    spec = current.resolved.spec
    epochs_file = current.run_dir / records.EPOCHS_FILE

    name, accelerator = prepared.stage.name, current.accelerator

    def on_epoch(entry: dict[str, Any]) -> None:
        if current.writes:
            files.append_jsonl(epochs_file, {"stage": name, **entry})
        values = {f"dev_{k}": v for k, v in entry["dev_scores"].items() if isinstance(v, (int, float))}
        values.update(dev_loss=entry["dev_loss"], train_loss_epoch=entry["train_loss"],
                      epoch_seconds=entry["epoch_seconds"])
        accelerator.log({f"{name}/{k}": v for k, v in values.items() if v is not None}, step=entry["epoch"])

    context = FitContext(prepared.model, current.resolved.method, spec.method_config, prepared.stage,
                         prepared.objective, spec.task_config, prepared.loaders["train"], prepared.loaders["dev"],
                         prepared.train, accelerator, current.progress, on_epoch)
    if current.track:  # each step's loss (read anyway for the NaN check) goes to the trackers
        context.on_loss = lambda step, loss: accelerator.log({f"{name}/train_loss": loss}, step=step)
    if spec.tuning and spec.tuning.role == "trial" and current.writes and prepared.stage is _last_stage(current):
        from .pruning import pruning_check  # a tuning trial: its study may prune it after any epoch

        context.should_stop = pruning_check(spec.tuning)
    compiling = compile_seconds_so_far()
    start = time.perf_counter()
    result = fit(context)
    result.compile_seconds = compile_seconds_so_far() - compiling  # training's and dev evaluation's
    seconds = time.perf_counter() - start - result.compile_seconds
    current.marks("first_step_started", result.first_step_started_at)
    current.marks("first_step_done", result.first_step_done_at)
    return result, seconds


def _last_stage(current: RunState) -> Stage | None:
    return current.stages[-1] if current.stages else None


def _stage_record(current: RunState, prepared: PreparedStage, result: FitResult, train_seconds: float,
                  model: torch.nn.Module) -> StageRecord:
    method, spec = current.resolved.method, current.resolved.spec
    return StageRecord(
        objective=prepared.objective.name,
        train_overrides=dict(prepared.stage.train_overrides),
        # read back from the optimizer that trained (a method that trains nothing: the rate it declares)
        learning_rate=result.learning_rate if result.learning_rate is not None
        else method.learning_rate(spec.method_config, prepared.stage),
        data_sizes={name: len(examples) for name, examples in prepared.splits.items()},
        params=prepared.params,
        epoch_seconds=result.epoch_seconds,
        epoch_mean_seconds=statistics.fmean(result.epoch_seconds) if result.epoch_seconds else None,
        train_seconds=train_seconds,
        compile_seconds=measured_compile_seconds(prepared.train.compile, result.compile_seconds),
        best_epoch=result.best_epoch,
        stopped_because=result.stopped_because,
        best_dev=next((h for h in result.history if h["epoch"] == result.best_epoch), None),
        model_load_seconds=prepared.model_load_seconds,
        backbone=prepared.loaded.info,
        artifact_tensor_bytes=tensor_bytes(method.artifact_tensors(model)),
        auxiliary_tensor_bytes=tensor_bytes(method.auxiliary_tensors(model)),
        step_seconds=StepTimes(len(result.step_seconds), min(result.step_seconds),
                               statistics.median(result.step_seconds)) if result.step_seconds else None,
        train_loss_start=result.train_loss_start,
        train_loss_epochs=[entry["train_loss"] for entry in result.history if entry["train_loss"] is not None],
        train_positions=result.train_positions,
    )


def _over_processes(current: RunState, memory: Memory) -> Memory:
    """Each process's peaks, kept by rank, and their peak: the run needs the largest device.
    Epoch times become the slowest process's (the others wait for it at every update)."""
    accelerator = current.accelerator
    if accelerator.num_processes == 1:
        return memory
    from accelerate.utils import gather_object

    epochs = [stage.epoch_seconds for stage in current.record.stages.values()]
    gathered = gather_object([(dataclasses.asdict(memory), epochs)])
    current.record.process_memory = [Memory(**peaks) for peaks, _ in gathered]
    for index, stage in enumerate(current.record.stages.values()):
        stage.epoch_seconds = [max(seconds) for seconds in zip(*(times[index] for _, times in gathered))]
        stage.epoch_mean_seconds = statistics.fmean(stage.epoch_seconds) if stage.epoch_seconds else None
    peak = {}
    for name, value in dataclasses.asdict(memory).items():
        values = [peaks[name] for peaks, _ in gathered if peaks[name] is not None]
        peak[name] = (max(values) if values else None) if name != "nvml_error" else value
    return Memory(**peak)


def _summarise(current: RunState, memory: Memory) -> None:
    """The deployed stage's figures become the run's; times add up over stages."""
    record = current.record
    stages = list(record.stages.values())
    last = stages[-1]
    record.memory, record.params = memory, last.params
    record.best_epoch, record.stopped_because = last.best_epoch, last.stopped_because
    if last.train_loss_start is not None and last.train_loss_epochs:
        record.loss_fell = min(last.train_loss_epochs) < last.train_loss_start
    record.time.epoch_seconds, record.time.epoch_mean_seconds = last.epoch_seconds, last.epoch_mean_seconds
    record.time.step_seconds = last.step_seconds
    record.time.train_seconds = sum(stage.train_seconds for stage in stages)
    compiled = [stage.compile_seconds for stage in stages if stage.compile_seconds is not None]
    record.time.compile_seconds = sum(compiled) if compiled else None
    record.time.model_load_seconds = sum(stage.model_load_seconds for stage in stages)
    record.time.process_start_to_first_step_seconds = current.marks.marks.get("first_step_started")


def _finish(current: RunState) -> None:
    record = current.record
    record.time.startup_marks = current.marks.marks
    record.finished_at = dt.datetime.now(dt.timezone.utc).isoformat()
    record.time.run_seconds = time.perf_counter() - current.started
    if not current.writes:
        return
    main, test = record.task.main_score, record.scores.get("test", {})
    ended = f"the run ended {record.status}" + (f" (test {main} {test[main]:.4f})" if main in test else "")
    with _no_interrupts():  # a second Ctrl-C must not cost the run its final record
        files.write_record_or_clean(current.record_path, record, ended)
    if current.track and current.accelerator is not None:
        try:
            tracking.attach_record(current.accelerator, current.record_path)
            current.accelerator.end_training()
        except Exception as exc:  # noqa: BLE001 - the record is written; a tracker's failure must not hide the run's
            current.progress.log(f"a tracker failed to finish ({type(exc).__name__}: {exc}); the run record is "
                                 f"{current.record_path}")


@contextlib.contextmanager
def _no_interrupts():
    main = threading.current_thread() is threading.main_thread()
    if main:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        if main:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


# ------------------------------------------------------------------- helpers


def _forgetting_before(current: RunState, loaded) -> None:
    train, accelerator = current.resolved.spec.train, current.accelerator
    forgetting.require_causal_lm(loaded.model)
    texts = forgetting.read_texts(train.forgetting_data, train.forgetting_texts)
    if not getattr(loaded.model, "hf_device_map", None):  # a quantized base is placed on its device already
        loaded.model.to(accelerator.device)
    elif current.resolved.spec.train.quantized:
        forgetting.as_kbit_training_has_it(loaded.model)
    current.progress.log(f"forgetting: scoring {len(texts)} texts on the base model")
    loss, tokens = forgetting.mean_token_loss(loaded.model, loaded.tokenizer, texts, train.forgetting_max_length,
                                              train.eval_batch_size, accelerator.device, accelerator.autocast)
    current.record.forgetting = Forgetting(**forgetting.describe(train.forgetting_data, texts), tokens=tokens,
                                           before=loss)
    current.forgetting_texts = texts


def _forgetting_after(current: RunState, model: torch.nn.Module, tokenizer) -> None:
    train, accelerator, measured = current.resolved.spec.train, current.accelerator, current.record.forgetting
    loss, _ = forgetting.mean_token_loss(model, tokenizer, current.forgetting_texts, train.forgetting_max_length,
                                         train.eval_batch_size, accelerator.device, accelerator.autocast)
    measured.after, measured.forgetting = loss, loss - measured.before
    current.progress.log(f"forgetting: {measured.before:.4f} -> {loss:.4f} nats/token on the tuned model")


def _unk_rates(encoded: dict[str, list], tokenizer) -> dict[str, float | None]:
    """Share of input tokens the tokenizer could not represent: a mismatched backbone shows here."""
    unk = getattr(tokenizer, "unk_token_id", None)
    rates: dict[str, float | None] = {}
    for split, examples in encoded.items():
        total = sum(len(ex["input_ids"]) for ex in examples)
        rates[split] = None if unk is None or not total else sum(
            ids.count(unk) for ids in (ex["input_ids"] for ex in examples)) / total
    return rates
