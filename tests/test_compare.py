"""Comparisons: paired tests on examples against independent computations, multiple-comparison
control, the confound check, pairing by example id, the results API and the HTML report."""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import peftbench
from peftbench.results import analysis as results_api
from peftbench.results import significance
from peftbench.errors import ConfigError
from peftbench.sdk import ExampleStatistics
from synthetic import predictions_with_accuracy, write_run


def accuracy_runs(a_correct, b_correct):
    """Two single-run configurations scored by accuracy from their correctness vectors."""
    def run(correct):
        values = np.stack([np.asarray(correct, dtype=np.int64), np.ones(len(correct), dtype=np.int64)], axis=1)
        return significance.ScoredRun(list(correct), [True] * len(correct), lambda p, r: sum(p) / len(p),
                                      ExampleStatistics(values, lambda t: t[0] / t[1]))
    return [run(a_correct)], [run(b_correct)]


def toy_correctness(only_a=30, only_b=15, both=200, neither=55, seed=3):
    """Correctness of two systems on the same examples with a known difference: ``only_a`` examples
    right only in a, ``only_b`` right only in b (in a shuffled order)."""
    pairs = [(True, False)] * only_a + [(False, True)] * only_b + [(True, True)] * both + [(False, False)] * neither
    random.Random(seed).shuffle(pairs)
    return [a for a, _ in pairs], [b for _, b in pairs]


def test_mcnemar_is_the_exact_binomial_on_discordant_pairs():
    a, b = toy_correctness()
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    k, n = min(only_a, only_b), only_a + only_b
    by_hand = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)  # two-sided, p = 1/2
    result = significance.mcnemar(a, b)
    assert result.p == pytest.approx(by_hand, rel=1e-9)
    assert result.delta == pytest.approx((only_a - only_b) / len(a))


def test_randomization_agrees_with_scipys_paired_permutation_test():
    from scipy.stats import permutation_test

    a, b = toy_correctness()
    ours = significance.approximate_randomization(*accuracy_runs(a, b), resamples=4000)
    theirs = permutation_test((np.array(a, float), np.array(b, float)), lambda x, y: np.mean(x) - np.mean(y),
                              permutation_type="samples", n_resamples=4000, random_state=1)
    assert 0.01 < theirs.pvalue < 0.5  # a difference the test can neither miss nor be sure of
    assert ours.p == pytest.approx(theirs.pvalue, abs=0.02)


def test_bootstrap_interval_and_p_agree_with_scipy():
    from scipy.stats import bootstrap, ttest_rel

    a, b = toy_correctness()
    ours = significance.paired_bootstrap(*accuracy_runs(a, b), resamples=4000)
    theirs = bootstrap((np.array(a, float), np.array(b, float)), lambda x, y: np.mean(x) - np.mean(y),
                       paired=True, vectorized=False, n_resamples=4000, method="percentile", random_state=1)
    assert ours.low == pytest.approx(theirs.confidence_interval.low, abs=0.01)
    assert ours.high == pytest.approx(theirs.confidence_interval.high, abs=0.01)
    # On a difference of means of 300 pairs the bootstrap p is close to the paired t-test's.
    assert ours.p == pytest.approx(ttest_rel(np.array(a, float), np.array(b, float)).pvalue, abs=0.02)
    same = significance.paired_bootstrap(*accuracy_runs(a, a), resamples=200)
    assert same.delta == 0 and same.p == 1.0


