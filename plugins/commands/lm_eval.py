"""Score a results folder's runs with lm-evaluation-harness, the evaluator the field trusts.

    peftbench lm-eval RESULTS --tasks peftbench_mr [--include-path DIR] [--limit N] [--merged]

For every successful run (tuning trials aside) whose backbone is a causal LM, the base model is loaded
once per backbone and each run's model is put on it in turn: a peft adapter (LoRA, IA3, prompt
tuning, ...) from the run's saved artefact, unloaded again afterwards; a whole saved model (full
fine-tuning) loaded on its own; a run that trained nothing (zero-shot) is the base itself. lm-eval
then scores it with its own task code; its outputs go beside the run, in ``lm-eval/<task>/``:

- ``results.json``: lm-eval's results and task config for the task, its version, the task config's
  hash, and what was evaluated (base, adapter, merged or not);
- ``samples.jsonl``: lm-eval's per-sample log (``log_samples``), one document per line;
- ``record.json`` + ``predictions.json``: the evaluation as a run of the task ``lm-eval`` (the run's
  record with lm-eval's scores), so ``peftbench report RESULTS --task lm-eval/<task>`` compares runs
  on lm-eval's per-sample values with the same paired tests, floors and confound checks as its own.

Local task YAMLs: this module's ``lm_eval_tasks/`` folder is always included (``peftbench_mr``: MR
over the shared corpus, scored like peftbench's classification as generation); add more with
``--include-path``. Each run's recorded task settings are passed to lm-eval as metadata, so a task
read by peftbench's loader (``peftbench_tasks.py``) serves the run's own test split.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Optional

import typer

from peftbench.sdk import (CommandContext, ConfigError, HeadSpec, PeftbenchError, RunRecord, SuiteStage, hookimpl,
                           install_hint, is_installed, iter_records, published, write_json_atomic)

TASKS_DIR = Path(__file__).with_name("lm_eval_tasks")
OUT_DIR = "lm-eval"  # inside each run's folder
RUN_SETTINGS = "peftbench_task_config"  # lm_eval_tasks/peftbench_tasks.py reads the run's split from it
SAMPLES_FILE, RESULTS_FILE = "samples.jsonl", "results.json"
# A derived record's task: the plugin that scores lm-eval's per-sample values (tasks/lm_eval_samples.py).
SAMPLES_TASK = "lm-eval"


def _runs(results: Path) -> list[tuple[Path, dict]]:
    """Successful runs that are not tuning trials nor lm-eval evaluations themselves."""
    found = []
    for path, record in iter_records(results):
        if record.get("status") != "success" or (record.get("tuning") or {}).get("role") == "trial":
            continue
        if record.get("config", {}).get("task") == SAMPLES_TASK:
            continue
        found.append((path.parent, record))
    return sorted(found, key=lambda item: item[1].get("run_id", ""))


def what_it_is(run_dir: Path, record: dict) -> str:
    """'base' (trained nothing), 'adapter' (a peft folder), 'model' (a whole saved model); or why not."""
    artifact = run_dir / "artifact"
    if (artifact / "adapter_config.json").exists():
        return "adapter"
    if (artifact / "config.json").exists():
        return "model"
    if (record.get("artifact") or {}).get("tensor_bytes") == 0:
        return "base"
    if not artifact.exists() and (record.get("artifact") or {}).get("path"):
        raise ConfigError(f"run {record['run_id']}'s artefact folder is gone (results are often shared without "
                          "their weights)", "evaluate where the run's artifact/ folder is, or rerun it")
    if not artifact.exists():
        raise ConfigError(f"run {record['run_id']} kept no artefact (save_artifact = false), so there is no tuned "
                          "model to evaluate", "rerun it with --set save_artifact=true")
    raise ConfigError(f"run {record['run_id']}'s artefact ({record['method']['name']}) is neither a peft adapter nor "
                      "a whole model; lm-eval cannot load it", "evaluate it with peftbench's own scores")


@contextlib.contextmanager
def applied(base: Any, run_dir: Path, kind: str, merged: bool) -> Iterator[Any]:
    """The run's model on the shared base; the base is as it was afterwards."""
    if kind == "base":
        yield base
        return
    if kind == "model":
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(run_dir / "artifact", dtype=base.dtype).eval()
        yield model
        del model
        return
    from peft import PeftModel

    pristine = {k: v.detach().clone() for k, v in base.state_dict().items()} if merged else None
    model = PeftModel.from_pretrained(base, run_dir / "artifact", is_trainable=False).eval()
    try:
        if merged:
            model.merge_adapter()
        yield model
    finally:
        if not model.peft_config[model.active_adapter].is_prompt_learning:
            model.unload()  # the tuner layers out again (prompt learning never entered the base)
        if pristine is not None:  # a merge changed the base's weights; an unmerge only approximates them
            base.load_state_dict(pristine)


