"""Run records: one typed RunRecord per run, one JSON file, per-epoch JSONL beside it.

Layout: ``<results>/<run_id>/record.json``, ``epochs.jsonl``, ``predictions.json``,
``artifact/``. ``record.json`` is only ever replaced atomically, so a reader never
sees a half-written record, whatever happens to the writing process.

The schema is the ``RunRecord`` dataclass below; ``docs/record.schema.json`` is
generated from it (``python -m peftbench.records.record``) and a test keeps the two equal.
Records of an older ``schema_version`` load through ``_MIGRATIONS``; a newer
version is refused with one line.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

from . import files
from ..errors import ResultsError

SCHEMA_VERSION = 2
RECORD_FILE = "record.json"
EPOCHS_FILE = "epochs.jsonl"
PREDICTIONS_FILE = "predictions.json"
Status = Literal["running", "success", "failed", "cancelled"]


@dataclass
class Params:
    """Parameters by role (see measure.sizes.count_parameters); ``trainable`` is what deploys."""

    adapter: int
    head: int
    backbone_trainable: int
    trainable: int
    auxiliary: int
    total: int


@dataclass
class Budget:
    """``--match-params``: the target, the size setting chosen for it and what it achieved."""

    target: int
    setting: str
    value: Any
    achieved: int
    deviation: float


@dataclass
class Memory:
    """Peak memory; CUDA fields are null on CPU, NVML fields null where the driver cannot say."""

    cuda_max_allocated_bytes: int | None = None
    cuda_max_reserved_bytes: int | None = None
    nvml_process_peak_bytes: int | None = None
    nvml_device_used_peak_bytes: int | None = None
    cpu_peak_rss_bytes: int | None = None
    nvml_error: str | None = None


@dataclass
class StepMemory:
    """The largest live total of one traced step (peftbench/run/memory_accounting.py), split by part."""

    peak_bytes: int
    weights: int
    gradients: int
    optimizer: int
    activations: int


@dataclass
class MemoryPrediction:
    """Peak accelerator memory predicted before the run (peftbench/run/memory.py): a training step (with
    optimizer state in place) and an evaluation forward pass, traced on fake tensors with every row
    at the task's longest input; the stage whose training peak is highest."""

    stage: str
    train: StepMemory
    evaluation: StepMemory
    batch_size: int
    eval_batch_size: int
    sequence_length: int
    device: str  # "cuda": storages rounded to the caching allocator's 512-byte blocks
    note: str


@dataclass
class Energy:
    """Energy of the run's training and evaluation, measured: NVML's device total-energy counter on
    CUDA, Linux RAPL package counters on CPU; null (with the reason) where neither can be read."""

    joules: float | None = None
    source: str | None = None
    error: str | None = None


@dataclass
class Forgetting:
    """Mean per-token cross-entropy (shifted targets) on ``forgetting_data``: the base model before
    the method attached anything, the tuned model after; ``forgetting = after - before``."""

    data: str
    fingerprint: str  # sha256 of the texts, so two runs' figures are known to be on the same data
    texts: int
    tokens: int
    before: float
    after: float | None = None
    forgetting: float | None = None


@dataclass
class StepTimes:
    """Training-step times of one stage, batch fetching excluded. Measured on CPU only (null on a
    GPU, where timing each step would need a sync per step). The minimum is the least disturbed
    figure on a shared machine."""

    count: int
    min: float
    median: float


@dataclass
class StageRecord:
    """What one training stage (e.g. TAPT's masked-LM stage, then fine-tuning) cost and chose."""

    objective: str
    train_overrides: dict[str, Any]
    learning_rate: float
    data_sizes: dict[str, int]
    params: Params
    epoch_seconds: list[float]
    epoch_mean_seconds: float | None
    train_seconds: float  # compile seconds (compile=true) excluded
    best_epoch: int | None
    stopped_because: str
    best_dev: dict[str, Any] | None
    model_load_seconds: float
    backbone: dict[str, Any]
    artifact_tensor_bytes: int
    auxiliary_tensor_bytes: int
    memory: Memory | None = None
    step_seconds: StepTimes | None = None
    # Did the training loss fall? The mean loss of the first (up to 10) steps, and each epoch's mean.
    train_loss_start: float | None = None
    train_loss_epochs: list[float] = field(default_factory=list)
    # Token positions computed per training epoch, padding included (padding, length grouping and packing change it).
    train_positions: list[int] = field(default_factory=list)
    compile_seconds: float | None = None  # torch.compile's during training and dev evaluation (compile=true)


@dataclass
class ComponentRef:
    name: str | None = None
    plugin: str | None = None  # the distribution (and version) that registered it


@dataclass
class MethodRef(ComponentRef):
    # The method's family and its settings under the names the family shares (``Method.family``): two
    # methods of one family that differ in these differ in more than their own idea (a confound).
    family: str | None = None
    family_settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskRef(ComponentRef):
    main_score: str | None = None
    greater_is_better: dict[str, bool] = field(default_factory=dict)


