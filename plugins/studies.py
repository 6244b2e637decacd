"""Report layouts of the published studies peftbench reproduces (../shared/SEEDS.md)."""

from __future__ import annotations

from peftbench.api import Column, TableSpec
from peftbench.hookspecs import hookimpl

MB = 1e6

S2_TABLE_3_2 = TableSpec(
    name="s2",
    description="S2 Table 3.2: LoRA rank vs accuracy, saved size and training time (livedoor news)",
    columns=(
        # Rows are ranks; a method without a rank (full fine-tuning) shows its name.
        Column("r", "config.method_config.r", fallback="method.name", digits=0),
        Column("accuracy %", "scores.test.accuracy", "higher", scale=100, digits=2),
        Column("size MB", "artifact.bytes", "lower", scale=1 / MB, digits=2),
        Column("train time s", "time.train_seconds", "lower", digits=0),
    ),
    sort_by="r",
)


@hookimpl
def register_tables(register) -> None:
    register(S2_TABLE_3_2)
