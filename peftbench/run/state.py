"""What the steps of one run share (the run's record, folder, accelerator, data) and one stage
ready to train; and the data loaders every step builds the same way."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import psutil
import torch
from torch.utils.data import DataLoader

from ..records import record as records
from ..api import LoadedBackbone, Splits, Stage, Task
from ..config import TrainConfig
from .progress import Progress
from ..records.record import Params, RunRecord
from .spec import Resolved


class Marks:
    """Wall-clock seconds since the process started (in a warm worker: since it took the run), for
    startup-latency accounting."""

    def __init__(self) -> None:
        taken = os.environ.get("PEFTBENCH_RUN_STARTED")
        self.origin = float(taken) if taken else psutil.Process().create_time()
        self.marks: dict[str, float] = {}

    def __call__(self, name: str, at: float | None = None) -> None:
        if name not in self.marks:
            self.marks[name] = (at if at is not None else time.time()) - self.origin


@dataclass
class RunState:
    """What every step of one run shares."""

    resolved: Resolved
    record: RunRecord
    run_dir: Path
    progress: Progress
    accelerator: Any = None  # accelerate.Accelerator, once set up
    track: tuple[str, ...] = ()  # experiment trackers (peftbench.run.tracking)
    writes: bool = True  # the main process writes the record, predictions and artefact; other processes only train
    marks: Marks = field(default_factory=Marks)
    started: float = field(default_factory=time.perf_counter)
    splits: dict[int, Splits] = field(default_factory=dict)  # per objective: a task loads its data once
    stages: list[Stage] = field(default_factory=list)
    forgetting_texts: list[str] = field(default_factory=list)  # forgetting_data, read once for before and after

    @property
    def record_path(self) -> Path:
        return self.run_dir / records.RECORD_FILE


@dataclass
class PreparedStage:
    """One stage, ready to train."""

    stage: Stage
    objective: Task
    train: TrainConfig
    loaded: LoadedBackbone
    model: torch.nn.Module  # prepared by accelerate
    loaders: dict[str, DataLoader]
    encoded: dict[str, list]
    collate: Callable
    params: Params
    splits: Splits  # the raw examples (the objective may be the task adapted to the backbone: not the loader)
    model_load_seconds: float


def loader(encoded, collate, batch_size: int, shuffle: bool, seed: int, group_by_length: bool = False) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    if shuffle and group_by_length:
        from transformers.trainer_pt_utils import LengthGroupedSampler

        sampler = LengthGroupedSampler(batch_size, lengths=[len(ex["input_ids"]) for ex in encoded],
                                       generator=generator)
        return DataLoader(encoded, batch_size=batch_size, sampler=sampler, collate_fn=collate)
    return DataLoader(encoded, batch_size=batch_size, shuffle=shuffle, collate_fn=collate,
                      generator=generator if shuffle else None)
