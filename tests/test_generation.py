"""Title -> article generation on seq2seq (T5) and causal (GPT-2) models, its metrics, and the
blinded human-evaluation round trip."""

from __future__ import annotations

import csv
import json
import random

import pytest

from peftbench.records import record as records
from peftbench_plugins.tasks.generation import Title2Article, Title2ArticleConfig, lcs_length, rouge_l_chars, text_scores

TASK = Title2Article()


def _args(backbone, sample_dir, results, method="full", *extra):
    return ["run", "--method", method, "--task", "livedoor-title2article", "--backbone", str(backbone),
            "--results", str(results), "--set", f"data_dir={sample_dir}", "--set", "limit=100",
            "--set", "max_target_length=32", "--set", "max_new_tokens=12", "--set", "epochs=1",
            "--set", "batch_size=8", *extra]


def test_load_normalises_skips_empty_articles_and_splits_90_5_5(tmp_path, sample_dir):
    import shutil

    data = tmp_path / "ldcc"
    shutil.copytree(sample_dir / "sports-watch", data / "sports-watch")
    (data / "sports-watch" / "zz-empty-body.txt").write_text("http://x\n2012-01-01\nタイトル\n\n  \n", encoding="utf-8")
    (data / "sports-watch" / "zz-empty-title.txt").write_text("http://x\n2012-01-01\n \n本文\n", encoding="utf-8")
    (data / "sports-watch" / "zz-width.txt").write_text("http://x\n2012-01-01\nＡＢＣ　ﾃｽﾄ\n本文　の 行\n\n二行目\n",
                                                        encoding="utf-8")
    splits = TASK.load(Title2ArticleConfig(data_dir=str(data)))
    assert splits.info["skipped"] == {"empty_title": 1, "empty_body": 1}
    total = splits.info["articles"]
    assert (len(splits.train), len(splits.dev)) == (int(total * 0.9), int(total * 0.05))
    assert len(splits.train) + len(splits.dev) + len(splits.test) == total
    width = next(ex for ex in splits.train + splits.dev + splits.test if ex["id"] == "zz-width.txt")
    assert (width["title"], width["body"]) == ("ABCテスト", "本文の行二行目")  # neologdn, lines joined
    again = TASK.load(Title2ArticleConfig(data_dir=str(data)))
    assert [ex["id"] for ex in again.test] == [ex["id"] for ex in splits.test]


def test_lcs_is_exact_and_rouge_l_is_on_characters():
    def slow(a, b):
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i, x in enumerate(a):
            for j, y in enumerate(b):
                table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
        return table[-1][-1]

    rng = random.Random(0)
    for _ in range(300):
        a = "".join(rng.choice("あいうえおab") for _ in range(rng.randrange(0, 40)))
        b = "".join(rng.choice("あいうえおab") for _ in range(rng.randrange(0, 40)))
        assert lcs_length(a, b) == slow(a, b)
    assert rouge_l_chars("今日は 晴れ", "今日は晴れ") == 1.0
    assert rouge_l_chars("今日", "今日は晴れ") == pytest.approx(2 * 1 * 0.4 / 1.4)
    perfect = text_scores(["東京で雨が降った。"], ["東京で雨が降った。"])
    assert perfect == {"chrf": pytest.approx(1.0), "bleu": pytest.approx(1.0), "rouge_l": 1.0}


def test_causal_encoding_masks_the_prompt(tiny_gpt2, sample_dir):
    from peftbench.components.plugins import default

    loaded = default().resolve_backbone(str(tiny_gpt2)).load(TASK.head(None))
    bound = TASK.for_backbone(loaded)
    config = Title2ArticleConfig(max_input_length=8, max_target_length=10)
    (encoded,) = bound.encode([{"title": "東京の天気", "body": "今日は晴れました。明日は雨です。"}], loaded.tokenizer, config)
    prompt = encoded["prompt_ids"]
    assert encoded["input_ids"][:len(prompt)] == prompt and prompt[-1] == loaded.tokenizer.sep_token_id
    assert encoded["labels"][:len(prompt)] == [-100] * len(prompt)
    assert encoded["labels"][len(prompt):] == encoded["input_ids"][len(prompt):]
    assert len(encoded["labels"]) - len(prompt) <= 10


@pytest.fixture(scope="module")
def generated(tmp_path_factory, tiny_t5, tiny_gpt2):
    """Full fine-tuning and LoRA on a tiny T5 and a tiny GPT-2, one results folder."""
    import sys

    from peftbench.cli.entry import main
    from conftest import SAMPLE

    results = tmp_path_factory.mktemp("generation-results")
    for backbone in (tiny_t5, tiny_gpt2):
        for method in ("full", "lora"):
            sys.argv = ["peftbench", *_args(backbone, SAMPLE, results, method, "--quiet")]
            try:
                main()
            except SystemExit as exc:
                assert not exc.code
    return results


