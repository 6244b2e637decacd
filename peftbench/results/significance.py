"""Paired significance tests on per-example predictions, and multiple-comparison control.

A configuration is one or more runs (its seeds), each scored on the same test examples. A
``ScoredRun`` gives the main score of a run on any resample of those examples: from additive
per-example statistics where the task provides them (``Task.example_statistics``: fast, exact
for accuracy, micro/macro-F1, entity F1, BLEU, chrF), else by calling the task's own ``score`` on
the resampled predictions.

- ``paired_bootstrap``: resample examples (and, with several seeds, each side's seeds too: a
  two-level bootstrap, so seed-to-seed and example-to-example variance both count). Two-sided p
  from the bootstrap distribution of the difference shifted to the null (Efron & Tibshirani 16.4).
- ``approximate_randomization``: swap the two sides' outputs per example at random (shared seeds
  paired); p = share of swaps whose difference is at least the observed one (Noreen 1989).
- ``mcnemar``: exact binomial test on the discordant pairs of one run each (accuracy).
- ``adjust``: Holm (family-wise error) or Benjamini-Hochberg (false discovery rate).

Every p value that comes from resampling is (1 + hits) / (1 + resamples): never 0, and with the
default 2,000 resamples no smaller than 1/2001.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..api import ExampleStatistics

if TYPE_CHECKING:
    import numpy as np

DEFAULT_RESAMPLES = 2000
FLOOR_RESAMPLES = 1000  # the one-sided floor test ("did not learn") unless resamples are named
SEED = 20240229  # fixed: the same records give the same p values on every machine


@dataclass
class ScoredRun:
    """One run's predictions on the test examples (in a shared example order) and how to score them."""

    predictions: list
    references: list
    score_lists: Callable[[list, list], float]  # the task's own scoring (the fallback)
    statistics: ExampleStatistics | None = None

    def score(self, index: "np.ndarray") -> float:
        """The score on the examples at ``index`` (repeats count as often as they appear)."""
        if self.statistics is not None:
            return float(self.statistics.score(self.statistics.values[index].sum(axis=0)))
        return self.score_lists([self.predictions[i] for i in index], [self.references[i] for i in index])

    def score_mixed(self, other: "ScoredRun", swap: "np.ndarray") -> float:
        """The score when the examples where ``swap`` is true take ``other``'s outputs."""
        if self.statistics is not None and other.statistics is not None:
            values = self.statistics.values.copy()
            values[swap] = other.statistics.values[swap]
            return float(self.statistics.score(values.sum(axis=0)))
        predictions = [o if s else p for p, o, s in zip(self.predictions, other.predictions, swap)]
        return self.score_lists(predictions, self.references)


def correct(run: ScoredRun) -> list[bool] | None:
    """Per example, right or wrong, for McNemar: from per-example statistics of the form [hit, 1] with
    a 0/1 hit (accuracy, exact match, lm-eval's acc), else from one label per example compared with
    its reference; None where neither holds (structured predictions scored as a whole)."""
    values = run.statistics.values if run.statistics is not None else None
    if values is not None and values.ndim == 2 and values.shape[1] == 2 and (values[:, 1] == 1).all() \
            and ((values[:, 0] == 0) | (values[:, 0] == 1)).all():
        return [bool(v) for v in values[:, 0]]
    if atomic(run.predictions) and atomic(run.references):
        return [p == r for p, r in zip(run.predictions, run.references)]
    return None


@dataclass(frozen=True)
class TestResult:
    delta: float  # mean score of ``a`` minus mean score of ``b``
    p: float
    low: float | None = None  # confidence interval of delta, where the test gives one
    high: float | None = None
    note: str = ""


def _rng():
    import numpy as np

    return np.random.default_rng(SEED)


def _examples(runs: Sequence[ScoredRun]) -> int:
    return len(runs[0].references)


def bootstrap_scores(runs: Sequence[ScoredRun], resamples: int = DEFAULT_RESAMPLES) -> "np.ndarray":
    """The configuration's mean score on ``resamples`` two-level resamples (seeds, then examples)."""
    import numpy as np

    rng, n = _rng(), _examples(runs)
    draws = [(rng.integers(0, n, n), rng.integers(0, len(runs), len(runs))) for _ in range(resamples)]
    if all(run.statistics is not None for run in runs):
        indices = np.stack([index for index, _ in draws])
        per_run = np.stack([resampled_scores(run, indices) for run in runs])  # (runs, resamples)
        return _seed_means(per_run, np.stack([seeds for _, seeds in draws]))
    return np.array([np.mean([runs[s].score(index) for s in seeds]) for index, seeds in draws])


