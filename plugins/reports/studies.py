"""Report layouts of the published studies peftbench reproduces (docs/studies.md).

Each layout keeps the study's columns and units; rows are peftbench runs
(grouped over seeds). `peftbench report RESULTS --table NAME`.
"""

from __future__ import annotations

from peftbench.sdk import Column, TableSpec, hookimpl

MB = 1e6
MIB = 2**20


def _task(name: str):
    return lambda frame: frame["task.name"] == name


def _has(field: str, task: str):
    return lambda frame: (frame["task.name"] == task) & (
        frame[field].notna() if field in frame else False)


def _setting(frame, column: str):
    return frame[column] if column in frame else frame["method.name"].map(lambda _: None)


def _s2(frame, lora_lr: float, early_stopping: bool):
    """S2's blocks: LoRA at one learning rate (+ full FT at 5e-5), with or without early stopping."""
    lr = _setting(frame, "config.method_config.lr")
    patience = _setting(frame, "config.train.patience")
    stopped_early = patience.notna()
    is_lora = frame["method.name"] == "lora"
    is_full = frame["method.name"] == "full"
    return (frame["task.name"] == "livedoor-news") & (stopped_early == early_stopping) & (
        (is_lora & (lr == lora_lr)) | (is_full & (lr == 5e-5)))


_S2_COLUMNS = (
    # Rows are ranks; a method without a rank (full fine-tuning) shows its name.
    Column("r", "config.method_config.r", fallback="method.name", digits=0),
    Column("accuracy %", "scores.test.accuracy", "higher", scale=100, digits=2),
    Column("size MB", "artifact.bytes", "lower", scale=1 / MB, digits=2),
    Column("train time s", "time.train_seconds", "lower", digits=0),
)

S2_TABLE_3_2 = TableSpec(
    name="s2",
    description="S2 Table 3.2: LoRA rank vs accuracy, saved size and training time (livedoor news)",
    columns=_S2_COLUMNS,
    sort_by="r",
    where=lambda frame: _s2(frame, 5e-4, early_stopping=False),
)

S2_EXTRA_1 = TableSpec(
    name="s2-extra-1",
    description="S2 extra 1: LoRA with full fine-tuning's lr 5e-5, 5 epochs",
    columns=_S2_COLUMNS,
    sort_by="r",
    where=lambda frame: _s2(frame, 5e-5, early_stopping=False),
)

S2_EXTRA_2 = TableSpec(
    name="s2-extra-2",
    description="S2 extra 2: lr 5e-5, early stopping on dev loss (patience 5, threshold 0.005, max 100 epochs)",
    columns=(*_S2_COLUMNS, Column("best epoch", "best_epoch", digits=0),
             Column("stopped because", "stopped_because")),
    sort_by="r",
    where=lambda frame: _s2(frame, 5e-5, early_stopping=True),
)

S1_TABLE_5_3 = TableSpec(
    name="s1",
    description="S1 Table 5.3: KWDLC NER, test set, entity-level scores",
    columns=(
        Column("method", "method.name"),
        Column("F1", "scores.test.f1", "higher", digits=5),
        Column("Precision", "scores.test.precision", "higher", digits=5),
        Column("Recall", "scores.test.recall", "higher", digits=5),
    ),
    where=_task("kwdlc-ner"),
)

S1_TABLE_6_1 = TableSpec(
    name="s1-tapt-cost",
    description="S1 Table 6.1: cost of the TAPT (masked-LM) stage",
    columns=(
        Column("method", "method.name"),
        Column("trainable params", "stages.tapt.params.trainable", "lower", digits=0),
        Column("time / epoch s", "stages.tapt.epoch_mean_seconds", "lower", digits=1),
        Column("storage MiB", "stages.tapt.artifact_tensor_bytes", "lower", scale=1 / MIB, digits=1),
    ),
    where=_has("stages.tapt.params.trainable", "kwdlc-ner"),
)

S1_TABLE_6_2 = TableSpec(
    name="s1-finetune-cost",
    description="S1 Table 6.2: cost of NER fine-tuning",
    columns=(
        Column("method", "method.name"),
        Column("trainable params", "params.trainable", "lower", digits=0),
        Column("time / epoch s", "time.epoch_mean_seconds", "lower", digits=1),
        Column("storage MiB", "artifact.tensor_bytes", "lower", scale=1 / MIB, digits=1),
    ),
    where=_task("kwdlc-ner"),
)

S1_TABLE_6_3 = TableSpec(
    name="s1-inference",
    description="S1 Table 6.3: inference time over a split (LoRA merged W' = W + BA vs not merged)",
    columns=(
        Column("method", "method.name"),
        Column("split", "inference.split"),
        Column("merged s", "inference.modes.merged.seconds", "lower", digits=2),
        Column("not merged s", "inference.modes.unmerged.seconds", "lower", digits=2),
        Column("plain model s", "inference.modes.default.seconds", "lower", digits=2),
        Column("max logit diff", "inference.modes.merged.max_abs_logit_diff_vs_first_mode", digits=7),
    ),
    where=_task("kwdlc-ner"),
)


def _scored(field: str):
    """Runs that have this score (e.g. micro-F1: document classification, STL and multi-task alike)."""
    return lambda frame: frame[field].notna() if field in frame else frame["task.name"].map(lambda _: False)


S5 = TableSpec(
    name="s5",
    description="S5: STL vs multi-task with auxiliary tasks (RTM, L3Masking, token n-grams per scheme), "
                "micro-F1 / macro-F1 mean +- std over seeds",
    columns=(
        Column("task", "task.name"),
        Column("method", "method.name"),
        Column("scheme", "config.method_config.scheme", digits=None),
        Column("micro-F1 %", "scores.test.micro_f1", "higher", scale=100, digits=2),
        Column("macro-F1 %", "scores.test.macro_f1", "higher", scale=100, digits=2),
        Column("aux params", "params.auxiliary", digits=0),
        Column("time/epoch s", "time.epoch_mean_seconds", "lower", digits=1),
    ),
    where=_scored("scores.test.micro_f1"),
)


S4 = TableSpec(
    name="s4",
    description="S4: title -> article generation, costs (fine-tuning time, memory, inference over the test split) "
                "and automatic scores; the human ratings table comes from `peftbench human report`",
    columns=(
        Column("backbone", "backbone.name"),
        Column("method", "method.name"),
        Column("fine-tune s", "time.train_seconds", "lower", digits=0),
        Column("time/epoch s", "time.epoch_mean_seconds", "lower", digits=1),
        Column("peak GPU MiB (torch)", "memory.cuda_max_reserved_bytes", "lower", scale=1 / MIB, digits=0),
        Column("peak RSS MiB", "memory.cpu_peak_rss_bytes", "lower", scale=1 / MIB, digits=0),
        Column("inference s (test)", "inference.seconds", "lower", digits=1),
        Column("tokens/s", "inference.tokens_per_second", "higher", digits=1),
        Column("chrF", "scores.test.chrf", "higher", scale=100, digits=2),
        Column("ROUGE-L", "scores.test.rouge_l", "higher", scale=100, digits=2),
        Column("BLEU", "scores.test.bleu", "higher", scale=100, digits=2),
    ),
    where=_scored("scores.test.chrf"),
)


@hookimpl
def register_tables(register) -> None:
    for table in (S2_TABLE_3_2, S2_EXTRA_1, S2_EXTRA_2, S1_TABLE_5_3, S1_TABLE_6_1, S1_TABLE_6_2, S1_TABLE_6_3, S5, S4):
        register(table)