def test_t_tests_and_interval_equal_scipy_stats():
    from scipy import stats

    a, b = [0.81, 0.84, 0.79, 0.86], [0.78, 0.80, 0.77]
    assert significance.welch_t_test(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    paired = [0.80, 0.82, 0.75]
    assert significance.paired_t_test([x - y for x, y in zip(a, paired)]) == pytest.approx(
        stats.ttest_rel(a[:3], paired).pvalue)
    interval = stats.t.interval(0.95, len(a) - 1, loc=np.mean(a), scale=stats.sem(a))
    assert significance.t_interval(a) == pytest.approx(interval)


def test_holm_and_benjamini_hochberg_by_hand():
    p = [0.01, 0.04, 0.03, None]
    assert significance.adjust(p, "holm") == pytest.approx([0.03, 0.06, 0.06, None])
    # BH: p_(i) * m / i, then the running minimum from the largest: 0.03, 0.04, 0.04.
    assert significance.adjust(p, "bh") == pytest.approx([0.03, 0.04, 0.04, None])
    assert significance.adjust(p, "none") == p


def test_entity_f1_per_resample_equals_seqeval():
    from seqeval.metrics import f1_score

    from peftbench_plugins.tasks.kwdlc import KwdlcNer

    rng = random.Random(0)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    references = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(60)]
    predictions = [[t if rng.random() < 0.7 else rng.choice(tags) for t in sentence] for sentence in references]
    task = KwdlcNer()
    statistics = task.example_statistics(predictions, references, task.default_config(), "f1")
    run = significance.ScoredRun(predictions, references, None, statistics)
    for seed in range(5):
        index = np.random.default_rng(seed).integers(0, len(references), len(references))
        expected = f1_score([references[i] for i in index], [predictions[i] for i in index], mode="strict",
                            scheme=__import__("seqeval.scheme", fromlist=["IOB2"]).IOB2, zero_division=0)
        assert run.score(index) == pytest.approx(expected)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_classification_scores_and_statistics_equal_scikit_learn_on_a_resample(seed):
    """A run's scores and the paired tests' per-example statistics are scikit-learn's accuracy and
    F1 (zero_division=0), on a resample where some classes are never predicted or never present."""
    from sklearn.metrics import accuracy_score, f1_score

    from peftbench_plugins.tasks.livedoor_corpus import LivedoorNews

    rng = random.Random(seed)
    references = [rng.randrange(7) for _ in range(200)]  # of 9 labels: two classes never present
    predictions = [r if rng.random() < 0.6 else rng.randrange(8) for r in references]  # one never predicted
    task = LivedoorNews()
    config = task.default_config()
    index = np.random.default_rng(seed).integers(0, 200, 200)
    gold, predicted = [references[i] for i in index], [predictions[i] for i in index]
    labels = list(range(9))
    expected = {"accuracy": accuracy_score(gold, predicted),
                "macro_f1": f1_score(gold, predicted, labels=labels, average="macro", zero_division=0),
                "micro_f1": f1_score(gold, predicted, labels=labels, average="micro", zero_division=0)}
    assert task.score(predicted, gold, config) == pytest.approx(expected)
    for metric in ("accuracy", "macro_f1", "micro_f1"):
        statistics = task.example_statistics(predictions, references, config, metric)
        assert statistics.score(statistics.values[index].sum(axis=0)) == pytest.approx(expected[metric])
        # Many resamples at once (the batched path floor tests and bootstraps take) give each one's score exactly.
        indices = np.random.default_rng(seed).integers(0, 200, (50, 200))
        run = significance.ScoredRun(predictions, references, None, statistics)
        assert significance.resampled_scores(run, indices, chunk=16).tolist() == [run.score(i) for i in indices]


# ------------------------------------------------------------------ comparisons over run records


REFERENCES = [random.Random(0).randrange(9) for _ in range(400)]


def mixed_settings(folder: Path) -> Path:
    """Full fine-tuning with batch 16 and max length 48 next to LoRA with batch 8 and max length 32."""
    for seed in (1, 2, 3):
        write_run(folder, seed, "full", seed, predictions_with_accuracy(REFERENCES, 0.70 + 0.01 * seed, seed),
                  REFERENCES, train={"batch_size": 16}, task_config={"max_length": 48}, epochs=3)
        write_run(folder, 10 + seed, "lora", seed, predictions_with_accuracy(REFERENCES, 0.78 + 0.01 * seed, 7 * seed),
                  REFERENCES, train={"batch_size": 8}, task_config={"max_length": 32}, epochs=3)
    return folder


def test_mixed_settings_warn_and_strict_refuses(tmp_path, cli):
    results = mixed_settings(tmp_path / "mixed")
    report = cli("report", str(results), "--baseline", "method.name=full", "--resamples", "300")
    assert report.code == 0, report.stderr
    warnings = [line for line in report.stderr.splitlines() if line.startswith("warning: confound")]
    assert len(warnings) == 2
    assert any("batch_size differs: 16 (full); 8 (lora)" in w for w in warnings)
    assert any("max_length differs: 48 (full); 32 (lora)" in w for w in warnings)
    assert "p (bootstrap)" in report.stdout and "p adj. (holm)" in report.stdout
    for args in (["--baseline", "method.name=full"], ["--stats"], []):
        refused = cli("report", str(results), "--strict", *args)
        assert refused.code == 1 and "not a fair comparison" in refused.stderr, refused.stderr


