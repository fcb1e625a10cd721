"""Property tests of METHODS §1.4-1.6 and the Appendix B.3 position profile."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from shiftcheck.probes.importance import (
    cut,
    density,
    instance_score,
    instruction_score,
    is_levels,
    normalise,
    normalised_density,
    position_profile,
    sentence_ids,
)

finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False, width=32)
matrices = arrays(np.float32, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=finite)


@given(k=st.integers(1, 60), level=st.integers(1, 10), p=st.sampled_from([2.0, 3.0, 4.0]), zeros=st.integers(0, 20))
def test_k_equal_nonzero_entries_give_k_to_the_one_minus_one_over_p(k, level, p, zeros):
    row = np.array([[level] * k + [0] * zeros], dtype=float)
    assert density(row, p)[0] == pytest.approx(k ** (1 - 1 / p), rel=1e-6)


@given(I=matrices, col=st.integers(0, 11), factor=st.floats(0.01, 100.0))
def test_scaling_a_column_by_a_positive_factor_changes_nothing(I, col, factor):
    col = col % I.shape[1]
    scaled = I.astype(np.float64).copy()
    scaled[:, col] *= factor
    # The 1e-7 in the column max can flip a ceil exactly at a level boundary; compare away from it.
    base = I.astype(np.float64)
    pos = np.maximum(base[:, col], 0)
    if pos.max() > 1e-3:
        np.testing.assert_array_equal(normalise(base, 10, 0)[:, col], normalise(scaled, 10, 0)[:, col])


@given(S=arrays(np.int64, st.tuples(st.integers(1, 10), st.integers(0, 10)), elements=st.integers(0, 10)),
       zero_row=st.integers(0, 9))
def test_all_zero_rows_give_zero_density(S, zero_row):
    S = S.copy()
    S[zero_row % S.shape[0]] = 0
    assert density(S, 4.0)[zero_row % S.shape[0]] == 0.0
    assert np.all(density(S, 4.0) >= 0)


@given(I=matrices, b1=st.integers(0, 10), b2=st.integers(0, 10))
def test_raising_b_never_adds_nonzeros(I, b1, b2):
    lo, hi = sorted((b1, b2))
    S_lo, S_hi = normalise(I, 10, lo), normalise(I, 10, hi)
    assert np.all((S_hi > 0) <= (S_lo > 0))
    np.testing.assert_array_equal(cut(normalise(I, 10, 0), hi), S_hi)


@given(I=matrices)
def test_levels_are_integers_in_range_and_every_positive_entry_survives_at_b0(I):
    S = normalise(I, 10, 0)
    assert S.dtype == np.uint8 and S.max(initial=0) <= 10 and is_levels(S)
    assert np.array_equal(S > 0, I > 0)
    # the column maximum of a column with a positive entry is level 10 (up to the 1e-7)
    for j in range(I.shape[1]):
        if I[:, j].max() > 1e-3:
            assert S[:, j].max() == 10


def test_normalise_worked_example():
    I = np.array([[2.0, -1.0], [1.0, 0.0], [0.5, 3.0]])
    np.testing.assert_array_equal(normalise(I, 10, 0), [[10, 0], [5, 0], [3, 10]])
    np.testing.assert_array_equal(normalise(I, 10, 7), [[10, 0], [0, 0], [0, 10]])


@given(a=arrays(np.float64, st.integers(1, 30), elements=st.floats(0, 50)),
       mask=arrays(np.bool_, st.integers(1, 30)))
def test_instruction_score_matches_dcg_formula_and_is_bounded(a, mask):
    n = min(len(a), len(mask))
    a, mask = a[:n], mask[:n]
    a_hat = normalised_density(a)
    score = instruction_score(a_hat, mask)
    k = int(mask.sum())
    expected = 0.0 if k == 0 else a_hat[mask].sum() / math.log2(2 + k)
    assert score == pytest.approx(expected)
    assert 0.0 <= score <= (k / math.log2(2 + k) if k else 0.0) + 1e-9


def test_empty_response_scores_zero_and_instance_score_composes_the_steps():
    mask = np.array([True, False, True])
    assert instance_score(np.zeros((3, 0), dtype=np.uint8), mask) == 0.0
    S0 = np.array([[10, 8, 9, 1], [10, 10, 10, 10], [2, 3, 8, 0]], dtype=np.uint8)
    a = density(cut(S0, 7), 4.0)
    expected = (normalised_density(a)[[0, 2]].sum()) / math.log2(4)
    assert instance_score(S0, mask, b=7, p=4.0) == pytest.approx(expected)


def test_sentence_ids_split_after_sentence_punctuation_and_newlines():
    tokens = ["▁Write", "▁a", "▁poem", ".", "▁Input", ":", "<0x0A>", "▁cats"]
    assert sentence_ids(tokens).tolist() == [0, 0, 0, 0, 1, 1, 2, 3]


@given(a=arrays(np.float64, st.integers(1, 40), elements=st.floats(0, 10)))
@settings(max_examples=50)
def test_position_profile_is_a_distribution_over_quarters(a):
    tokens = ["▁w"] * len(a)
    prof = position_profile(a, tokens)
    assert prof.shape == (4,)
    if a.sum() > 0:
        assert prof.sum() == pytest.approx(1.0)
    else:
        assert prof.sum() == 0.0


def test_position_profile_puts_sentence_starts_in_the_first_quarter():
    tokens = ["▁a", "▁b", "▁c", "▁d.", "▁e", "▁f", "▁g", "▁h."]
    a = np.array([1.0, 0, 0, 0, 1.0, 0, 0, 0])
    np.testing.assert_allclose(position_profile(a, tokens), [1, 0, 0, 0])
    np.testing.assert_allclose(position_profile(a[::-1].copy(), tokens), [0, 0, 0, 1])
