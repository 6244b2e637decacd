"""GSM8K's strict_match and flexible_extract held to lm-evaluation-harness's own code: its gsm8k task
file (regexes, stop sequences, ignored patterns), its RegexFilter and take_first, its exact_match."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peftbench_plugins.tasks import gsm8k

from conftest import GSM8K_FIXTURE

lm_eval = pytest.importorskip("lm_eval", reason="needs lm-evaluation-harness: pip install 'peftbench[compare]' (make test's .venv has it)")

REFERENCE = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### {answer}"
# (model output, the reference's final answer): every case the issue names and more.
OUTPUTS = [
    ("She sold 24 clips. #### 72", "72"), ("#### 72.", "72"), ("#### 72.0", "72"), ("#### 007", "7"),
    ("#### 12.50", "12.5"), ("#### 12.5", "12.5"), ("#### 1,234", "1234"), ("#### 1234", "1,234"),
    ("The answer is $1,234.", "1234"), ("So the total is 42.", "42"), ("#### -5", "-5"), ("#### - 5", "-5"),
    ("#### 5\n#### 6", "6"), ("#### 5\n#### 6", "5"), ("3 + 4 = 7. #### 7\nQuestion: What is 2 + 2?\nAnswer: 4", "7"),
    ("3 + 4 = 7\nQuestion: Tom has 9 apples", "7"), ("no number here", "3"), ("", "3"), ("####", "3"),
    ("#### seven", "7"), ("It costs $5", "5"), ("It costs $5.00", "5"), ("It costs $ 5", "5"),
    ("The answer: 18 dollars.", "18"), ("18 + 2 = 20 so 20 is the answer", "20"), ("18 + 2 = 20 so 20 is it", "18"),
    ("#### 3,5", "35"), ("#### .5", "0.5"), ("#### 0.5", ".5"), ("x=10, y=20, so 30", "30"), ("answer is 1.", "1"),
    ("answer is 10.", "10"), ("answer is -10", "-10"), ("answer is - 10", "-10"), ("He earned $1,000,000.", "1000000"),
    ("He earned 1 000 000", "1000000"), ("The result is 2/3", "2/3"), ("#### 2/3", "2/3"), ("#### 100%", "100"),
    ("I think 8.\n\nQuestion: next", "8"), ("#### 42 apples", "42"), ("####42", "42"), ("The answer is 42.0", "42"),
    ("THE ANSWER IS 4", "4"), ("#### 4,", "4"), ("...... 9", "9"),
]


def _task_file() -> dict:
    import yaml

    return yaml.safe_load((Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k.yaml").read_text())


def test_the_constants_are_lm_evals_gsm8k_task_file():
    task = _task_file()
    filters = {f["name"]: f["filter"][0] for f in task["filter_list"]}
    assert filters["strict-match"]["regex_pattern"] == gsm8k.STRICT[0].pattern and gsm8k.STRICT[1] == 0
    assert filters["flexible-extract"]["regex_pattern"] == gsm8k.FLEXIBLE[0].pattern
    assert filters["flexible-extract"]["group_select"] == gsm8k.FLEXIBLE[1]
    assert tuple(task["generation_kwargs"]["until"]) == gsm8k.STOP_SEQUENCES
    metric = task["metric_list"][0]
    assert tuple(metric["regexes_to_ignore"]) == gsm8k.IGNORED and metric["ignore_case"] and not metric["ignore_punctuation"]
    assert task["metadata"]["version"] == 3.0 and lm_eval.__version__ in gsm8k.LM_EVAL


@pytest.mark.parametrize("name, regex", [("strict-match", gsm8k.STRICT), ("flexible-extract", gsm8k.FLEXIBLE)])
def test_strict_and_flexible_scores_equal_lm_evals_filters_and_metric(name, regex):
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import RegexFilter
    from lm_eval.filters.selection import TakeFirstFilter

    assert len(OUTPUTS) >= 40
    options = {f["name"]: f["filter"][0] for f in _task_file()["filter_list"]}[name]
    regex_filter = RegexFilter(regex_pattern=options["regex_pattern"], group_select=options.get("group_select", 0))
    theirs = list(TakeFirstFilter().apply(regex_filter.apply([[out] for out, _ in OUTPUTS], None), None))
    ours = [gsm8k.lm_eval_filter(out, regex) for out, _ in OUTPUTS]
    assert ours == theirs
    metric = _task_file()["metric_list"][0]
    for extracted, (_, answer) in zip(ours, OUTPUTS):
        reference = REFERENCE.format(answer=answer)  # lm-eval compares with the whole answer (doc_to_target)
        expected = exact_match_hf_evaluate([extracted], [reference], regexes_to_ignore=metric["regexes_to_ignore"],
                                           ignore_case=True, ignore_punctuation=False)["exact_match"]
        assert gsm8k.lm_eval_exact_match(extracted, gsm8k.final_answer_text(reference)) == bool(expected), extracted


def test_a_gsm8k_record_has_strict_and_flexible_scores_and_stops_at_question(cli, tiny_llama, tmp_path):
    result = cli("run", "--method", "lora", "--task", "gsm8k", "--backbone", str(tiny_llama), "--results",
                 str(tmp_path), "--set", f"data_dir={GSM8K_FIXTURE}", "--set", "epochs=1", "--set", "max_new_tokens=24",
                 "--set", "inference_repeats=0")
    assert result.code == 0, result.stderr
    record = json.loads(next(tmp_path.glob("*/record.json")).read_text(encoding="utf-8"))
    assert {"exact_match", "strict_match", "flexible_extract"} <= set(record["scores"]["test"])
    assert "lm-evaluation-harness 0.4.13" in record["data"]["encoding"]["test"]["strict_match_and_flexible_extract"]
    test = json.loads(next(tmp_path.glob("*/predictions.json")).read_text(encoding="utf-8"))["test"]
    assert all("Question:" not in p["output"] for p in test["predictions"])
    assert {"strict", "flexible", "strict_match", "flexible_extract"} <= set(test["predictions"][0])


def test_generation_stops_at_the_tasks_stop_sequences():
    from peftbench_plugins.tasks.completion import CompletionTask

    class Fake:
        eos_token_id, pad_token_id = 2, 0

        def decode(self, ids, skip_special_tokens=True):
            return {(5, 6): "7 #### 7\nQuestion: and 9"}[tuple(ids)]

    import torch

    task = gsm8k.Gsm8k()
    task.tokenizer = Fake()
    task._generate = lambda model, batch, config: [[5, 6]]
    batch = {"labels": torch.tensor([[-100, 1]]), "answer_ids": torch.tensor([[1]])}
    task._references = lambda batch: ["7"]
    predictions, _ = CompletionTask.predict(task, None, batch, torch.zeros(1, 2, 3), gsm8k.Gsm8kSettings())
    assert predictions[0]["output"] == "7 #### 7\n" and predictions[0]["stopped"] and predictions[0]["answer"] == "7"