@pytest.mark.parametrize(("kind", "overrides"), [
    ("train", {"train": {"epochs": 3}}),
    ("task", {"task_config": {"text": "title"}}),
    ("data", {"record": {"data.fingerprints.test": "0123456789abcdef"}}),
    ("backbone", {"record": {"config.backbone": "another-bert", "backbone.info.source": "/elsewhere"}}),
    ("library", {"record": {"environment.packages.torch": "2.0.0"}}),
])
def test_every_kind_of_confound_is_found(tmp_path, kind, overrides):
    write_run(tmp_path, 1, "full", 1, REFERENCES, REFERENCES)
    write_run(tmp_path, 2, "lora", 1, REFERENCES, REFERENCES, **overrides)
    write_run(tmp_path, 3, "lora", 2, REFERENCES, REFERENCES, **overrides)
    found = results_api.confounds(peftbench.load_results(tmp_path))
    assert [c.kind for c in found] == [kind] * len(found) and found
    with pytest.raises(ConfigError, match="not a fair comparison"):
        peftbench.compare(peftbench.load_results(tmp_path), baseline="method.name=full", strict=True)


def test_methods_of_one_family_with_other_shared_settings_are_a_confound(tmp_path):
    """LoRA at alpha 16 / dropout 0.1 beside DoRA at peft's 8 / 0.0 (the first MR zoo): a family confound;
    the same shared settings (or methods of no family) are none."""
    def family(alpha, dropout):
        return {"record": {"method.family": "lora", "method.family_settings.r": 8,
                           "method.family_settings.alpha": alpha, "method.family_settings.dropout": dropout}}

    write_run(tmp_path, 1, "lora", 1, REFERENCES, REFERENCES, **family(16.0, 0.1))
    write_run(tmp_path, 2, "dora", 1, REFERENCES, REFERENCES, **family(8.0, 0.0))
    write_run(tmp_path, 3, "full", 1, REFERENCES, REFERENCES)
    lines = [c.line() for c in results_api.confounds(peftbench.load_results(tmp_path))]
    assert lines == ["lora family setting alpha differs: 16 (lora); 8 (dora)",
                     "lora family setting dropout differs: 0.1 (lora); 0 (dora)"]
    write_run(tmp_path / "alike", 1, "lora", 1, REFERENCES, REFERENCES, **family(16.0, 0.1))
    write_run(tmp_path / "alike", 2, "dora", 1, REFERENCES, REFERENCES, **family(16.0, 0.1))
    assert results_api.confounds(peftbench.load_results(tmp_path / "alike")) == []


def test_method_settings_and_seeds_are_not_confounds(tmp_path):
    write_run(tmp_path, 1, "lora", 1, REFERENCES, REFERENCES, record={"config.method_config.lr": 0.01})
    write_run(tmp_path, 2, "lora", 2, REFERENCES, REFERENCES, record={"config.method_config.lr": 0.02})
    assert results_api.confounds(peftbench.load_results(tmp_path)) == []


def test_predictions_are_paired_by_example_id_not_position(tmp_path):
    ids = [f"doc-{i}" for i in range(len(REFERENCES))]
    base = predictions_with_accuracy(REFERENCES, 0.70)
    other = predictions_with_accuracy(REFERENCES, 0.75, 11)
    write_run(tmp_path / "ordered", 1, "full", 1, base, REFERENCES, ids=ids)
    write_run(tmp_path / "ordered", 2, "lora", 1, other, REFERENCES, ids=ids)
    shuffled = list(range(len(ids)))
    random.Random(5).shuffle(shuffled)
    write_run(tmp_path / "shuffled", 1, "full", 1, base, REFERENCES, ids=ids)
    write_run(tmp_path / "shuffled", 2, "lora", 1, [other[i] for i in shuffled], [REFERENCES[i] for i in shuffled],
              ids=[ids[i] for i in shuffled])
    results = [peftbench.compare(peftbench.load_results(tmp_path / name), baseline="method.name=full",
                                 test="mcnemar") for name in ("ordered", "shuffled")]
    assert results[0]["p"].iloc[1] == results[1]["p"].iloc[1] < 0.05
    write_run(tmp_path / "other-test-set", 1, "full", 1, base, REFERENCES, ids=ids)
    write_run(tmp_path / "other-test-set", 2, "lora", 1, other[:300], REFERENCES[:300], ids=ids[:300])
    table = peftbench.compare(peftbench.load_results(tmp_path / "other-test-set"), baseline="method.name=full")
    assert math.isnan(table["p"].iloc[1]) and "tested on other examples (300 vs the baseline's 400" in table["note"].iloc[1]


