"""Notes under a report's table that come from the records themselves: how tuning chose each
configuration (and the dev ties it broke), and where merging an adapter changed predictions."""

from __future__ import annotations

from typing import Any

import pandas as pd

from .predictions import missing as _absent


def setting_text(value: Any) -> str:
    """A setting's value as a report shows it."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def tuning_notes(groups: list[pd.DataFrame], varying: list[str]) -> list[str]:
    """Per tuned configuration: its study's trials (run, pruned) and the settings chosen on dev."""
    from .analysis import configuration_label

    notes = []
    for group in groups:
        if "tuning.role" not in group or group["tuning.role"].iat[0] != "final":
            continue
        first = group.iloc[0]
        chosen = {c.split(".", 2)[2]: first[c] for c in group.columns
                  if c.startswith("tuning.chosen.") and not _absent(first[c])}
        pruned = int(first.get("tuning.trials_pruned") or 0)
        ran = int(first.get("tuning.trials_complete") or 0) + pruned
        notes.append(f"tuning: {configuration_label(group, varying)}: {ran} trials ({pruned} pruned) of a budget of "
                     f"{int(first['tuning.trials'])}, chosen on dev {first.get('tuning.metric')}: "
                     + ", ".join(f"{k}={setting_text(v)}" for k, v in chosen.items()) + tie_note(first))
    return notes


def merge_notes(groups: list[pd.DataFrame], varying: list[str]) -> list[str]:
    """Where merging the adapter into the base changed test predictions (``inference.merged``)."""
    from .analysis import configuration_label

    notes = []
    for group in groups:
        if "inference.merged.agreement" not in group:
            continue
        for _, row in group.iterrows():
            agreement, examples = row["inference.merged.agreement"], row.get("inference.merged.examples")
            if not _absent(agreement) and agreement < 1:
                changed = round((1 - agreement) * examples)
                notes.append(f"merging changes predictions: {configuration_label(group, varying)} seed "
                             f"{row.get('config.train.seed')}: {changed} of {int(examples)} test predictions differ "
                             "merged vs unmerged (record: inference.merged.changed)")
    return notes


def tie_note(first: pd.Series) -> str:
    """What the note says where the chosen trial tied with others on dev (records before ties were kept: nothing)."""
    tied = first.get("tuning.tied_with")
    if not isinstance(tied, (list, tuple)) or not tied:
        return ""
    return (f" (trial {int(first['tuning.trial'])}, tied on dev with trial{'s' if len(tied) > 1 else ''} "
            f"{', '.join(str(t) for t in tied)}: {first.get('tuning.tie_rule')})")