@dataclass
class BackboneRef(ComponentRef):
    info: dict[str, Any] | None = None  # as the backbone reports it: source, config, revision, ...


@dataclass
class Timing:
    epoch_seconds: list[float] = field(default_factory=list)  # of the deployed stage; evaluation excluded
    epoch_mean_seconds: float | None = None
    step_seconds: StepTimes | None = None  # of the deployed stage; CPU only
    train_seconds: float | None = None  # all stages, per-epoch dev evaluation included, compiling excluded
    compile_seconds: float | None = None  # all stages' torch.compile seconds (compile=true), else None
    run_seconds: float | None = None
    model_load_seconds: float | None = None
    process_start_to_first_step_seconds: float | None = None
    startup_marks: dict[str, float] = field(default_factory=dict)  # seconds since the process started


@dataclass
class Artifact:
    path: str | None = None
    bytes: int | None = None  # on disk, what a user stores per task
    tensor_bytes: int | None = None  # the tensors the method saves
    auxiliary_tensor_bytes: int | None = None  # trained, then thrown away (auxiliary heads)
    format: list[str] | None = None
    error: str | None = None  # why it was not saved (a full or read-only disk): the scores stand


@dataclass
class Environment:
    python: str
    platform: str
    packages: dict[str, str | None]  # the core's libraries and those the run's components declare
    plugins: dict[str, str]  # distributions that provide peftbench plugins
    device: str
    cuda: str | None
    git_commit: str | None
    hostname: str


@dataclass
class RunRecord:
    """Everything one run produced. Every field exists from the start; unknown values are null."""

    schema_version: int = SCHEMA_VERSION
    run_id: str | None = None
    pid: int | None = None  # with host: lets a resumed suite tell a live run from a killed one
    host: str | None = None
    status: Status = "running"
    error: str | None = None
    traceback: str | None = None  # only for unexpected errors (a bug), never for user mistakes
    started_at: str | None = None
    finished_at: str | None = None
    config: dict[str, Any] | None = None  # the RunSpec: components and their resolved settings
    config_hash: str | None = None
    method: MethodRef = field(default_factory=MethodRef)
    task: TaskRef = field(default_factory=TaskRef)
    backbone: BackboneRef = field(default_factory=BackboneRef)
    seed: int | None = None
    effective_batch_size: int | None = None  # examples per optimizer update: batch x accumulation x processes
    processes: int = 1  # data-parallel training processes (devices) the run used
    budget: Budget | None = None
    data: dict[str, Any] | None = None  # sizes per split plus what the task's loader reports
    stages: dict[str, StageRecord] = field(default_factory=dict)  # in training order
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)  # split -> score name -> value
    # split -> {"majority": {score: value}, "chance": {score: value}}: what a run that learned nothing scores
    floors: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # How tuning made the run (null outside tuning): role trial | final, study, trial, trials, selected_on,
    # space, chosen, and for finals the study's trials_complete / trials_pruned.
    tuning: dict[str, Any] | None = None
    best_epoch: int | None = None
    stopped_because: str | None = None
    # Whether the deployed stage's training loss fell: some epoch's mean below the first steps' mean.
    loss_fell: bool | None = None
    params: Params | None = None
    time: Timing = field(default_factory=Timing)
    memory: Memory | None = None  # with several processes: each field's peak over the processes
    memory_predicted: MemoryPrediction | None = None  # on CUDA, or with gpu_memory_gb or memory_trace set
    memory_traced: StepMemory | None = None  # memory_trace=true: the deployed stage's traced training step
    process_memory: list[Memory] | None = None  # with several processes: each one's peaks, by rank
    energy: Energy | None = None
    forgetting: Forgetting | None = None  # causal LMs, with --set forgetting_data=FILE
    artifact: Artifact = field(default_factory=Artifact)
    inference: dict[str, Any] | None = None  # split, examples, per-mode seconds (e.g. LoRA merged/unmerged)
    environment: Environment | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunRecord":
        """Validated against the schema (pydantic checks every field's type)."""
        return _adapter().validate_python(data)


# ------------------------------------------------------------------ files


def read_record(path: Path) -> dict[str, Any]:
    """One record file as a dict in the current schema's shape (migrated from older versions)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # JSON syntax, not UTF-8, nested beyond reason
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise ResultsError(f"{path} is not a readable run record ({reason})", "delete or repair that file") from None
    if not isinstance(record, dict):
        raise ResultsError(f"{path} is not a run record (a JSON {type(record).__name__}, not an object)",
                           "delete or repair that file")
    return migrate(record, path)


def iter_records(results_dir: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    if not results_dir.exists():
        raise ResultsError(f"results folder {results_dir} does not exist",
                           "run `peftbench run ...` first or pass the right folder")
    for path in sorted(results_dir.rglob(RECORD_FILE)):
        yield path, read_record(path)


def shown_status(record: dict[str, Any]) -> str | None:
    """A record's status as a reader should see it: ``running`` whose process is gone is ``died``."""
    status = record.get("status")
    if status == "running" and not files.process_alive(record.get("pid"), record.get("host"),
                                                       record.get("started_at")):
        return "died"
    return status


