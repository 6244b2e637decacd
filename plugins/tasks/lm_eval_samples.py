"""lm-evaluation-harness's per-sample values, scored as a task (``lm-eval``), so that reports compare
runs on lm-eval's numbers with peftbench's paired tests, floors and confound checks.

Nothing trains on it: ``peftbench lm-eval`` writes, beside each run it scored, a record of this task
whose predictions are lm-eval's per-sample metric values (``{"acc": 1.0, ...}`` per document) and
whose settings name lm-eval's task, version and task config hash; a report reads it like any run.
A score is the mean of its per-sample values, as lm-eval aggregates ``acc`` and ``exact_match``.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any, Sequence

from peftbench.sdk import ConfigError, ExampleStatistics, HeadSpec, Splits, Task, TaskMetadata, hookimpl


@dataclass(frozen=True)
class LmEvalSettings:
    task: str = ""  # lm-eval's task name
    metrics: tuple[str, ...] = ("acc",)  # its per-sample metrics, as logged
    lm_eval_version: str = ""
    task_hash: str = ""  # of lm-eval's task config: another prompt or split is another task
    merged: bool = False  # the adapter merged into the base before scoring


class LmEvalSamples(Task):
    name = "lm-eval"
    description = "lm-evaluation-harness's per-sample scores of a run (written by `peftbench lm-eval`; not trained)"
    Config = LmEvalSettings
    metadata = TaskMetadata(
        kind="evaluation", language="any", description="a run re-scored by lm-evaluation-harness",
        main_score="acc", corpus="", source="https://github.com/EleutherAI/lm-evaluation-harness",
        license="MIT (lm-evaluation-harness)", default_backbone="", greater_is_better={"acc": True})

    def _refused(self) -> ConfigError:
        return ConfigError("the lm-eval task holds lm-evaluation-harness's scores of other runs; nothing trains on it",
                           "run `peftbench lm-eval RESULTS --tasks NAME` on a folder of runs")

    def head(self, config: Any) -> HeadSpec:
        raise self._refused()

    def load(self, config: Any) -> Splits:
        raise self._refused()

    def encode(self, examples: Sequence[dict], tokenizer: Any, config: Any) -> list[dict]:
        raise self._refused()

    def decode(self, logits: Any, batch: Any, config: Any) -> tuple[list, list]:
        raise self._refused()

    def score(self, predictions: list, references: list, config: Any) -> dict[str, float]:
        if not predictions:
            return {}
        return {m: sum(float(p[m]) for p in predictions) / len(predictions) for m in config.metrics
                if all(m in p for p in predictions)}

    def example_statistics(self, predictions: list, references: list, config: Any,
                           score: str) -> ExampleStatistics | None:
        import numpy as np

        if not all(score in p for p in predictions):
            return None
        values = np.array([[float(p[score]), 1.0] for p in predictions]).reshape(-1, 2)
        return ExampleStatistics(values, lambda t: t[0] / t[1] if t[1] else 0.0)

    def trivial_predictions(self, references: list, config: Any) -> list | None:
        """Multiple choice (an index per document): always the most common answer; lm-eval's acc and
        acc_norm of that are 1 where it is the document's answer."""
        if not references or not all(isinstance(r, int) for r in references):
            return None
        most = collections.Counter(references).most_common(1)[0][0]
        chosen = [m for m in config.metrics if m in ("acc", "acc_norm")]  # right where its choice is the answer
        return [{m: float(r == most) for m in chosen} for r in references] if chosen else None

    def text(self, example: dict) -> str:
        return str(example.get("text", ""))


@hookimpl
def register_tasks(register) -> None:
    register(LmEvalSamples())