def lm_eval_model(model: Any, tokenizer: Any, batch_size: int, chat: bool):
    """lm-eval's HF model over an already-built model. Logits are cut to the input's length: a prompt-
    learning adapter puts its virtual tokens' logits first, which lm-eval would read as the input's."""
    from lm_eval.models.huggingface import HFLM

    class Model(HFLM):
        def _model_call(self, inps, attn_mask=None, labels=None):
            logits = super()._model_call(inps, attn_mask, labels)
            return logits[:, -inps.shape[1]:]

    # lm-eval adds no BOS unless told. peftbench frames a plain prompt as its tokenizer frames any text
    # (Llama: BOS first) and a chat prompt as the chat template writes it: lm-eval is told the same.
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    adds_bos = len(tokenizer("a")["input_ids"]) > len(plain)
    return Model(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, add_bos_token=adds_bos and not chat)


def task_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Managers:
    """lm-eval's task managers, one per run's task settings (lm-eval hands a manager's metadata to the
    tasks it builds). Indexing lm-eval's own ~15,000 task files takes ~12 s, so where every requested
    task is in the local folders only those are indexed."""

    def __init__(self, tasks: list[str], include_path: list[str]) -> None:
        from lm_eval.tasks import TaskManager

        self.paths = [str(TASKS_DIR), *include_path]
        local = set(TaskManager(include_path=self.paths, include_defaults=False).all_tasks)
        self.local_only = all(name in local for name in tasks)
        self._made: dict[str, Any] = {}

    def __call__(self, settings: dict | None = None) -> Any:
        from lm_eval.tasks import TaskManager

        key = json.dumps(settings, sort_keys=True, default=str)
        if key not in self._made:
            self._made[key] = TaskManager(include_path=self.paths, include_defaults=not self.local_only,
                                          metadata={RUN_SETTINGS: settings} if settings is not None else None)
        return self._made[key]


def evaluate_run(lm: Any, tasks: list[str], record: dict, options: dict) -> dict[str, Any]:
    """lm-eval's output for one run: {task: (results, config, samples)}."""
    from lm_eval import simple_evaluate

    manager = options["managers"](record["config"].get("task_config") or {})
    out = simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=options["limit"], log_samples=True,
                          apply_chat_template=options["chat"](record), bootstrap_iters=0, verbosity="ERROR")
    return {name: (out["results"][name], out["configs"][name], out["samples"][name]) for name in tasks}


def write_outputs(run_dir: Path, record: dict, task: str, evaluated: tuple, about: dict, scorer: Any) -> Path:
    """lm-eval's files for one task beside the run, and the derived record the report reads."""
    import lm_eval

    results, config, samples = evaluated
    samples = published(samples)  # documents name their corpus files: no absolute path of this machine
    folder = run_dir / OUT_DIR / task
    folder.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in config.items() if k != "metadata"}  # the run's settings are in its record
    described = {"task": task, "lm_eval_version": lm_eval.__version__, "task_hash": task_hash(config),
                 "source_run": record["run_id"], **about, "results": results, "config": config}
    write_json_atomic(folder / RESULTS_FILE, published(described))
    partial = folder / f".{SAMPLES_FILE}.partial"  # a killed evaluation leaves no half log under the real name
    with open(partial, "w", encoding="utf-8") as handle:
        for sample in samples:
            handle.write(json.dumps(sample, default=str, ensure_ascii=False) + "\n")
    partial.replace(folder / SAMPLES_FILE)
    derived, predictions = derived_record(record, described, samples, scorer)
    write_json_atomic(folder / "predictions.json", predictions)
    write_json_atomic(folder / "record.json", derived)
    return folder


def derived_record(record: dict, described: dict, samples: list[dict], scorer: Any) -> tuple[dict, dict]:
    """The run's record re-scored by lm-eval: task ``lm-eval`` (settings: lm-eval's task, version, task
    config hash, merged), its test scores lm-eval's, its predictions lm-eval's per-sample values; the
    scores and floors made by that task's plugin (``scorer``), as a report will make them."""
    samples = sorted(samples, key=lambda s: s["doc_id"])
    metrics = _per_sample_metrics(described, samples)
    predictions = [{m: float(s[m]) for m in metrics if m in s} for s in samples]
    references = [s.get("target") for s in samples]
    ids = [str(s["doc"].get("id", s["doc_id"])) if isinstance(s.get("doc"), dict) else s["doc_id"] for s in samples]
    settings = {"task": described["task"], "metrics": metrics, "lm_eval_version": described["lm_eval_version"],
                "task_hash": described["task_hash"], "merged": described["merged"]}
    config = scorer.Config(**{**settings, "metrics": tuple(metrics)})
    derived = {**record, "run_id": f"{record['run_id']}+{OUT_DIR}-{described['task']}",
               "config_hash": task_hash({"run": record["config_hash"], **settings}),
               "config": {**record["config"], "task": SAMPLES_TASK, "task_config": settings},
               "task": {**record["task"], "name": f"{SAMPLES_TASK}/{described['task']}",
                        "main_score": metrics[0] if metrics else None},
               "scores": {"test": scorer.score(predictions, references, config)},
               "floors": {"test": scorer.floors(references, config)}, "data": {**(record.get("data") or {}),
                   "sizes": {**((record.get("data") or {}).get("sizes") or {}), "test": len(samples)},
                   "fingerprints": {"test": task_hash([[i, r] for i, r in zip(ids, references)])}},
               "inference": None, "forgetting": None}
    RunRecord.from_dict(derived)  # the record schema holds (a derived record is read like any other)
    return derived, {"test": {"ids": ids, "predictions": predictions, "references": references}}


