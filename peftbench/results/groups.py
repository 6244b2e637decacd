"""Rankings that say what is within noise: significance groups (a compact letter display over all
pairwise paired tests, corrected) and the minimum detectable effect of a table's test set and seeds.

- **Groups.** Every pair of configurations is compared with the report's paired test (bootstrap,
  randomization, McNemar or t); the p values of all pairs are adjusted together (Holm / BH / none).
  Configurations that no adjusted test tells apart share a letter; "a" is the group of the best
  mean. Letters come from the insert-and-absorb algorithm (Piepho 2004, *J. Comput. Graph. Stat.*
  13:456): start with one group of all; for each pair that differs, split every group holding both
  into one without each; drop groups inside others. So "best" is a group, not a row.
- **Minimum detectable effect** (alpha 0.05 two-sided, power 0.8): ``(z_0.975 + z_0.8) * sqrt(2) *
  SE``, where SE is the median over configurations of the standard error of a configuration's score
  (the standard deviation of its bootstrap over seeds x test examples; with ``--test t``, over seeds).
  For accuracy near 0.5 on n examples SE = 0.5 / sqrt(n): 164 examples give 15.5 points, the figure
  lm-eval users quote for HumanEval. It treats two configurations as independent; a paired test on
  runs that err on the same examples detects somewhat less.
"""

from __future__ import annotations

import itertools
import math
import statistics
from typing import TYPE_CHECKING, Any, Callable, Sequence

from . import significance
from ..errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

Z_ALPHA, Z_POWER = 1.959964, 0.841621  # two-sided alpha 0.05; power 0.8


def compact_letters(means: Sequence[float], differ: set[frozenset[int]], higher_is_better: bool = True) -> list[str]:
    """Per configuration its letters: two share a letter unless ``differ`` holds their pair."""
    order = sorted(range(len(means)), key=lambda i: -means[i] if higher_is_better else means[i])
    groups: list[set[int]] = [set(order)]
    for pair in sorted(differ, key=sorted):
        i, j = sorted(pair)
        split = []
        for group in groups:
            split += [group - {i}, group - {j}] if i in group and j in group else [group]
        groups = _absorbed(split)
    rank = {c: r for r, c in enumerate(order)}
    groups.sort(key=lambda g: sorted(rank[c] for c in g))
    letters = [""] * len(means)
    for index, group in enumerate(groups):
        for member in group:
            letters[member] += _letter(index)
    return letters


def _absorbed(groups: list[set[int]]) -> list[set[int]]:
    """The groups that are not inside another (of equal ones, the first), none empty."""
    kept = []
    for k, group in enumerate(groups):
        inside = any(group < other or (group == other and j < k) for j, other in enumerate(groups) if j != k)
        if group and not inside:
            kept.append(group)
    return kept


def _letter(index: int) -> str:
    return chr(ord("a") + index) if index < 26 else f"[{index + 1}]"


def pairwise_differ(count: int, test_pair: Callable[[int, int], float | None], adjust: str,
                    alpha: float) -> tuple[set[frozenset[int]], int, int]:
    """The pairs an adjusted test tells apart; also how many pairs were tested and how many could not be."""
    pairs = list(itertools.combinations(range(count), 2))
    pvalues = [test_pair(i, j) for i, j in pairs]
    adjusted = significance.adjust(pvalues, adjust)
    differ = {frozenset(pair) for pair, p in zip(pairs, adjusted) if p is not None and p < alpha}
    untested = sum(p is None for p in pvalues)
    return differ, len(pairs) - untested, untested


def resamples_for(configurations: int, alpha: float, asked: int) -> int:
    """Enough resamples for a resampled p value (at least 1 / (resamples + 1)) to pass the strictest
    correction over all pairs (alpha / pairs), with room to spare: else nothing could ever differ."""
    pairs = configurations * (configurations - 1) // 2
    return max(asked, math.ceil(2 * pairs / alpha))


def standard_error(runs: Any, seed_scores: Sequence[float], resamples: int) -> float | None:
    """A configuration's standard error: its bootstrap over seeds x examples where its predictions are
    at hand (``runs``: its ScoredRuns), else over its seeds' scores."""
    if isinstance(runs, list) and runs:
        return float(significance.bootstrap_scores(runs, resamples).std(ddof=1))
    if len(seed_scores) > 1:
        return statistics.stdev(seed_scores) / math.sqrt(len(seed_scores))
    return None