def test_full_and_lora_on_t5_and_gpt2_record_text_scores_and_speed(generated):
    runs = {(r["backbone"]["info"]["generation_format"], r["method"]["name"]): r
            for _, r in records.iter_records(generated)}
    assert set(runs) == {("seq2seq", "full"), ("seq2seq", "lora"), ("causal", "full"), ("causal", "lora")}
    for (form, method), record in runs.items():
        assert record["status"] == "success"
        assert {"chrf", "bleu", "rouge_l", "token_accuracy", "generated_tokens"} <= set(record["scores"]["test"])
        inference = record["inference"]
        assert inference["mode"] == "predict" and inference["seconds"] > 0
        assert inference["tokens_per_second"] == pytest.approx(inference["generated_tokens"] / inference["seconds"])
        assert record["config"]["task_config"]["max_new_tokens"] == 12  # the generation settings are recorded
        assert record["time"]["epoch_seconds"]
    assert runs[("seq2seq", "lora")]["backbone"]["info"]["lora_target"] == ["q", "v"]
    assert runs[("causal", "lora")]["backbone"]["info"]["lora_target"] == ["c_attn"]
    assert runs[("causal", "lora")]["params"]["trainable"] < runs[("causal", "full")]["params"]["trainable"]


def test_rwkv_trains_with_lora_and_generates_prompt_by_prompt(cli, tiny_rwkv, sample_dir, tmp_path):
    result = cli(*_args(tiny_rwkv, sample_dir, tmp_path, "lora", "--set", "lr=1e-3"))
    assert result.code == 0, result.stderr
    (_, record), = list(records.iter_records(tmp_path))
    assert record["backbone"]["info"]["generation_format"] == "causal"
    assert record["backbone"]["info"]["lora_target"] == ["key", "value", "receptance", "output"]
    assert record["inference"]["generated_tokens"] > 0 and "chrf" in record["scores"]["test"]


def test_lora_target_missing_in_t5_lists_the_layers(cli, tiny_t5, sample_dir, tmp_path):
    result = cli(*_args(tiny_t5, sample_dir, tmp_path, "lora", "--set", "target=query,value", "--dry-run"))
    assert result.code == 1 and "LoRA target query, value not found" in result.stderr and " q, " in result.stderr


def test_a_backbone_that_cannot_generate_is_one_line(cli, tiny_bert, sample_dir, tmp_path):
    result = cli(*_args(tiny_bert, sample_dir, tmp_path))
    assert result.code == 1 and "cannot generate text" in result.stderr


def _fill(sheet, out, rng, bad=None):
    with sheet.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["fluency"], row["follows_title"] = rng.randint(1, 5), rng.randint(1, 5)
    if bad:
        bad(rows)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def test_human_evaluation_round_trip(generated, cli, tmp_path):
    sheet = tmp_path / "sheet.csv"
    exported = cli("human", "export", str(generated), "--out", str(sheet), "--per-system", "4")
    assert exported.code == 0, exported.stderr
    key = json.loads((tmp_path / "sheet.key.json").read_text())
    assert len(key["systems"]) == 4 and len(key["rows"]) == 16
    header = sheet.read_text(encoding="utf-8").splitlines()[0]
    assert header == "id,title,output,fluency,follows_title,comment"  # nothing names the system
    rng = random.Random(3)
    filled = {name: _fill(sheet, tmp_path / f"{name}.csv", rng) for name in ("alice", "bob")}
    result = cli("human", "import", str(tmp_path / "sheet.key.json"), str(tmp_path / "alice.csv"),
                 str(tmp_path / "bob.csv"))
    assert result.code == 0, result.stderr
    assert "| model | scale | mean | 1 | 2 | 3 | 4 | 5 |" in result.stdout
    assert "quadratic-weighted kappa" in result.stdout and "from 2 rater(s)" in result.stdout
    system = key["rows"][filled["alice"][0]["id"]]["system"]
    ids = [i for i, row in key["rows"].items() if row["system"] == system]
    values = [int(r["fluency"]) for rows in filled.values() for r in rows if r["id"] in ids]
    line = next(l for l in result.stdout.splitlines() if l.startswith(f"| {system} | fluency |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert float(cells[2]) == pytest.approx(sum(values) / len(values), abs=0.005)
    assert sum(float(c.rstrip("%")) for c in cells[3:]) == pytest.approx(100, abs=0.2)
    report = cli("human", "report", str(tmp_path / "sheet.ratings.json"))
    assert report.code == 0 and line in report.stdout


@pytest.mark.parametrize("break_it, message", [
    (lambda rows: rows[2].update(fluency=7), r"alice.csv:4: fluency is '7', not a whole number 1-5"),
    (lambda rows: rows[0].update(id="deadbeef00"), r"alice.csv:2: unknown id 'deadbeef00'"),
    (lambda rows: rows.pop(), r"alice.csv: 1 row\(s\) missing"),
])
def test_bad_rating_sheets_name_the_line(generated, cli, tmp_path, break_it, message):
    import re

    sheet = tmp_path / "sheet.csv"
    assert cli("human", "export", str(generated), "--out", str(sheet), "--per-system", "2").code == 0
    _fill(sheet, tmp_path / "alice.csv", random.Random(0), bad=break_it)
    result = cli("human", "import", str(tmp_path / "sheet.key.json"), str(tmp_path / "alice.csv"))
    assert result.code == 1 and re.search(message, result.stderr), result.stderr


def test_human_export_refuses_systems_tested_on_different_items(generated, cli, tiny_t5, sample_dir, tmp_path):
    import shutil

    results = tmp_path / "results"
    shutil.copytree(generated, results)
    other = tmp_path / "other-t5"
    shutil.copytree(tiny_t5, other)
    args = _args(other, sample_dir, results)
    args[args.index("limit=100")] = "limit=80"  # another split: other test items
    assert cli(*args).code == 0
    result = cli("human", "export", str(results), "--out", str(tmp_path / "sheet.csv"), "--per-system", "2")
    assert result.code == 1 and "tested on different items" in result.stderr and "other-t5" in result.stderr