def _per_sample_metrics(described: dict, samples: list[dict]) -> list[str]:
    """The task's metrics whose score is the mean of a number per document (acc, exact_match): those a
    paired test can resample. Others (f1, mcc: aggregated over all documents at once) are refused."""
    listed = [m for m in described["config"].get("metric_list", []) if isinstance(m.get("metric"), str)]
    usable = [m["metric"] for m in listed if m.get("aggregation", "mean") == "mean"
              and all(isinstance(s.get(m["metric"]), (int, float)) for s in samples)]
    if not usable:
        raise ConfigError(f"lm-eval task {described['task']!r} has no metric that is a mean over documents "
                          f"({', '.join(m['metric'] for m in listed) or 'none listed'}), so its runs cannot be "
                          "compared document by document", "score it with lm-eval alone, or add an acc-type metric")
    return usable


def _chat(tokenizer: Any) -> Callable[[dict], bool]:
    """Whether a run's prompts went through the chat template (peftbench's ``chat_template`` setting,
    where the tokenizer has one): lm-eval is asked to render them the same way."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    # a task without the setting renders no chat: lm-eval is not asked to either
    return lambda record: has_template and bool((record["config"].get("task_config") or {}).get("chat_template", False))


def _todo(results: Path, tasks: list[str], redo: bool, log: Callable[[str], None]) -> dict[str, list]:
    """Per backbone, the runs still to score (a run scored on every task already is said and left)."""
    by_backbone: dict[str, list] = {}
    for run_dir, record in _runs(results):
        if not redo and all((run_dir / OUT_DIR / t / "record.json").exists() for t in tasks):
            log(f"{record['run_id']}: already scored by lm-eval on {', '.join(tasks)} (--redo scores it again)")
            continue
        try:
            kind = what_it_is(run_dir, record)
        except ConfigError as exc:
            log(f"skipped {exc}")
            continue
        by_backbone.setdefault(record["config"]["backbone"], []).append((run_dir, record, kind))
    return by_backbone


def evaluate_folder(results: Path, tasks: list[str], options: dict, components: Any,
                    log: Callable[[str], None]) -> list[Path]:
    """Every run of ``results`` not scored yet, scored by lm-eval, one base model loaded per backbone."""
    written = []
    for backbone, group in _todo(results, tasks, options.get("redo", False), log).items():
        loaded = components.resolve_backbone(backbone).load(HeadSpec("text-generation"))
        if loaded.info.get("generation_format") != "causal":
            log(f"skipped {len(group)} run(s) of {backbone}: not a causal LM")
            continue
        base, tokenizer, chat = loaded.model.eval(), loaded.tokenizer, _chat(loaded.tokenizer)
        options = {**options, "chat": chat}
        log(f"{backbone}: base loaded once for {len(group)} run(s)")
        for run_dir, record, kind in group:
            merged = bool(options["merged"] and kind == "adapter")
            with applied(base, run_dir, kind, merged) as model:
                evaluated = evaluate_run(lm_eval_model(model, tokenizer, options["batch_size"], chat(record)),
                                         tasks, record, options)
            about = {"evaluated": kind, "merged": merged, "chat_template": chat(record), "limit": options["limit"]}
            for task, output in evaluated.items():
                scorer = components.tasks.get(SAMPLES_TASK)
                written.append(write_outputs(run_dir, record, task, output, about, scorer))
                log(f"{record['run_id']} ({kind}): {task} " + ", ".join(
                    f"{k.split(',')[0]} {v:.4f}" for k, v in output[0].items() if isinstance(v, float)))
    return written


@hookimpl
def register_commands(app: typer.Typer, context: CommandContext) -> None:
    @app.command("lm-eval")
    def lm_eval_command(
        results: Annotated[Path, typer.Argument(help="folder of run records")],
        tasks: Annotated[str, typer.Option(help="lm-eval task names, comma-separated (e.g. peftbench_mr)")],
        include_path: Annotated[Optional[list[Path]], typer.Option(
            help="more folders of lm-eval task YAMLs (peftbench's own are always included)")] = None,
        limit: Annotated[Optional[int], typer.Option(help="documents per task (lm-eval's --limit; for trying)")] = None,
        merged: Annotated[bool, typer.Option(help="merge each mergeable adapter into the base first")] = False,
        batch_size: Annotated[int, typer.Option(help="lm-eval's batch size")] = 8,
        redo: Annotated[bool, typer.Option(help="score again runs already scored on these tasks")] = False,
    ) -> None:
        """Score every run of a results folder with lm-evaluation-harness (base model loaded once)."""
        settings = LmEvalSettings.parse({"tasks": tasks.split(","), "include_path": [str(p) for p in include_path or []],
                                         "limit": limit, "merged": merged, "batch_size": batch_size}, "peftbench lm-eval")
        written = evaluate_folder(results, list(settings.tasks), {**settings.options(), "redo": redo},
                                  context.components, typer.echo)
        names = settings.tasks
        done = [d for d, _ in _runs(results) if all((d / OUT_DIR / t / "record.json").exists() for t in names)]
        if not done:
            raise PeftbenchError(f"no run in {results} could be evaluated (see the lines above)")
        typer.echo(f"wrote {len(written)} evaluation(s); compare them with: peftbench report {results} "
                   f"--task {SAMPLES_TASK}/{names[0]}")


@dataclass(frozen=True)
class LmEvalSettings:
    """What `peftbench lm-eval` and a suite's [lm_eval] table take, parsed and checked once."""

    tasks: tuple[str, ...]
    include_path: tuple[str, ...] = ()
    limit: int | None = None
    merged: bool = False
    batch_size: int = 8

    @classmethod
    def parse(cls, given: dict[str, Any], where: str) -> "LmEvalSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}", f"keys: {', '.join(sorted(known))}")
        tasks = given.get("tasks")
        if isinstance(tasks, str) or not isinstance(tasks, (list, tuple)) or not all(isinstance(t, str) for t in tasks):
            raise ConfigError(f"{where}: tasks must be a list of lm-eval task names", 'e.g. tasks = ["peftbench_mr"]')
        names = tuple(t.strip() for t in tasks if t.strip())
        if not names:
            raise ConfigError(f"{where}: tasks names no task", 'e.g. tasks = ["peftbench_mr"]')
        limit, batch = given.get("limit"), given.get("batch_size", 8)
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise ConfigError(f"{where}: limit must be a positive number of documents, got {limit}")
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise ConfigError(f"{where}: batch_size must be a positive integer, got {batch}")
        if not isinstance(given.get("merged", False), bool):
            raise ConfigError(f"{where}: merged must be true or false")
        return cls(names, tuple(str(p) for p in given.get("include_path") or ()), limit,
                   given.get("merged", False), batch)

    def options(self) -> dict[str, Any]:
        """What evaluate_folder takes; the task names checked against lm-eval's (one line if unknown)."""
        if not is_installed("lm-eval"):
            raise ConfigError("lm-eval scoring needs lm-evaluation-harness", install_hint(["lm-eval"]))
        return {"managers": _check_tasks(list(self.tasks), [Path(p) for p in self.include_path]), "limit": self.limit,
                "merged": self.merged, "batch_size": self.batch_size}


