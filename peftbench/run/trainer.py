"""The training loop: generic, under accelerate, readable top to bottom.

Nothing here knows which method or task it trains; the Method supplies the
loss and the Task (or a stage's objective) turns logits into predictions and
scores.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from ..api import Method, Stage, Task
from .compiled import compile_seconds_so_far
from ..config import TrainConfig
from ..errors import ConfigError, TrainingError, raise_if_interrupted
from .measure.timing import synchronize
from .memory_accounting import accounted
from .optimizers import check_optimizer, make_optimizer
from .progress import Progress
from ..records.record import StepMemory

NAN_CHECK_EVERY = 10  # steps; checking every step would force a device sync per step


def model_inputs(task: Task, batch: Mapping[str, Any]) -> dict[str, Any]:
    """The batch without the fields only the task's decoder reads."""
    return {k: v for k, v in batch.items() if k not in task.extra_batch_keys}


@dataclass
class EvalResult:
    loss: float | None
    scores: dict[str, float]
    predictions: list = field(default_factory=list)
    references: list = field(default_factory=list)
    predict_seconds: float | None = None  # time inside the task's `predict` (generation); None: decode was used


@dataclass
class FitResult:
    epoch_seconds: list[float]
    best_epoch: int | None
    stopped_because: str
    history: list[dict[str, Any]]
    first_step_started_at: float | None = None  # time.time() when the first batch reached the model
    first_step_done_at: float | None = None
    # Each training step's time, batch fetching excluded; CPU only (on a GPU a step's time needs a
    # sync per step, which would slow training; epochs are timed there).
    step_seconds: list[float] = field(default_factory=list)
    train_loss_start: float | None = None  # mean loss of the first (up to 10) steps: did the loss ever fall?
    compile_seconds: float = 0.0  # torch.compile's, over the fit (compile=true); not in epoch or train seconds
    # Token positions the model computed per epoch, padding included (length grouping and packing cut it).
    train_positions: list[int] = field(default_factory=list)
    # memory_trace=true: bytes by part over the first step that runs with optimizer state (and, when
    # gradients accumulate, with gradients) in place: the step a memory prediction traces.
    traced_step: StepMemory | None = None
    # The optimizer's own: the peak rate it was built with (the schedule's 1.0), read back from it.
    learning_rate: float | None = None


def evaluate(
    model: torch.nn.Module, loader: DataLoader, task: Task, task_config: Any,
    accelerator: Accelerator, progress: Progress, label: str, final: bool = False,
) -> EvalResult:
    """Loss, predictions and scores over a split. ``final``: the last scoring (or a dev scoring of a
    task that `predicts_every_epoch`), where a task may predict with the model itself (generation)
    instead of decoding the forward pass."""
    model.eval()
    predictions: list = []
    references: list = []
    loss_sum, loss_count = 0.0, 0
    predict_seconds: float | None = None
    several = accelerator.num_processes > 1
    with torch.no_grad(), progress.steps(label, len(loader)) as advance:
        for batch in loader:
            with accelerator.autocast():
                outputs = model(**model_inputs(task, batch))
            if outputs.loss is not None:
                n = batch["input_ids"].shape[0]
                losses = outputs.loss.detach().float().reshape(1).repeat(n)  # the batch's mean, once per example
                if several:  # every process's examples, the last batch's padding duplicates dropped
                    losses = accelerator.gather_for_metrics(losses)
                loss_sum += losses.sum().item()
                loss_count += losses.numel()
            made = None
            if final:
                synchronize(accelerator.device)
                start = time.perf_counter()
                with accelerator.autocast():
                    made = task.predict(accelerator.unwrap_model(model), batch, outputs.logits, task_config)
                synchronize(accelerator.device)
                if made is not None:
                    predict_seconds = (predict_seconds or 0.0) + time.perf_counter() - start
            preds, refs = made if made is not None else task.decode(outputs.logits.float(), batch, task_config)
            if several:  # in dataset order: a prepared loader deals batches to processes in turn
                preds = accelerator.gather_for_metrics(list(preds), use_gather_object=True)
                refs = accelerator.gather_for_metrics(list(refs), use_gather_object=True)
            predictions.extend(preds)
            references.extend(refs)
            advance()
    scores = task.score(predictions, references, task_config)
    return EvalResult(loss_sum / loss_count if loss_count else None, scores, predictions, references,
                      predict_seconds)


