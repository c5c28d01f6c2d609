"""Golden cases for select_consensus (METHOD.md stage 4)."""

from __future__ import annotations

import numpy as np
import pytest
from rouge_score import rouge_scorer

from ensemble_instruct_lib import select_consensus
from ensemble_instruct_lib.method.consensus import consensus_summary, normalize


def test_normalize():
    assert normalize("  The Answer, is: 42!\n\tYes. ") == "the answer is 42 yes"
    assert normalize("...") == ""


def test_exact_match_with_first_candidate_in_any_position():
    for pos in (1, 2, 3):
        cands = ["Paris.", "London", "Berlin", "Rome"]
        cands[pos] = "paris"
        r = select_consensus(cands)
        assert (r.index, r.reason, r.output) == (0, "exact_match", "Paris.")


def test_exact_match_between_extra_outputs_keeps_the_first_of_them():
    r = select_consensus(["Lyon", "The city is Paris!", "the city is paris", "Nice"])
    assert (r.index, r.reason, r.output) == (1, "exact_match", "The city is Paris!")
    r = select_consensus(["Lyon", "Nice", "Paris", "paris."])
    assert (r.index, r.reason) == (2, "exact_match")


def test_first_candidate_match_wins_over_extra_pair():
    r = select_consensus(["B", "a", "A", "b"])
    assert (r.index, r.reason) == (0, "exact_match")


def test_sum_and_best_pair_rules_hand_worked():
    # LCS is one token for every pair: F(0,1) = 2/8, F(0,2) = 2/5, F(1,2) = 2/7.
    cands = ["b c a", "h d f g b", "h a"]
    s = select_consensus(cands, rule="sum")
    assert s.scores[0, 1] == pytest.approx(0.25)
    assert s.scores[0, 2] == pytest.approx(0.4)
    assert s.scores[1, 2] == pytest.approx(2 / 7)
    # sums: 0.65, 0.5357, 0.6857 -> candidate 2
    assert np.allclose(s.sums, [0.65, 0.25 + 2 / 7, 0.4 + 2 / 7])
    assert (s.index, s.reason, s.output) == (2, "consensus", "h a")
    # best pair (0, 2) -> its first member
    b = select_consensus(cands, rule="best_pair")
    assert (b.index, b.reason) == (0, "consensus")


def test_ties_go_to_the_earlier_candidate():
    r = select_consensus(["a b", "a c", "a d"])  # every pair scores 0.5
    assert (r.index, r.reason) == (0, "consensus")
    r = select_consensus(["x y", "a b", "a c", "a d", "x z"], threshold=-1)
    assert r.sums[1] == r.sums[2] == r.sums[3]
    assert r.index == 1
    assert select_consensus(["a b", "a c", "a d"], rule="best_pair").index == 0


def test_threshold_edge_is_inclusive():
    cands = ["the cat sat", "the dog ran fast today", "the cat ran"]
    low = select_consensus(cands, threshold=-1.0)
    m = low.min_score
    assert m > 0
    assert select_consensus(cands, threshold=m).reason == "below_threshold"
    kept = select_consensus(cands, threshold=float(np.nextafter(m, -1.0)))
    assert kept.reason == "consensus" and kept.index is not None


def test_disagreement_is_dropped():
    r = select_consensus(["sunny weather", "quantum physics", "banana bread"])
    assert (r.index, r.output, r.reason) == (None, None, "below_threshold")
    assert r.min_score == 0.0


def test_empty_candidates():
    # two empty outputs are not agreement; an empty candidate scores 0 -> dropped
    r = select_consensus(["", "", "an answer"])
    assert r.reason == "below_threshold"
    r = select_consensus(["   ", "!!!", "an answer", "an answer here"])
    assert r.reason == "below_threshold"
    # an exact match wins before the threshold even when another candidate is empty
    r = select_consensus(["an answer", "", "An answer."])
    assert (r.index, r.reason) == (0, "exact_match")
    # a chosen empty output drops the example (reachable with a negative threshold)
    r = select_consensus(["", "", ""], threshold=-1)
    assert (r.index, r.reason) == (None, "empty")
    r = select_consensus([None, "x y", "x z"], threshold=-1)
    assert r.index == 1


def test_scores_matrix_is_stemmed_rouge_on_normalized_text():
    cands = ["The runners were running.", "A runner runs!", "Running, quickly."]
    r = select_consensus(cands, threshold=-1)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    for i in range(3):
        for j in range(3):
            exp = scorer.score(target=normalize(cands[j]), prediction=normalize(cands[i]))
            assert r.scores[i, j] == exp["rougeL"].fmeasure
    assert r.output == cands[r.index]  # raw text, not normalized


def test_two_candidates_and_bad_arguments():
    r = select_consensus(["the sky is blue", "the sky looks blue"])
    assert (r.index, r.reason) == (0, "consensus")
    with pytest.raises(ValueError, match="at least 2"):
        select_consensus(["only one"])
    with pytest.raises(ValueError, match="rule"):
        select_consensus(["a", "b"], rule="vote")


def test_summary_counts():
    results = [
        select_consensus(["a b", "a b", "c"]),
        select_consensus(["x", "y", "z"]),
        select_consensus(["b c a", "h d f g b", "h a"]),
    ]
    s = consensus_summary(results)
    assert s["examples"] == 3 and s["kept"] == 2
    assert s["reasons"] == {"exact_match": 1, "consensus": 1, "below_threshold": 1, "empty": 0}
    assert s["chosen_index"] == {0: 1, 2: 1}
    d = results[0].to_dict()
    assert d["index"] == 0 and len(d["scores"]) == 3