def _seed_means(per_run: "np.ndarray", seeds: "np.ndarray") -> "np.ndarray":
    """Per resample b, the mean of ``per_run[s, b]`` over the seeds ``s`` drawn for it (``seeds``:
    resamples x seeds drawn)."""
    import numpy as np

    return per_run[seeds, np.arange(len(seeds))[:, None]].mean(axis=1)


def resampled_scores(run: ScoredRun, indices: "np.ndarray", chunk: int = 256) -> "np.ndarray":
    """The run's score on each row of ``indices`` (resamples x examples drawn), from its additive
    statistics: how often each example is drawn times its statistics, a few hundred resamples at a
    time (the counts matrix of a large test set would not fit at once). Equal to ``run.score`` per row."""
    import numpy as np

    resamples, n = indices.shape
    out = np.empty(resamples)
    for start in range(0, resamples, chunk):
        block = indices[start:start + chunk]
        offsets = (np.arange(len(block))[:, None] * n + block).ravel()
        counts = np.bincount(offsets, minlength=len(block) * n).reshape(len(block), n)
        totals = counts @ run.statistics.values
        many = run.statistics.score_many
        out[start:start + len(block)] = (many(totals) if many is not None
                                         else [run.statistics.score(row) for row in totals])
    return out


def confidence_interval(runs: Sequence[ScoredRun], confidence: float = 0.95,
                        resamples: int = DEFAULT_RESAMPLES) -> tuple[float, float, float]:
    """(mean score, low, high): percentile bootstrap interval over seeds and examples."""
    import numpy as np

    full = np.arange(_examples(runs))
    mean = float(np.mean([run.score(full) for run in runs]))
    scores = bootstrap_scores(runs, resamples)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(scores, [tail, 100 - tail])
    return mean, float(low), float(high)


def paired_bootstrap(a: Sequence[ScoredRun], b: Sequence[ScoredRun], resamples: int = DEFAULT_RESAMPLES,
                     confidence: float = 0.95) -> TestResult:
    """Both sides are resampled on the same examples; each side's seeds are resampled on their own
    (seed s of one method has nothing to do with seed s of another)."""
    import numpy as np

    rng, n = _rng(), _examples(a)
    full = np.arange(n)
    observed = float(np.mean([r.score(full) for r in a]) - np.mean([r.score(full) for r in b]))
    draws = [(rng.integers(0, n, n), rng.integers(0, len(a), len(a)), rng.integers(0, len(b), len(b)))
             for _ in range(resamples)]
    if all(run.statistics is not None for run in (*a, *b)):
        indices = np.stack([index for index, _, _ in draws])
        per_a = np.stack([resampled_scores(run, indices) for run in a])  # (seeds, resamples)
        per_b = np.stack([resampled_scores(run, indices) for run in b])
        deltas = (_seed_means(per_a, np.stack([seeds for _, seeds, _ in draws]))
                  - _seed_means(per_b, np.stack([seeds for _, _, seeds in draws])))
    else:
        deltas = np.array([np.mean([a[s].score(index) for s in seeds_a]) - np.mean([b[s].score(index) for s in seeds_b])
                           for index, seeds_a, seeds_b in draws])
    hits = int(np.sum(np.abs(deltas - observed) >= abs(observed) - 1e-12))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(deltas, [tail, 100 - tail])
    levels = "seeds x examples" if len(a) > 1 or len(b) > 1 else "examples"
    return TestResult(observed, (1 + hits) / (1 + resamples), float(low), float(high),
                      f"paired bootstrap over {levels}, {resamples} resamples")


def approximate_randomization(a: Sequence[ScoredRun], b: Sequence[ScoredRun],
                              resamples: int = DEFAULT_RESAMPLES) -> TestResult:
    """``a`` and ``b`` are runs of shared seeds, in the same seed order; one swap pattern per
    resample is applied to every seed pair."""
    import numpy as np

    rng, n = _rng(), _examples(a)
    full = np.arange(n)
    observed = float(np.mean([x.score(full) - y.score(full) for x, y in zip(a, b)]))
    hits = 0
    for _ in range(resamples):
        swap = rng.random(n) < 0.5
        delta = np.mean([x.score_mixed(y, swap) - y.score_mixed(x, swap) for x, y in zip(a, b)])
        hits += bool(abs(delta) >= abs(observed) - 1e-12)
    return TestResult(observed, (1 + hits) / (1 + resamples),
                      note=f"approximate randomization over examples, {resamples} swaps, {len(a)} shared seed(s)")


