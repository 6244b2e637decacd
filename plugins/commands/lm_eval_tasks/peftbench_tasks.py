"""Documents for the local lm-eval task YAMLs beside this file, read by peftbench's own task plugins so
that lm-eval scores exactly the examples a peftbench run was tested on.

lm-eval calls a task's ``custom_dataset`` with its ``metadata`` and ``dataset_kwargs`` as keywords;
``peftbench lm-eval`` puts a run's recorded task settings under ``peftbench_task_config`` in the
metadata, and they replace the YAML's ``dataset_kwargs``.
"""

from __future__ import annotations

from typing import Any

# The key under which `peftbench lm-eval` passes a run's recorded task settings.
RUN_SETTINGS = "peftbench_task_config"


def documents(task_name: str, **kwargs: Any):
    """The task's train / validation / test splits as a DatasetDict of {id, text, label}."""
    import dataclasses

    import datasets

    from peftbench.sdk import load_components, load_splits

    task = load_components().tasks.get(task_name)
    known = {f.name for f in dataclasses.fields(task.Config)}
    settings = kwargs.get(RUN_SETTINGS) or {k: v for k, v in kwargs.items() if k in known}
    config = task.Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items() if k in known})
    splits = load_splits(task, config)

    def rows(examples: list[dict]) -> "datasets.Dataset":
        return datasets.Dataset.from_list([{"id": str(e.get("id", i)), "text": e["text"], "label": int(e["label"])}
                                           for i, e in enumerate(examples)])

    return datasets.DatasetDict({"train": rows(splits.train), "validation": rows(splits.dev), "test": rows(splits.test)})


def mr(**kwargs: Any):
    return documents("mr", **kwargs)