def _is_better(value: float, best: float | None, greater_is_better: bool, min_delta: float) -> bool:
    if best is None:
        return True
    return value > best + min_delta if greater_is_better else value < best - min_delta


@dataclass
class FitContext:
    """Everything one stage's training needs."""

    model: torch.nn.Module  # prepared by accelerate
    method: Method
    method_config: Any
    stage: Stage
    task: Task  # the run's task, or the stage's own objective (e.g. masked-LM)
    task_config: Any
    train_loader: DataLoader
    dev_loader: DataLoader
    train: TrainConfig  # with the stage's overrides applied
    accelerator: Accelerator
    progress: Progress
    on_epoch: Callable[[dict[str, Any]], None]  # called with each epoch's log entry
    on_loss: Callable[[int, float], None] = lambda step, loss: None  # each step's loss (step counts over epochs)
    # After each epoch's log entry: a reason to stop now (e.g. a tuning study pruned the trial), or None.
    should_stop: Callable[[dict[str, Any]], str | None] = lambda entry: None


@dataclass
class _Selection:
    """Model selection and early stopping on the dev split."""

    greater: bool
    min_delta: float
    best_value: float | None = None
    best_epoch: int | None = None
    best_state: dict[str, torch.Tensor] | None = None
    epochs_without_gain: int = 0

    def update(self, value: float | None, epoch: int, model: torch.nn.Module) -> None:
        if value is not None and _is_better(value, self.best_value, self.greater, self.min_delta):
            self.best_value, self.best_epoch, self.epochs_without_gain = value, epoch, 0
            self.best_state = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()
                               if p.requires_grad}
        else:
            self.epochs_without_gain += 1

    def restore(self, model: torch.nn.Module, last_epoch: int) -> None:
        """Back to the best-on-dev weights (only what trained can differ)."""
        if self.best_state is None or self.best_epoch == last_epoch:
            return
        named = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self.best_state.items():
                named[name].copy_(value)


def _optimizer(context: FitContext) -> tuple[list[torch.nn.Parameter], Any, Any]:
    cfg = context.train
    params = [p for p in context.model.parameters() if p.requires_grad]
    lr = context.method.learning_rate(context.method_config, context.stage)
    check_optimizer(cfg.optimizer, context.accelerator.device.type)
    optimizer = make_optimizer(cfg.optimizer, params, lr, cfg.weight_decay)
    # Scheduler steps: one per optimizer update, times the processes (accelerate steps a prepared
    # scheduler once per process on each update, the schedule being written for one process's data).
    updates_per_epoch = math.ceil(len(context.train_loader) / context.accelerator.gradient_accumulation_steps)
    total_steps = cfg.epochs * updates_per_epoch * context.accelerator.num_processes
    warmup = int(cfg.warmup_ratio * total_steps)
    if cfg.schedule == "linear":
        from transformers import get_linear_schedule_with_warmup

        scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    else:
        from transformers import get_constant_schedule_with_warmup

        scheduler = get_constant_schedule_with_warmup(optimizer, warmup)
    optimizer, scheduler = context.accelerator.prepare(optimizer, scheduler)
    return params, optimizer, scheduler


