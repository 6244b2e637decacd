"""The plugin SDK: everything a peftbench plugin may use, in one module.

Plugins, built-in (``plugins/``) and outside distributions alike, import from
here and from nowhere else in peftbench::

    from peftbench.sdk import Method, Stage, LoadedBackbone, ConfigError, hookimpl

What is not exported here is internal and may change without notice. The
tutorial (docs/writing-plugins.md) builds a method and a task on it.
"""

from __future__ import annotations

from .api import (Backbone, Column, Component, Encoded, Example, ExampleStatistics, HeadSpec, LoadedBackbone, Method,
                  MethodWrapper, SearchSpace, Splits, Stage, TableSpec, Task, TaskMetadata)
from .config import apply_sets, field_types, parse_sets, parse_value
from .run.data import locate
from .run.datacache import cache_root, encode_cached, load_splits, tokenizer_fingerprint
from .errors import (BackboneError, ConfigError, DataError, PeftbenchError, RegistryError, ResultsError,
                     TrainingError)
from .executor import ConfiguredExecutor, Executor, Job
from .hookspecs import hookimpl
from .components.installed import install_hint, is_installed, missing_libraries
from .cli.context import CommandContext
from .components.plugins import Components
from .components.plugins import load as load_components
from .run.progress import Progress
from .run.progress import current as current_progress
from .records.files import published, write_json_atomic
from .records.record import PREDICTIONS_FILE, RunRecord, iter_records, load_record
from .run.spec import Resolved, RunSpec
from .stages import SuiteStage
from .suite.workers import WarmWorker, renewed

__all__ = [
    # contracts a plugin implements (peftbench.api)
    "Component", "Method", "MethodWrapper", "Task", "Backbone", "Stage", "HeadSpec", "TaskMetadata", "Splits",
    "LoadedBackbone", "ExampleStatistics", "SearchSpace",
    "Example", "Encoded", "TableSpec", "Column", "Executor", "ConfiguredExecutor", "Job", "SuiteStage",
    # registering
    "hookimpl", "CommandContext", "Components", "load_components",
    # errors: one line and exit 1 in the CLI
    "PeftbenchError", "ConfigError", "DataError", "BackboneError", "TrainingError", "ResultsError", "RegistryError",
    # data location and caching
    "locate", "cache_root", "encode_cached", "load_splits", "tokenizer_fingerprint",
    # settings from `--set` pairs
    "parse_sets", "apply_sets", "parse_value", "field_types",
    # libraries a component declares: installed, or which extra installs them
    "is_installed", "missing_libraries", "install_hint",
    # progress bars inside a run
    "Progress", "current_progress",
    # runs and their records
    "RunSpec", "Resolved", "RunRecord", "iter_records", "load_record", "write_json_atomic", "published", "PREDICTIONS_FILE",
    # executors: a process that runs job after job (imports once), renewed when spent
    "WarmWorker", "renewed",
]
