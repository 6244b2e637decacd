"""Suites: a TOML file that expands into many runs (grids x seeds), executed
with skip-if-done, keep-going and resume semantics.

File shape::

    description = "..."
    track = ["tensorboard"]    # optional: experiment trackers every run reports to
    [defaults]                 # applies to every block
    task = "livedoor-news"
    backbone = "cl-tohoku/bert-base-japanese"
    seeds = [42]
    [defaults.set]             # --set values
    batch_size = 8

    [[runs]]                   # a block: one method, a grid over any settings
    name = "lora-ranks"
    method = "lora"
    [runs.set]
    lr = 5e-4
    [runs.grid]
    r = [2, 4, 8]
    [runs.derive]              # derived settings: alpha takes r's value
    alpha = "r"

    [[runs]]                   # or: size the method to a parameter budget
    method = "adapter"
    match_params = 300000      # picks the bottleneck (LoRA: r) closest to 300k method params

A run is identified by its config hash: a suite skips a run whose record
already exists with status success, so re-running a suite (after a crash, a
kill, a reboot) finishes only what is missing.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..records import files, record as records
from ..errors import ConfigError
from ..executor import Job
from ..components.plugins import Components
from ..run.counting import match_params
from ..run.spec import Resolved, resolve
from ..stages import planned_stages

TOP_KEYS = {"description", "defaults", "runs", "track", "tune"}
BLOCK_KEYS = {"name", "method", "task", "backbone", "seeds", "set", "grid", "derive", "match_params"}
SPECS_FOLDER = "suite-specs"


@dataclass(frozen=True)
class PlannedRun:
    block: str
    resolved: Resolved = field(compare=False, repr=False)
    point: tuple[str, ...] = ()  # the grid values and seed that tell this run from its block siblings

    @property
    def hash(self) -> str:
        return self.resolved.spec.hash


def job(run: PlannedRun, results: Path, track: tuple[str, ...] = ()) -> Job:
    """The run as a job for an executor: its spec written as JSON where the child process reads it."""
    spec_file = results / SPECS_FOLDER / f"{run.hash}.json"
    files.write_json_atomic(spec_file, run.resolved.spec.to_json())
    args = ("run", "--spec", str(spec_file), "--results", str(results), "--quiet",
            *(arg for name in track for arg in ("--track", name)))
    return Job(run.hash, args, results / "suite-logs" / f"{run.hash}.log")


def trackers(path: Path) -> tuple[str, ...]:
    """The suite file's ``track`` list (experiment trackers for every run)."""
    track = read_suite(path).get("track", [])
    if not isinstance(track, list) or not all(isinstance(name, str) for name in track):
        raise ConfigError(f"{path}: track must be a list of tracker names", 'e.g. track = ["tensorboard", "mlflow"]')
    return tuple(track)


def tune_settings(path: Path):
    """The suite's [tune] table (peftbench.suite.tuning.TuneSettings), or None when it tunes nothing."""
    table = read_suite(path).get("tune")
    if table is None:
        return None
    from .tuning import read_tune

    return read_tune(table, f"{path.name}: tune")


def read_suite(path: Path) -> dict[str, Any]:
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        raise ConfigError(f"{path}: suites are TOML files, not {path.suffix.lstrip('.').upper()}",
                          "write it as TOML (see benchmarks/cpu-livedoor-seeds.toml)")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read suite file {path} ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start})", "save the suite file as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message ends with "(at line L, column C)"
        raise ConfigError(f"{path}: invalid TOML (suites are TOML files): {exc}",
                          "fix the syntax at that line and column") from None


def _shown(value: Any, where: str) -> str:
    """A setting's value as the plan shows it (and as `--set` would take it); refuses a TOML value
    no setting can hold (a table, a date)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, (int, float, str)) for v in value):
        return ",".join(str(v) for v in value)
    raise ConfigError(f"{where}: {value!r} is not a number, string, boolean or list of them")


def _check_keys(table: Any, allowed: set[str] | None, where: str) -> dict[str, Any]:
    """A TOML table with only ``allowed`` keys (None: any key)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table, got {type(table).__name__}")
    unknown = sorted(set(table) - allowed) if allowed is not None else []
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key", f"valid keys there: {', '.join(sorted(allowed))}")
    return table


def _seeds(value: Any, where: str) -> list[int]:
    if value is None:
        return []
    if not isinstance(value, list) or not value or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in value):
        raise ConfigError(f"{where}: seeds must be a non-empty list of integers")
    return value


@dataclass
class _Block:
    """One [[runs]] block, validated, with [defaults] applied."""

    where: str
    name: str
    components: dict[str, Any]  # method, task, backbone
    seeds: list[int | None]
    base: dict[str, Any]  # settings every run of the block has
    grid: dict[str, list]
    derive: dict[str, str]
    budget: int | None