def fit(context: FitContext) -> FitResult:
    """Train for up to ``train.epochs`` epochs, evaluating on dev after each; keep the best-on-dev weights."""
    cfg, task, stage = context.train, context.task, context.stage
    if not any(p.requires_grad for p in context.model.parameters()):
        return _evaluate_untrained(context)
    try:
        context.accelerator.gradient_accumulation_steps = cfg.accumulation_steps(context.accelerator.num_processes)
    except ValueError as exc:
        raise ConfigError(str(exc), "pick an effective_batch_size that batch_size x processes divides") from None
    params, optimizer, scheduler = _optimizer(context)
    main = task.metadata.main_score
    selection = _Selection(cfg.monitor == "score" and task.metadata.greater_is_better.get(main, True), cfg.min_delta)
    result = FitResult([], None, f"reached epochs={cfg.epochs}", [])
    group = optimizer.param_groups[0]
    result.learning_rate = float(group.get("initial_lr", group["lr"]))
    for epoch in range(1, cfg.epochs + 1):
        seconds, train_loss = _train_epoch(context, epoch, params, optimizer, scheduler, result)
        result.epoch_seconds.append(seconds)
        dev = evaluate(context.model, context.dev_loader, task, context.task_config, context.accelerator,
                       context.progress, f"{stage.name} dev {epoch}",
                       final=task.predicts_every_epoch(context.task_config))
        # the rate the schedule left the optimizer at when the epoch ended, as it ran
        entry = {"epoch": epoch, "train_loss": train_loss, "epoch_seconds": seconds, "dev_loss": dev.loss,
                 "dev_scores": dev.scores, "learning_rate": float(optimizer.param_groups[0]["lr"])}
        result.history.append(entry)
        context.on_epoch(entry)
        dev_loss = "n/a" if dev.loss is None else f"{dev.loss:.4f}"
        context.progress.log(f"[{stage.name}] epoch {epoch}: train loss {train_loss:.4f}, dev loss {dev_loss}, "
                             f"dev {main} {dev.scores[main]:.4f}, {seconds:.1f}s")
        selection.update(dev.scores[main] if cfg.monitor == "score" else dev.loss, epoch, context.model)
        stop = context.should_stop(entry)
        if stop:
            result.stopped_because = stop
            break
        if cfg.patience is not None and selection.epochs_without_gain >= cfg.patience:
            result.stopped_because = f"no dev {cfg.monitor} gain > {cfg.min_delta} for {cfg.patience} epochs"
            break
    selection.restore(context.model, len(result.epoch_seconds))
    result.best_epoch = selection.best_epoch
    return result


def _evaluate_untrained(context: FitContext) -> FitResult:
    """A method that trains nothing (zero-shot): no epochs, the dev scores of the model as it is."""
    dev = evaluate(context.model, context.dev_loader, context.task, context.task_config, context.accelerator,
                   context.progress, f"{context.stage.name} dev", final=context.task.predicts_every_epoch(
                       context.task_config))
    entry = {"epoch": 0, "train_loss": None, "epoch_seconds": 0.0, "dev_loss": dev.loss, "dev_scores": dev.scores}
    context.on_epoch(entry)
    return FitResult([], 0, "the method trains nothing", [entry])


class _LossWatch:
    """Sums the training loss and stops the run at the first NaN/inf, naming its step and the
    last finite loss. Losses are read in windows: on a GPU every read is a sync; on a CPU it is free."""

    def __init__(self, device: torch.device, where: str, on_loss: Callable[[int, float], None],
                 steps_before: int) -> None:
        self.every = 1 if device.type == "cpu" else NAN_CHECK_EVERY
        self.where, self.window, self.total, self.last_finite = where, [], 0.0, None
        self.on_loss, self.steps_before = on_loss, steps_before
        self.first: list[float] = []  # the epoch's first (up to 10) finite losses

    def add(self, loss: torch.Tensor, step: int, last: bool) -> None:
        self.window.append(loss.detach().float())
        if step % self.every and not last:
            return
        values = torch.stack(self.window).tolist()
        self.window.clear()
        for offset, value in enumerate(values):
            if not math.isfinite(value):
                before = "none" if self.last_finite is None else f"{self.last_finite:.4g}"
                raise TrainingError(f"loss became NaN/inf ({value}) at step {step - len(values) + 1 + offset} of "
                                    f"{self.where} (last finite loss {before}); the run stopped there",
                                    "lower the learning rate, enable grad_clip, or use mixed_precision=no")
            self.total += value
            self.last_finite = value
            if len(self.first) < 10:
                self.first.append(value)
            self.on_loss(self.steps_before + step - len(values) + 1 + offset, value)