def floor_test(runs: Sequence[ScoredRun], floor: ScoredRun, higher_is_better: bool = True,
               resamples: int = FLOOR_RESAMPLES) -> TestResult:
    """One-sided test that a configuration beats a floor predictor (e.g. the majority class) on the
    test examples: each resample draws the examples once, scores every seed's run and the floor on
    them, and compares the seeds' mean with the floor (the seeds are pooled, not resampled). p is the
    share of resamples where the configuration does not beat the floor, (1 + hits) / (1 + resamples)."""
    import numpy as np

    rng, n = _rng(), _examples(runs)
    sign = 1.0 if higher_is_better else -1.0
    full = np.arange(n)
    observed = float(np.mean([run.score(full) for run in runs]) - floor.score(full))
    indices = rng.integers(0, n, (resamples, n))
    if all(run.statistics is not None for run in (*runs, floor)):
        deltas = np.mean([resampled_scores(run, indices) for run in runs], axis=0) - resampled_scores(floor, indices)
    else:
        deltas = np.array([np.mean([run.score(index) for run in runs]) - floor.score(index) for index in indices])
    hits = int(np.sum(sign * deltas <= 0))
    return TestResult(observed, (1 + hits) / (1 + resamples),
                      note=f"one-sided bootstrap over {n} test examples ({len(runs)} seed(s) pooled), "
                           f"{resamples} resamples")


def mcnemar(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> TestResult:
    """Exact McNemar test: under the null the discordant pairs split 50/50 (a binomial test). Exact
    at every count: it costs nothing here, and the chi-square approximation is only ever a stand-in."""
    from scipy.stats import binomtest

    only_a = sum(x and not y for x, y in zip(a_correct, b_correct))
    only_b = sum(y and not x for x, y in zip(a_correct, b_correct))
    n = len(a_correct)
    delta = (only_a - only_b) / n if n else 0.0
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return TestResult(delta, float(p), note=f"exact McNemar: {only_a} right only in the row, {only_b} only in "
                                            "the baseline")


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p of Welch's t-test (scipy.stats.ttest_ind(equal_var=False)); both need 2+ values
    and one of them spread. The t distribution comes from scipy.special: importing scipy.stats
    would cost a report 1-2 s."""
    import statistics

    from scipy.special import stdtr

    var_a, var_b = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    t = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(var_a + var_b)
    df = (var_a + var_b) ** 2 / (var_a ** 2 / (len(a) - 1) + var_b ** 2 / (len(b) - 1))
    return float(2 * stdtr(df, -abs(t)))


def paired_t_test(differences: Sequence[float]) -> float:
    """Two-sided p of the paired t-test (scipy.stats.ttest_rel) from the paired differences."""
    import statistics

    from scipy.special import stdtr

    n = len(differences)
    t = statistics.fmean(differences) / (statistics.stdev(differences) / math.sqrt(n))
    return float(2 * stdtr(n - 1, -abs(t)))


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """The t-based confidence interval of the mean (scipy.stats.t.interval)."""
    import statistics

    from scipy.special import stdtrit

    n = len(values)
    half = float(stdtrit(n - 1, 0.5 + confidence / 2)) * statistics.stdev(values) / math.sqrt(n)
    mean = statistics.fmean(values)
    return mean - half, mean + half


def adjust(pvalues: Sequence[float | None], method: str) -> list[float | None]:
    """Holm's step-down or Benjamini-Hochberg adjusted p values (None entries are left out)."""
    import numpy as np

    present = [i for i, p in enumerate(pvalues) if p is not None]
    out: list[float | None] = [None] * len(pvalues)
    if not present or method == "none":
        return list(pvalues)
    values = np.array([pvalues[i] for i in present], dtype=float)
    if method == "bh":
        from scipy.stats import false_discovery_control  # imported only here: scipy.stats costs 1-2 s

        adjusted = false_discovery_control(values, method="bh")
    elif method == "holm":
        order = np.argsort(values)
        steps = values[order] * (len(values) - np.arange(len(values)))
        adjusted = np.empty_like(values)
        adjusted[order] = np.minimum(1.0, np.maximum.accumulate(steps))
    else:
        raise ValueError(f"unknown adjustment {method!r}")
    for i, value in zip(present, adjusted):
        out[i] = float(value)
    return out


def atomic(values: Sequence[Any]) -> bool:
    """Whether predictions are single labels (McNemar's correct/incorrect per example applies)."""
    return all(isinstance(v, (str, int, bool)) for v in values)