def _block(raw: Any, index: int, defaults: dict[str, Any]) -> _Block:
    where = f"runs[{index}]"
    block = _check_keys(raw, BLOCK_KEYS, where)
    name = str(block.get("name", where))
    merged = {k: block.get(k, defaults.get(k)) for k in ("method", "task", "backbone")}
    for key in ("method", "task"):
        if not isinstance(merged[key], str):
            raise ConfigError(f"{where} ({name}): no {key}", f"set {key} = \"...\" in the block or in [defaults]")
    base = {**_check_keys(defaults.get("set", {}), None, "defaults.set"),
            **_check_keys(block.get("set", {}), None, f"{where}.set")}
    grid = _check_keys(block.get("grid", {}), None, f"{where}.grid")
    for key, values in grid.items():
        if not isinstance(values, list):
            raise ConfigError(f"{where}.grid.{key}: must be a list of values")
        if not values:
            raise ConfigError(f"{where}.grid.{key} is empty: the grid produces zero runs")
    budget = block.get("match_params", defaults.get("match_params"))
    if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool) or budget < 1):
        raise ConfigError(f"{where}.match_params must be a positive integer (a parameter budget)")
    seeds = _seeds(block.get("seeds", defaults.get("seeds")), f"{where}.seeds") or [None]
    derive = _check_keys(block.get("derive", {}), None, f"{where}.derive")
    return _Block(where, name, merged, seeds, base, grid, derive, budget)


def _block_runs(block: _Block, components: Components, counts: dict[str, int]) -> list[PlannedRun]:
    """Every grid point x seed of a block, resolved (and sized to its budget, if it has one)."""
    keys = list(block.grid)
    runs = []
    for point_values in itertools.product(*(block.grid[k] for k in keys)):
        values = {**block.base, **dict(zip(keys, point_values))}
        for target, source in block.derive.items():
            if source not in values:
                raise ConfigError(f"{block.where}.derive.{target} = {source!r}: no setting {source!r} to copy",
                                  f"settings in this block: {', '.join(values) or 'none'}")
            values[target] = values[source]
        point = tuple(f"{k}={_shown(v, block.where)}" for k, v in zip(keys, point_values))
        for key, value in values.items():
            _shown(value, f"{block.where}: {key}")
        for seed in block.seeds:
            # Typed as TOML gave them, checked by the parser `--set` uses (never turned into text and back).
            if seed is not None and "seed" in values:
                raise ConfigError(f"{block.where}: seed is set and seeds are given", "keep one of the two")
            settings = {**values, **({"seed": seed} if seed is not None else {})}
            method, task, backbone = (block.components[k] for k in ("method", "task", "backbone"))
            try:
                if block.budget is None:
                    resolved = resolve(components, method, task, backbone, settings)
                else:  # the method's size setting is chosen to meet the parameter budget
                    resolved = match_params(components, method, task, backbone, settings, block.budget, counts)
            except ConfigError as exc:
                raise ConfigError(f"{block.where} ({block.name}): {exc.what}", exc.fix) from None
            budget = resolved.spec.budget
            runs.append(PlannedRun(block.name, resolved, point + ((f"seed={seed}",) if seed is not None else ()) + (
                (f"{budget.setting}={budget.value} (budget {block.budget:,})",) if budget else ())))
    return runs


def expand(path: Path, components: Components) -> tuple[str, list[PlannedRun]]:
    """The suite's description and its runs, validated (every config resolved and type-checked)."""
    suite = _check_keys(read_suite(path), TOP_KEYS | {e.name for e in components.stages}, path.name)
    planned_stages(suite, components)  # a bad stage table is refused with the plan
    defaults = _check_keys(suite.get("defaults", {}), BLOCK_KEYS - {"name", "grid", "derive"}, "defaults")
    blocks = suite.get("runs")
    if not isinstance(blocks, list) or not blocks:
        raise ConfigError(f"{path}: no [[runs]] blocks", "add at least one [[runs]] table with a method")
    planned: list[PlannedRun] = []
    seen: dict[str, str] = {}
    counts: dict[str, int] = {}  # dry-run counts shared by the budget searches of this suite
    for index, raw in enumerate(blocks):
        block = _block(raw, index, defaults)
        for run in _block_runs(block, components, counts):
            if run.hash in seen:
                raise ConfigError(f"{block.where} ({block.name}) repeats a run of {seen[run.hash]} "
                                  f"(config hash {run.hash})", "remove the duplicate grid value or block")
            seen[run.hash] = f"{block.where} ({block.name})"
            planned.append(run)
    if not planned:
        raise ConfigError(f"{path} expands to zero runs")
    return str(suite.get("description", "")), planned


# ------------------------------------------------------------------ state of a results folder


def run_states(results: Path, repair: bool = True) -> dict[str, str]:
    """config hash -> "success" | "running" | "failed" | "cancelled" (best status wins).

    A record left "running" by a process that no longer exists (killed, machine
    rebooted) is rewritten as cancelled: a suite runs such configs again, while a
    "failed" one (an error in the run itself) waits for --rerun-failed.
    """
    order = {"success": 4, "running": 3, "failed": 2, "cancelled": 1}
    states: dict[str, str] = {}
    if not results.exists():
        return states
    for path, record in records.iter_records(results):
        status = record.get("status")
        if status == "running" and not files.process_alive(record.get("pid"), record.get("host"),
                                                             record.get("started_at")):
            if repair:  # a dry run reports it as such and changes nothing on disk
                record["status"] = "cancelled"
                record["error"] = "the run's process ended without finishing (killed, or the machine stopped)"
                files.write_json_atomic(path, record)
                files.remove_partial_writes(path.parent)  # a killed process could not clean up
            status = "cancelled"
        key = record.get("config_hash")
        if key and order.get(status, 0) > order.get(states.get(key, ""), 0):
            states[key] = status
    return states