def minimum_detectable_effect(errors: Sequence[float | None]) -> float | None:
    known = [e for e in errors if e is not None and not math.isnan(e)]
    return (Z_ALPHA + Z_POWER) * math.sqrt(2) * statistics.median(known) if known else None


def significance_groups(frame: Any, metric: str, test: str, adjust: str, alpha: float, resamples: int,
                        components: Any) -> dict[str, Any]:
    """Per configuration of ``frame`` (``results.configurations``' order) its letters; the table's
    minimum detectable effect; and the notes that say how both were made."""
    from . import cache as report_cache
    from .analysis import _compare_row, configurations

    groups, column = configurations(frame), f"scores.test.{metric}"
    resamples = resamples_for(len(groups), alpha, resamples) if test in ("bootstrap", "randomization") else resamples
    scored = report_cache.LazyScored(groups, 0, metric, components, test)
    cache = report_cache.TestCache(test)

    # Every key names groups[0], whose example order the resamples draw positions in: a result cached
    # by a comparison that ordered the examples otherwise is not taken for this one.
    def test_pair(i: int, j: int) -> float | None:
        row = cache.get(("pair", test, resamples), [groups[0], groups[i], groups[j]], metric,
                        lambda: _compare_row(groups[i], groups[j], scored[i], scored[j], test, column, resamples))
        return row.get("p")

    differ, tested, untested = pairwise_differ(len(groups), test_pair, adjust, alpha)
    errors = [cache.get(("standard error", test, resamples), [groups[0], g], metric,
                        lambda: standard_error(scored[i], g[column].dropna().astype(float).tolist(), resamples))
              for i, g in enumerate(groups)]
    cache.save()
    means = [float(g[column].astype(float).mean()) for g in groups]
    better = f"task.greater_is_better.{metric}"
    higher = not (better in frame and frame[better].dropna().eq(False).any())
    mde = minimum_detectable_effect(errors)
    notes = [f"groups: configurations sharing a letter are not told apart by {test} tests of all {tested} pairs "
             f"({adjust} over them, alpha={alpha}"
             + (f", {resamples} resamples each" if test in ("bootstrap", "randomization") else "")
             + "); 'a' holds the best mean"
             + (f"; {untested} pair(s) could not be tested and count as not told apart" if untested else "")]
    if mde is not None:
        notes.append(f"minimum detectable effect: {mde:.4f} {metric} (alpha 0.05 two-sided, power 0.8: 2.80 x sqrt(2) x "
                     f"the median standard error of a row's score, {statistics.median(e for e in errors if e is not None):.4f}); "
                     "a smaller difference between two rows cannot be told from noise with this test set and these seeds")
    return {"letters": compact_letters(means, differ, higher), "mde": mde, "notes": notes}


def add_group_column(frame: "pd.DataFrame", table: "pd.DataFrame", options: dict[str, Any]) -> list[str]:
    """The significance-group letters beside the compared score, and the notes on them and on the
    minimum detectable effect (``groups.significance_groups``)."""
    from .analysis import _components, _main_metric
    from .significance import DEFAULT_RESAMPLES

    if "task.name" in frame and frame["task.name"].nunique() > 1:
        raise ConfigError("significance groups compare the rows of one task", "filter with --task")
    metric = _main_metric(frame, options.get("metric"))
    test = options.get("test", "bootstrap")
    found = significance_groups(frame, metric, test, options.get("adjust", "holm"), options["alpha"],
                                options.get("resamples") or DEFAULT_RESAMPLES, None if test == "t" else _components())
    after = next((i + 1 for i, header in enumerate(table.columns) if metric in str(header)), len(table.columns))
    table.insert(after, "group", found["letters"])
    from .analysis import configuration_label, configurations, varying_columns

    varying = varying_columns(frame)  # the HTML report draws the groups by configuration
    table.attrs["groups"] = {configuration_label(g, varying): letters
                             for g, letters in zip(configurations(frame), found["letters"])}
    return found["notes"]