def load_frame(results_dir: Path, statuses: tuple[str, ...] = ("success",)):
    """All records as one flat pandas DataFrame (nested keys joined with '.'), plus ``record_path``
    (the run's folder, where its predictions and artefact are)."""
    import pandas as pd

    shown = ((path, record, shown_status(record)) for path, record in iter_records(results_dir))
    rows = [{**record, "status": status, "record_path": str(path.parent)}
            for path, record, status in shown if status in statuses]
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame([_flatten(row, "", {}) for row in rows])
    # pandas' string dtype keeps each text column in a block of its own; as plain objects they share
    # one, and splitting the frame into configurations gets ten times faster (copy() consolidates).
    return frame.astype({c: object for c in frame.columns if pd.api.types.is_string_dtype(frame[c].dtype)
                         and frame[c].dtype != object}).copy()


def set_aside_duplicates(frame):
    """One successful record per configuration and seed (the config hash covers the seed): the newest.
    Two records of one run (run twice, or results folders merged) would otherwise count as two seeds.
    Returns the frame and how many records were set aside."""
    import pandas as pd

    if frame.empty or "config_hash" not in frame or "status" not in frame:
        return frame, 0
    success = frame["status"] == "success"
    newest_last = frame[success].sort_values(["finished_at", "run_id"], na_position="first")
    kept = newest_last.drop_duplicates("config_hash", keep="last")
    # copy(): the concatenation leaves one block per column, which pandas warns about on every insert
    return pd.concat([kept, frame[~success]]).sort_index().copy(), int(success.sum()) - len(kept)


def _flatten(value: dict[str, Any], prefix: str, out: dict[str, Any]) -> dict[str, Any]:
    """Nested keys joined with '.' (as pandas.json_normalize does, at a third of its cost)."""
    for key, item in value.items():
        if isinstance(item, dict):
            _flatten(item, f"{prefix}{key}.", out)
        else:
            out[f"{prefix}{key}"] = item
    return out


# ------------------------------------------------------------------ schema and migration


@functools.cache
def _adapter():
    from pydantic import TypeAdapter

    return TypeAdapter(RunRecord)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a record, generated from the dataclasses above."""
    schema = _adapter().json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema,
            "title": f"peftbench run record (schema_version {SCHEMA_VERSION})"}


def _v1_to_v2(record: dict[str, Any]) -> dict[str, Any]:
    """v1 added some fields only as the run went (traceback, startup marks, auxiliary bytes)."""
    record.setdefault("traceback", None)
    record.setdefault("time", {}).setdefault("startup_marks", {})
    record.setdefault("artifact", {}).setdefault("auxiliary_tensor_bytes", None)
    for stage in (record.get("stages") or {}).values():
        stage.setdefault("auxiliary_tensor_bytes", 0)
    record["schema_version"] = 2
    return record


_MIGRATIONS = {1: _v1_to_v2}  # version -> the step to the next version


def migrate(record: dict[str, Any], where: Path) -> dict[str, Any]:
    """A record of any version this peftbench knows, in the current version's shape."""
    version = record.get("schema_version")
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise ResultsError(f"{where} has record schema version {version}; this peftbench reads up to "
                           f"{SCHEMA_VERSION}", "upgrade peftbench to report it")
    while version != SCHEMA_VERSION:
        if version not in _MIGRATIONS:
            raise ResultsError(f"{where} has an unknown record schema version {version!r}",
                               "re-run that configuration or use the peftbench version that wrote it")
        record = _MIGRATIONS[version](record)
        version = record["schema_version"]
    return record


def load_record(path: Path) -> RunRecord:
    """One record file as a typed RunRecord, validated (migrated from older versions)."""
    from pydantic import ValidationError

    data = read_record(path)
    try:
        return RunRecord.from_dict(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ResultsError(f"{path}: {where}: {first['msg']}", "delete or repair that file") from None


def is_known_field(path: str) -> bool:
    """Whether a dotted path (e.g. ``scores.test.accuracy``) can exist in a record: report
    columns are checked against the schema, not against whatever records happen to hold."""
    annotation: Any = RunRecord
    for part in path.split("."):
        annotation = _without_none(annotation)
        if annotation is Any:
            return True
        if dataclasses.is_dataclass(annotation):
            hints = typing.get_type_hints(annotation)
            if part not in hints:
                return False
            annotation = hints[part]
        elif typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
        else:
            return False
    return True


def _without_none(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


if __name__ == "__main__":  # python -m peftbench.records.record > docs/record.schema.json
    print(json.dumps(json_schema(), indent=2))
