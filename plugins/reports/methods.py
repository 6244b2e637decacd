"""A report layout for comparing many methods on one classification task (the method zoo,
benchmarks/method_zoo.py): score, what trains, what is stored, training and inference time.

`peftbench report RESULTS --table methods`; rows are configurations, mean +- std over seeds.
"""

from __future__ import annotations

from peftbench.sdk import Column, TableSpec, hookimpl

MB = 1e6

METHODS = TableSpec(
    name="methods",
    description="methods side by side on a classification task: accuracy, adapter / trainable params, "
                "stored MB, s/epoch, inference s (plain; unmerged and merged where the method merges)",
    columns=(
        Column("method", "method.name"),
        Column("sized by", "budget.setting", digits=None),  # --match-params: the setting it chose, and its value
        Column("value", "budget.value", digits=0),
        Column("accuracy %", "scores.test.accuracy", "higher", scale=100, digits=2),
        Column("adapter params", "params.adapter", digits=0),
        Column("trainable params", "params.trainable", "lower", digits=0),
        # The tensors the method stores per task (its artifact_tensors), known whether or not the
        # run saved its artefact (tuned zoos do not save one per trial and final).
        Column("stored MB", "artifact.tensor_bytes", "lower", scale=1 / MB, digits=2),
        Column("s/epoch", "time.epoch_mean_seconds", "lower", digits=1),
        Column("inference s", "inference.modes.default.seconds", "lower", digits=2),
        Column("unmerged s", "inference.modes.unmerged.seconds", "lower", digits=2),
        Column("merged s", "inference.modes.merged.seconds", "lower", digits=2),
    ),
    sort_by="method",
    where=lambda frame: frame["scores.test.accuracy"].notna() if "scores.test.accuracy" in frame
    else frame["task.name"].map(lambda _: False),
)


@hookimpl
def register_tables(register) -> None:
    register(METHODS)