@contextlib.contextmanager
def _step_trace(context: FitContext, optimizer, params: list[torch.nn.Parameter], result: FitResult):
    """With memory_trace=true, the step's memory by part (peftbench/run/memory_accounting.py) once."""
    inner = getattr(optimizer, "optimizer", optimizer)
    ready = bool(inner.state) and (context.accelerator.gradient_accumulation_steps == 1
                                   or any(p.grad is not None for p in params))
    if not context.train.memory_trace or result.traced_step is not None or not ready:
        yield
        return
    with accounted(context.model, optimizer, context.accelerator.device) as accounting:
        yield
    result.traced_step = accounting.peak


def _accumulation_scale(steps_per_update: int, step: int, steps: int) -> float:
    """k / m for a micro-batch of an update that gathers m of the usual k micro-batches (the last of
    an epoch), so that update is the mean over its micro-batches like every other."""
    gathered = min(steps_per_update, steps - steps_per_update * ((step - 1) // steps_per_update))
    return steps_per_update / gathered


def _train_epoch(context: FitContext, epoch: int, params, optimizer, scheduler,
                 result: FitResult) -> tuple[float, float]:
    """One pass over the training data. Returns (seconds, mean train loss); evaluation excluded."""
    cfg, accelerator, model = context.train, context.accelerator, context.model
    model.train()
    steps = len(context.train_loader)
    updates_per_epoch = math.ceil(steps / accelerator.gradient_accumulation_steps)
    watch = _LossWatch(accelerator.device, f"{context.stage.name} epoch {epoch}", context.on_loss, (epoch - 1) * steps)
    positions = 0
    synchronize(accelerator.device)
    compiling = compile_seconds_so_far()
    start = time.perf_counter()
    with context.progress.steps(f"{context.stage.name} epoch {epoch}/{cfg.epochs}", steps) as advance:
        for step, batch in enumerate(context.train_loader, 1):
            fetched = time.perf_counter()
            positions += batch["input_ids"].numel()
            if result.first_step_started_at is None:
                result.first_step_started_at = time.time()
            with _step_trace(context, optimizer, params, result), accelerator.accumulate(model):
                with accelerator.autocast():
                    loss = context.method.loss(model, model_inputs(context.task, batch))
                # accelerate divides each micro-batch's loss by the accumulation steps; the epoch's
                # last update may gather fewer micro-batches, and is then averaged over those.
                scale = _accumulation_scale(accelerator.gradient_accumulation_steps, step, steps)
                accelerator.backward(loss * scale if scale != 1 else loss)
                if cfg.grad_clip and accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                if accelerator.sync_gradients:
                    update = (epoch - 1) * updates_per_epoch + math.ceil(step / accelerator.gradient_accumulation_steps)
                    context.method.after_update(accelerator.unwrap_model(model), update, cfg.epochs * updates_per_epoch)
                optimizer.zero_grad(set_to_none=True)
            if result.first_step_done_at is None:
                result.first_step_done_at = time.time()
            watch.add(loss, step, step == steps)  # on CPU this reads the loss: the step has ended
            if accelerator.device.type == "cpu":
                result.step_seconds.append(time.perf_counter() - fetched)
            advance(loss=watch.last_finite)  # the last loss read (on a GPU, every few steps)
            raise_if_interrupted()  # a Ctrl-C a finaliser swallowed (errors.Interrupted)
    synchronize(accelerator.device)
    if result.train_loss_start is None and watch.first:
        result.train_loss_start = sum(watch.first) / len(watch.first)
    compiled = compile_seconds_so_far() - compiling  # compile=true: the first batches of each shape
    result.train_positions.append(positions)
    return time.perf_counter() - start - compiled, watch.total / max(steps, 1)