class LmEvalStage(SuiteStage):
    """A suite's [lm_eval] table: its runs (a tuned suite's finals) scored by lm-eval once they all succeeded."""

    name = "lm_eval"
    description = "score the suite's runs with lm-evaluation-harness (keys as `peftbench lm-eval`'s options)"

    def check(self, table: dict[str, Any], where: str) -> None:
        LmEvalSettings.parse(table, where)

    def run(self, table: dict[str, Any], results: Path, components: Any, log: Callable[[str], None]) -> None:
        settings = LmEvalSettings.parse(table, "[lm_eval]")
        evaluate_folder(results, list(settings.tasks), settings.options(), components, log)


@hookimpl
def register_suite_stages(register) -> None:
    register(LmEvalStage())


def _check_tasks(names: list[str], include_path: list[Path]) -> "Managers":
    """lm-eval's task managers for these tasks; unknown names refused before any model loads."""
    import difflib

    for folder in include_path:
        if not folder.is_dir():
            raise ConfigError(f"--include-path {folder} is not a folder", "pass a folder of lm-eval task YAMLs")
    managers = Managers(names, [str(p) for p in include_path])
    known = managers().all_tasks
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3)
            raise ConfigError(f"lm-eval knows no task {name!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""),
                              "name a task of lm-eval or of a folder given with --include-path")
    return managers
