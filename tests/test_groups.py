"""Significance groups (compact letter display) and the minimum detectable effect."""

from __future__ import annotations

import math

import pytest

from peftbench.results.groups import compact_letters, minimum_detectable_effect, pairwise_differ, resamples_for


def test_rows_that_no_test_tells_apart_share_a_letter():
    means = [0.90, 0.88, 0.80, 0.60]
    differ = {frozenset(p) for p in [(0, 2), (0, 3), (1, 3), (2, 3)]}  # 0~1, 1~2 not told apart
    assert compact_letters(means, differ) == ["a", "ab", "b", "c"]
    assert compact_letters(means, set()) == ["a"] * 4  # nothing differs: one group
    everything = {frozenset((i, j)) for i in range(4) for j in range(i + 1, 4)}
    assert compact_letters(means, everything) == ["a", "b", "c", "d"]
    assert compact_letters([0.3, 0.1], {frozenset((0, 1))}, higher_is_better=False) == ["b", "a"]  # loss: lower first


def test_the_letter_display_is_consistent_with_every_pair():
    """Two rows share a letter exactly when their pair was not told apart (on random patterns)."""
    import random

    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(2, 7)
        means = sorted((rng.random() for _ in range(n)), reverse=True)
        # differences consistent with an order: far-apart rows differ more often
        differ = {frozenset((i, j)) for i in range(n) for j in range(i + 1, n) if means[i] - means[j] > rng.random()}
        letters = compact_letters(means, differ)
        for i in range(n):
            for j in range(i + 1, n):
                shared = bool(set(letters[i]) & set(letters[j]))
                assert shared == (frozenset((i, j)) not in differ), (means, differ, letters)


def test_pairs_are_adjusted_together_and_untestable_pairs_count_as_not_apart():
    p = {(0, 1): 0.001, (0, 2): 0.02, (1, 2): None}
    differ, tested, untested = pairwise_differ(3, lambda i, j: p[(i, j)], "holm", 0.05)
    assert differ == {frozenset((0, 1)), frozenset((0, 2))} and (tested, untested) == (2, 1)
    differ, _, _ = pairwise_differ(3, lambda i, j: p[(i, j)], "holm", 0.015)
    assert differ == {frozenset((0, 1))}  # Holm: 0.001 x 2 passes, then 0.02 x 1 does not


def test_the_minimum_detectable_effect_is_the_one_lm_eval_users_quote():
    """Accuracy near 0.5 on HumanEval's 164 problems: about 15.5 points (lm-eval #4017)."""
    standard_error = math.sqrt(0.5 * 0.5 / 164)
    assert minimum_detectable_effect([standard_error, None]) == pytest.approx(0.155, abs=0.001)
    assert minimum_detectable_effect([None]) is None


def test_resampled_tests_get_enough_resamples_to_pass_the_correction():
    assert resamples_for(22, 0.05, 2000) == 9240  # 231 pairs: 1 / 9241 < 0.05 / 231
    assert resamples_for(2, 0.05, 2000) == 2000