def test_results_api_and_cli_agree(tmp_path, cli):
    results = mixed_settings(tmp_path / "mixed")
    runs = peftbench.load_results(results)
    assert len(runs) == 6 and {"record_path", "scores.test.accuracy", "config.train.batch_size"} <= set(runs.columns)
    table = peftbench.compare(runs, baseline="method.name=full", test="bootstrap", adjust="bh", resamples=300)
    assert list(table["baseline"]) == [True, False] and table["significant"].iloc[1]
    assert table["ci_low"].iloc[1] < table["mean"].iloc[1] < table["ci_high"].iloc[1]
    assert table["delta"].iloc[1] == pytest.approx(0.08)
    printed = json.loads(cli("report", str(results), "--baseline", "method.name=full", "--adjust", "bh",
                             "--resamples", "300", "--format", "json").stdout)
    assert printed[1]["p adj. (bh)"] == f"{table['p_adjusted'].iloc[1]:.3g} *"


def external_resources(page: str) -> list[str]:
    """Every script, stylesheet or image the page would load from elsewhere."""
    from html.parser import HTMLParser

    found = []

    class Tags(HTMLParser):
        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag in ("script", "img", "iframe") and attrs.get("src") or tag == "link" and attrs.get("href"):
                found.append(f"<{tag} {attrs}>")

    Tags().feed(page)
    return found


def test_html_report_renders_offline_in_a_browser(tmp_path, cli):
    results = mixed_settings(tmp_path / "mixed")
    page = tmp_path / "report.html"
    assert cli("report", str(results), "--baseline", "method.name=full", "--resamples", "300",
               "--html", str(page)).code == 0
    assert external_resources(page.read_text(encoding="utf-8")) == []  # nothing is fetched when it opens
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium here (`apt-get install chromium`; .ci/run installs it): the plots' rendering "
                    "is unchecked")
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    # plotly.js draws each figure into an <svg class="main-svg">: present only if the inline script ran.
    assert dom.count('class="main-svg"') >= 3, dom[:2000]
    assert "learning curves" in dom and "lora" in dom


def test_a_layout_sorted_by_its_method_column_lists_methods_alphabetically(tmp_path, cli):
    for index, method in enumerate(["lora", "full", "adapter"], 1):
        write_run(tmp_path, index, method, 1, REFERENCES, REFERENCES)
    report = cli("report", str(tmp_path), "--table", "methods")
    assert report.code == 0, report.stderr
    rows = [line.split("|")[1].strip() for line in report.stdout.splitlines() if line.startswith("| ")][1:]
    assert rows == ["adapter", "full", "lora"]


def test_best_is_marked_among_the_rows_of_one_task(tmp_path, cli):
    """Scores of two tasks do not compare: each task's best row is bold, not one row across both."""
    refs = [i % 4 for i in range(40)]
    for number, (task, accuracy) in enumerate([("livedoor-news", 0.9), ("livedoor-news", 0.5),
                                               ("mr", 0.4), ("mr", 0.3)]):
        write_run(tmp_path, number, f"m{number}", 1, predictions_with_accuracy(refs, accuracy, classes=4), refs,
                  record={"task.name": task, "config.task": task})
    report = cli("report", str(tmp_path))
    assert report.code == 0, report.stderr
    lines = {line.split("|")[1].strip(): line for line in report.stdout.splitlines() if line.startswith("| m")}
    assert "**0.9" in lines["m0"] and "**0.4" in lines["m2"], report.stdout
    assert "**0." not in lines["m1"] + lines["m3"], report.stdout
    assert "best marks compare the rows of one task at a time" in report.stdout
