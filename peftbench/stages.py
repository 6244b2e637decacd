"""Suite stages: steps a suite runs after its runs (and, with [tune], its finals) all succeeded, each
configured by a top-level table of the suite file named like the stage (``[lm_eval]``: lm-evaluation-
harness on every run). The core names none; plugins register them (``register_suite_stages``)."""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any, Callable

from .api import Component
from .errors import ConfigError


class SuiteStage(Component):
    """A suite stage. Rerunning the suite runs it again: a stage skips what it already did."""

    @abstractmethod
    def check(self, table: dict[str, Any], where: str) -> None:
        """Refuse a bad table in one line (ConfigError naming ``where``) when the suite is planned,
        dry runs included."""

    @abstractmethod
    def run(self, table: dict[str, Any], results: Path, components: Any, log: Callable[[str], None]) -> None:
        """Do the stage's work on the suite's results folder."""


def planned_stages(suite: dict[str, Any], components: Any) -> list[tuple[SuiteStage, dict[str, Any]]]:
    """The stages the suite file's tables name, in file order, each table checked by its stage."""
    found = []
    for name, table in suite.items():
        if name in components.stages:
            if not isinstance(table, dict):
                raise ConfigError(f"[{name}] must be a table", f"write it as [{name}] with its keys below")
            stage = components.stages.get(name)
            stage.check(table, f"[{name}]")
            found.append((stage, table))
    return found
