"""Counts without weights or data: a run's dry run (trainable parameters and artefact bytes per
stage, on a backbone built on the meta device) and the parameter budgets (`--match-params`) that
search a method's size setting with it."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from ..api import Stage
from ..config import TrainConfig, overrides_of
from ..errors import ConfigError
from ..components.plugins import Components
from ..records.record import Budget
from .spec import Resolved, resolve


def dry_run(resolved: Resolved) -> list[dict[str, Any]]:
    """Per stage: trainable params and the bytes the method would save. No data, no weights."""
    from .measure.sizes import count_parameters, tensor_bytes  # torch: a suite that counts nothing never imports it

    spec, method = resolved.spec, resolved.method
    rows = []
    previous = None
    for stage in method.stages(resolved.task, spec.task_config, spec.method_config, resolved.backbone):
        stage_train(spec.train, stage)  # a bad stage setting is caught here, not after hours of a first stage
        # with the quantize keywords: the backbone records what quantization would do ("applied": false)
        loaded = resolved.backbone.load(stage.head, weights=False, **spec.train.loading())
        model = method.prepare(loaded, spec.method_config, stage, previous)
        params = count_parameters(model, method.is_adapter_parameter, loaded.head_modules,
                                  method.is_auxiliary_parameter)
        artifact = tensor_bytes(method.artifact_tensors(model))
        rows.append({"stage": stage.name, "params": params, "artifact_tensor_bytes": artifact, "backbone": loaded.info})
        previous = model
    return rows


def stage_train(train: TrainConfig, stage: Stage) -> TrainConfig:
    """A stage's train settings: the run's, with the stage's overrides, checked like `--set` values."""
    try:
        return dataclasses.replace(train, **dict(stage.train_overrides))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid train settings for stage {stage.name!r}: {exc}",
                          "fix the method setting that sets it") from None


def match_params(components: Components, method: str, task: str, backbone: str | None,
                 sets: list[str] | dict[str, Any],
                 target: int, counts: dict[str, int] | None = None) -> Resolved:
    """Resolve with the method's size setting chosen so the deployed stage's own parameters
    (``params.adapter``: the task head is the same for every method, so it is left out) come
    closest to ``target``. A binary search over the monotone dry-run counts (no weights),
    skipping values the model cannot take (e.g. a bottleneck above the hidden size). ``counts``
    (spec hash -> count) lets the runs of one suite share the dry runs they have in common."""
    method_obj = components.resolve_method(method)
    if method_obj.capacity is None:
        sized = sorted(f"{e.name}: {e.component.capacity[0]}" for e in components.methods if e.component.capacity)
        raise ConfigError(f"method {method!r} has no size setting to match a parameter budget",
                          f"--match-params works with methods that declare one ({', '.join(sized[:6])}, ...)")
    key, allowed = method_obj.capacity[0], list(method_obj.capacity[1])
    given = overrides_of(sets)
    if key in given:
        raise ConfigError(f"{key} is chosen by the parameter budget and cannot also be set",
                          f"remove {key} from the settings, or the budget")
    counts = {} if counts is None else counts
    counted: dict[int, tuple[int, Resolved]] = {}

    def size(index: int) -> int:
        if index not in counted:
            resolved = resolve(components, method, task, backbone, {**given, key: allowed[index]})
            # The seed does not change a count: seeds of one grid point share their dry runs.
            unseeded = dataclasses.replace(resolved.spec, train=dataclasses.replace(resolved.spec.train, seed=0))
            if unseeded.hash not in counts:
                counts[unseeded.hash] = dry_run(resolved)[-1]["params"]["adapter"]
            counted[index] = (counts[unseeded.hash], resolved)
        return counted[index][0]

    low, high = 0, _largest_valid(size, len(allowed))
    for edge, words in ((low, "smallest"), (high, "largest")):
        if (edge == low and target < size(low)) or (edge == high and target > size(high)):
            raise ConfigError(
                f"no {key} reaches {target:,} method parameters: the {words} ({key}={allowed[edge]}) gives "
                f"{size(edge):,}", f"the nearest reachable budget is {size(edge):,}")
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if size(middle) < target else (low, middle)
    best = min((low, high), key=lambda i: abs(size(i) - target))
    achieved, resolved = counted[best]
    budget = Budget(target, key, allowed[best], achieved, (achieved - target) / target)
    return dataclasses.replace(resolved, spec=dataclasses.replace(resolved.spec, budget=budget))


def _largest_valid(size: Callable[[int], int], n: int) -> int:
    """The last index whose value the model accepts (valid values form a prefix)."""
    def valid(index: int) -> bool:
        try:
            size(index)
            return True
        except ConfigError:
            return False

    if not valid(0):
        size(0)  # re-raise: even the smallest value does not fit
    if valid(n - 1):
        return n - 1
    good, bad = 0, n - 1
    while bad - good > 1:
        middle = (good + bad) // 2
        good, bad = (middle, bad) if valid(middle) else (good, middle)
    return good
