"""What the deployed (last) stage's model gives a run's record: final dev/test scores with their
floors and per-example predictions, inference time per mode (LoRA merged and unmerged), and the
artefact a user keeps per task."""

from __future__ import annotations

import shutil
import statistics
from typing import Any

import torch

from ..records import files, record as records
from ..api import Splits
from .measure.sizes import directory_bytes
from .measure.timing import Stopwatch
from ..records.record import StageRecord
from .state import PreparedStage, RunState, loader
from .trainer import evaluate, model_inputs


def score(current: RunState, prepared: PreparedStage) -> bool:
    """Final dev/test scores and per-example predictions (for paired tests and human evaluation).
    Returns whether the task predicted with the model itself (generation), which is then timed as
    the run's inference."""
    spec, record = current.resolved.spec, current.record
    predictions, predicted = {}, False
    for split in ("dev", "test") if spec.train.evaluate_test else ("dev",):
        scored = evaluate(prepared.model, prepared.loaders[split], prepared.objective, spec.task_config,
                          current.accelerator, current.progress, split, final=True)
        record.scores[split] = scored.scores
        record.floors[split] = prepared.objective.floors(scored.references, spec.task_config)
        predictions[split] = {"ids": _example_ids(prepared.splits, split, scored.predictions),
                              "predictions": scored.predictions, "references": scored.references}
        predicted = scored.predict_seconds is not None
        if predicted and split == spec.train.inference_split:
            seconds, tokens = scored.predict_seconds, scored.scores.get("generated_tokens")
            record.inference = {
                "split": split, "examples": len(scored.predictions), "mode": "predict",
                "mergeable": mergeable(current), "seconds": seconds,
                "examples_per_second": len(scored.predictions) / seconds, "generated_tokens": tokens,
                "tokens_per_second": tokens / seconds if tokens is not None else None}
    if predicted and "test" in predictions and record.inference and record.inference.get("mergeable"):
        record.inference["merged"] = merged_agreement(current, prepared, predictions["test"])
    if current.writes:
        files.write_json_atomic(current.run_dir / records.PREDICTIONS_FILE, files.published(predictions))
    return predicted


def merged_agreement(current: RunState, prepared: PreparedStage, unmerged: dict[str, Any]) -> dict[str, Any] | None:
    """The test split predicted again with the adapter merged into the base: how many predictions
    (label-word choices, greedy answers) stay the same. A merge is meant to change nothing; where it
    does (rounding in the merged weights, a method whose merge is approximate), the record says which."""
    spec, model = current.resolved.spec, current.accelerator.unwrap_model(prepared.model)
    with torch.no_grad(), current.resolved.method.inference_modes(model) as modes:
        for mode in modes:
            if mode != "merged":
                continue
            scored = evaluate(prepared.model, prepared.loaders["test"], prepared.objective, spec.task_config,
                              current.accelerator, current.progress, "test (merged)", final=True)
            same = [_decision(a) == _decision(b) for a, b in zip(unmerged["predictions"], scored.predictions)]
            ids = unmerged["ids"] or list(range(len(same)))
            return {"examples": len(same), "agreement": sum(same) / len(same) if same else None,
                    "changed": [ids[i] for i, kept in enumerate(same) if not kept], "scores": scored.scores}
    return None


def _decision(prediction: Any) -> Any:
    """What a prediction decides, without the scores behind it (log-likelihoods move a little in a merge)."""
    if isinstance(prediction, dict):
        return {k: v for k, v in prediction.items()
                if not isinstance(v, float) and not (isinstance(v, list) and v and isinstance(v[0], float))}
    return prediction


def mergeable(current: RunState) -> bool | None:
    """The method's own answer, except beside a k-bit base: nothing is merged into one (a merge would
    dequantize, add and quantize again, giving a model other than the one trained)."""
    merges = current.resolved.method.mergeable
    return False if merges and current.resolved.spec.train.quantized else merges


def _example_ids(splits: Splits, split: str, predictions: list) -> list | None:
    """Per prediction, its example's id (the position where the task gives none), so paired tests
    match two runs' predictions by example; None when the task did not predict once per example."""
    examples = getattr(splits, split)
    if len(examples) != len(predictions):
        return None
    return [example.get("id", index) if isinstance(example, dict) else index for index, example in enumerate(examples)]


def time_inference(current: RunState, prepared: PreparedStage) -> dict[str, Any]:
    """Forward passes over a split per inference mode (e.g. LoRA merged/unmerged), warm-up excluded.
    With several processes each times its share of the split; the record holds the main process's."""
    spec, method, accelerator = current.resolved.spec, current.resolved.method, current.accelerator
    split, repeats = spec.train.inference_split, spec.train.inference_repeats
    model = accelerator.unwrap_model(prepared.model)  # a method merges weights on its own model, not on DDP's
    batches_of = prepared.loaders[split] if split != "train" else accelerator.prepare(
        loader(prepared.encoded["train"], prepared.collate, prepared.train.eval_batch_size, False, spec.seed))
    model.eval()
    batches = [model_inputs(prepared.objective, batch) for batch in batches_of]
    result: dict[str, Any] = {"split": split, "examples": sum(b["input_ids"].shape[0] for b in batches),
                              "repeats": repeats, "mergeable": mergeable(current), "modes": {}}
    reference_logits = None
    with torch.no_grad(), method.inference_modes(model) as modes:
        for mode in modes:
            with accelerator.autocast():
                first = model(**batches[0]).logits.float()  # warm-up, also used for the agreement check
            seconds = []
            for _ in range(repeats):
                with current.progress.steps(f"inference ({mode})", len(batches)) as advance, \
                        Stopwatch(accelerator.device) as watch:
                    for batch in batches:
                        with accelerator.autocast():
                            model(**batch)
                        advance()
                seconds.append(watch.seconds)
            median = statistics.median(seconds)
            entry = {"seconds": median, "all_seconds": seconds, "examples_per_second": result["examples"] / median}
            if reference_logits is None:
                reference_logits = first
            else:
                entry["max_abs_logit_diff_vs_first_mode"] = (first - reference_logits).abs().max().item()
            result["modes"][mode] = entry
    return result


def save_artifact(current: RunState, model: torch.nn.Module, stage_record: StageRecord) -> None:
    artifact = current.record.artifact
    artifact.tensor_bytes = stage_record.artifact_tensor_bytes
    # Trained, then thrown away: not part of what a user stores per task.
    artifact.auxiliary_tensor_bytes = stage_record.auxiliary_tensor_bytes
    if current.resolved.spec.train.save_artifact and current.writes:
        directory = current.run_dir / "artifact"
        try:
            current.resolved.method.save(model, str(directory))
        except Exception as exc:  # noqa: BLE001 - only a full or read-only disk is kept apart, the rest re-raised
            if not files.out_of_room(exc):
                raise
            shutil.rmtree(directory, ignore_errors=True)  # the scores stand; the artefact is said to be missing
            artifact.error = (f"not saved: no room in {current.run_dir.parent} ({' '.join(str(exc).split())[:120]}); "
                              f"it needs about {artifact.tensor_bytes:,} bytes")
            current.progress.log(f"artefact {artifact.error}")
            return
        files.publish_json_files(directory)
        artifact.path, artifact.bytes = str(directory), directory_bytes(directory)
        artifact.format = sorted({p.suffix.lstrip(".") for p in directory.rglob("*") if p.is_file()})
