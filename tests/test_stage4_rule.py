"""The stage-4 rule exists once (`consensus.decide`): the pipeline's `select_consensus`, the
selectors ``sum``/``best_pair``, the ablation grid's vectorised decisions and the plots' threshold
curve all give the decisions of a literal, loop-based reference of METHOD.md stage 4 (the kit's
code before the rule was factored out), on every ordered triple of the eight recorded models'
answers to the 252 user-oriented instructions."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from ensemble_instruct_lib.analysis import recorded_matrix as rm
from ensemble_instruct_lib.method.consensus import (
    REASONS,
    decide,
    empty_mask,
    equal_matrix,
    normalize,
    select_consensus,
)
from ensemble_instruct_lib.method.selectors import select
from ensemble_instruct_lib.nb import tables


def reference_decision(raw, scores, threshold, rule, norm=None):
    """METHOD.md stage 4 written out with loops, from the candidates and their score matrix."""
    norm = [normalize(c) for c in raw] if norm is None else norm
    n = len(raw)

    def done(index, reason):
        if index is not None and not raw[index].strip():
            return None, "empty"
        return index, reason

    if norm[0] and any(norm[0] == o for o in norm[1:]):
        return done(0, "exact_match")
    for i in range(1, n):
        if norm[i] and any(norm[i] == norm[j] for j in range(i + 1, n)):
            return done(i, "exact_match")
    low = min(scores[i][j] for i in range(n) for j in range(n) if i != j)
    if low <= threshold:
        return None, "below_threshold"
    if rule == "sum":
        sums = [sum(scores[i][j] for j in range(n) if j != i) for i in range(n)]
        return done(max(range(n), key=lambda i: (sums[i], -i)), "consensus")
    best, best_i = -1.0, 0
    for i in range(n):
        for j in range(i + 1, n):
            if scores[i][j] > best:
                best, best_i = scores[i][j], i
    return done(best_i, "consensus")


@pytest.fixture(scope="module")
def mat():
    return rm.recorded_matrix()


@pytest.fixture(scope="module")
def norms(mat):
    return [[normalize(t) for t in row] for row in mat.responses]


def _sub(mat, e, order):
    idx = np.asarray(order)
    return [mat.responses[e][i] for i in order], mat.scores[e][np.ix_(idx, idx)]


def test_decide_hand_worked_batch():
    # three examples of three candidates: a consensus, an exact match, a disagreement
    scores = np.array(
        [
            [[1, 0.25, 0.4], [0.25, 1, 2 / 7], [0.4, 2 / 7, 1]],
            [[1, 0.1, 0.1], [0.1, 1, 0.9], [0.1, 0.9, 1]],
            [[1, 0.0, 0.3], [0.0, 1, 0.3], [0.3, 0.3, 1]],
        ]
    )
    equal = np.zeros((3, 3, 3), dtype=bool)
    equal[1, 1, 2] = equal[1, 2, 1] = True
    empty = np.zeros((3, 3), dtype=bool)
    d = decide(scores, equal, empty, 0.01, "sum")
    assert d.index.tolist() == [2, 1, -1]
    assert [REASONS[r] for r in d.reason] == ["consensus", "exact_match", "below_threshold"]
    assert d.exact.tolist() == [-1, 1, -1] and d.min_score.tolist() == [0.25, 0.1, 0.0]
    assert decide(scores, equal, empty, 0.01, "best_pair").index.tolist() == [0, 1, -1]
    # a pick from elsewhere replaces the exact-match candidate; the filter still drops
    d = decide(scores, equal, empty, 0.01, pick=np.array([1, 0, 2]))
    assert d.index.tolist() == [1, 0, -1] and d.eligible.tolist() == [True, True, False]
    # the picked candidate is empty -> dropped as "empty"
    empty[0, 1] = True
    d = decide(scores, equal, empty, 0.01, pick=np.array([1, 0, 2]))
    assert d.index.tolist() == [-1, 0, -1] and REASONS[d.reason[0]] == "empty"
    # one example: 0-d arrays
    one = decide(scores[0], equal[0], empty[0], 0.3)
    assert (
        one.index.shape == ()
        and int(one.index) == -1
        and REASONS[int(one.reason)] == ("below_threshold")
    )
    with pytest.raises(ValueError, match="rule"):
        decide(scores, equal, empty, rule="vote")
    with pytest.raises(ValueError, match="N >= 2"):
        decide(np.ones((1, 1)), np.zeros((1, 1), bool), np.zeros(1, bool))


def test_equal_matrix_and_empty_mask():
    eq = equal_matrix(["a b", "", "a b", ""])
    assert eq.tolist() == [
        [False, False, True, False],
        [False, False, False, False],
        [True, False, False, False],
        [False, False, False, False],
    ]
    assert empty_mask(["x", " ", None, "\n"]).tolist() == [False, True, True, True]


def test_grid_decisions_equal_the_reference_on_every_ordered_triple(mat, norms):
    """8 * 7 * 6 = 336 ordered triples x 252 examples, both rules."""
    for order in itertools.permutations(range(len(mat.models)), 3):
        idx = np.asarray(order)
        for rule, threshold in (("sum", 0.01), ("best_pair", 0.2)):
            d = rm.decide(mat, order, threshold, rule)
            for e in range(mat.examples):
                index, reason = reference_decision(
                    [mat.responses[e][i] for i in order],
                    mat.scores[e][np.ix_(idx, idx)].tolist(),
                    threshold,
                    rule,
                    [norms[e][i] for i in order],
                )
                assert int(d.index[e]) == (-1 if index is None else index), (order, e)
                assert REASONS[int(d.reason[e])] == reason, (order, e)


@pytest.mark.slow
def test_select_consensus_and_selectors_equal_the_reference_on_every_triple(mat):
    """Every 3-subset (56, in the recorded order) x 252 examples, from the strings: the
    selectors ``sum`` and ``best_pair`` decide as the reference (`select_consensus` is checked
    the same way in test_ablations.py)."""
    for order in itertools.combinations(range(len(mat.models)), 3):
        for e in range(mat.examples):
            raw, scores = _sub(mat, e, order)
            for rule in ("sum", "best_pair"):
                index, reason = reference_decision(raw, scores.tolist(), 0.01, rule)
                sel = select(raw, rule, 0.01)
                assert (sel.index, sel.reason) == (index, reason), (order, e)
    res = select_consensus(raw, 0.01, "best_pair")
    assert (res.index, res.reason) == (sel.index, sel.reason)
    np.testing.assert_array_equal(sel.scores, scores)


@pytest.mark.parametrize("rule", ["sum", "best_pair"])
def test_threshold_curve_equals_the_reference_on_every_triple(mat, norms, rule):
    """The plots' curve from stored matrices: per 3-subset, the reason counts at each
    threshold are the reference's."""
    thresholds = [0.0, 0.01, 0.3]
    for order in itertools.combinations(range(len(mat.models)), 3):
        subs = [_sub(mat, e, order) for e in range(mat.examples)]
        frame = pd.DataFrame(
            {"scores": [s.tolist() for _, s in subs], "candidates": [r for r, _ in subs]}
        )
        curve = tables.threshold_curve(frame, thresholds, rule).set_index("threshold")
        for t in thresholds:
            ref = [
                reference_decision(r, s, t, rule, [norms[e][i] for i in order])[1]
                for e, (r, s) in enumerate(subs)
            ]
            assert len(ref) == mat.examples
            for reason in REASONS:
                assert curve.loc[t, reason] == ref.count(reason), (order, t, reason)
