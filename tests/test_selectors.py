"""Hand-worked cases for the stage-4 selectors (`method/selectors.py`): utilities against
references (NLTK's chrF) and by hand, MBR, judge and reward picks, ties, empty outputs,
threshold edges and the record fields."""

from __future__ import annotations

import numpy as np
import pytest
from nltk.translate.chrf_score import sentence_chrf

from ensemble_instruct_lib.method.consensus import select_consensus
from ensemble_instruct_lib.method.selectors import (
    SELECTOR_REASONS,
    chrf,
    cosine_matrix,
    select,
    token_f1,
    utility_matrix,
)

CASES = [
    ["The cat sat.", "the cat sat", "A dog."],
    ["red green blue", "red green", "green blue red"],
    ["alpha beta", "gamma delta", "epsilon"],
    ["", "one two three", "one two"],
    ["b c a", "h d f g b", "h a"],
    ["a b", "a c", "a d"],
    ["", "", "something"],
]


def test_chrf_equals_nltk_over_the_effective_orders():
    pairs = [
        ("the cat sat on the mat", "the cat is on the mat"),
        ("a", "abc"),
        ("completely different", "xyz"),
        ("It is a guide to action", "It is the guiding principle"),
        ("abcd", "abce"),
    ]
    for hyp, ref in pairs:
        orders = min(6, len(hyp.replace(" ", "")), len(ref.replace(" ", "")))
        for beta in (2.0, 3.0):
            exp = sentence_chrf(ref, hyp, max_len=orders, beta=beta)
            assert chrf(hyp, ref, beta=beta) == pytest.approx(exp, abs=1e-12), (hyp, ref)
    assert chrf("", "abc") == 0.0 and chrf("abc", "   ") == 0.0
    assert chrf("yes", "yes") == pytest.approx(1.0)  # short answers: effective orders only
    # by hand: "ab" vs "ac": 1-grams P = R = 1/2, 2-grams no match -> (0.5 + 0) / 2
    assert chrf("ab", "ac") == pytest.approx(0.25)


def test_token_f1_by_hand():
    # common 2 ("a", "b"); p = 2/3, r = 2/4 -> F = 2 * (1/3) / (7/6) = 4/7
    assert token_f1("a b c", "a b d e") == pytest.approx(4 / 7)
    assert token_f1("a a", "a") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert token_f1("", "") == 0.0 and token_f1("x", "y") == 0.0


def test_cosine_and_embedding_hook():
    m = cosine_matrix(np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]))
    assert m[0, 1] == pytest.approx(1 / np.sqrt(2)) and m[2].tolist() == [0.0, 0.0, 0.0]

    calls = []

    def fake_embed(texts):
        calls.append(list(texts))
        table = {"yes": [1.0, 0.0], "yeah": [0.9, 0.1], "no": [0.0, 1.0], "": [1.0, 0.0]}
        return np.array([table[t] for t in texts])

    u = utility_matrix(["yes", "yeah", "no"], "embedding", fake_embed)
    assert calls == [["yes", "yeah", "no"]]  # raw text goes to the embedder
    assert u[0, 2] == 0.0 and u[0, 1] > 0.99
    s = select(["no", "yes", "yeah"], "mbr", 0.01, utility="embedding", embed=fake_embed)
    assert s.reason == "below_threshold"  # "no" is orthogonal to both
    s = select(["no", "yes", "yeah"], "mbr", -1.0, utility="embedding", embed=fake_embed)
    # sums of cosines: no 0.110, yes 0.994, yeah 0.994 + 0.110 -> "yeah"
    cos = 0.9 / np.hypot(0.9, 0.1)
    assert s.candidate_scores == pytest.approx(
        [0.1 / np.hypot(0.9, 0.1), cos, cos + 0.1 / np.hypot(0.9, 0.1)]
    )
    assert s.index == 2 and s.utility == "embedding"
    # an empty candidate never agrees, whatever its vector
    assert utility_matrix(["", "yes"], "embedding", fake_embed)[0, 1] == 0.0
    with pytest.raises(ValueError, match="embedding function"):
        utility_matrix(["a", "b"], "embedding")
    with pytest.raises(ValueError, match="one vector per candidate"):
        utility_matrix(["a", "b"], "embedding", lambda t: np.zeros((1, 2)))


@pytest.mark.parametrize("rule", ["sum", "best_pair"])
def test_sum_and_best_pair_equal_select_consensus(rule):
    for cands in CASES:
        for t in (-1.0, 0.0, 0.01, 0.3):
            s, r = select(cands, rule, t), select_consensus(cands, t, rule)
            assert (s.index, s.reason, s.output) == (r.index, r.reason, r.output)
            assert s.min_score == r.min_score


def test_mbr_rouge_l_is_the_sum_rule_and_other_utilities_by_hand():
    for cands in CASES:
        s, r = select(cands, "mbr", 0.01), select_consensus(cands, 0.01)
        assert (s.index, s.reason) == (r.index, r.reason)
    # token F1 on normalized text: F(0,1) = 2/3 * ... hand-worked
    cands = ["a b c", "a b", "c d"]
    s = select(cands, "mbr", 0.01, utility="token_f1")
    # F(a b c, a b) = 0.8, F(a b c, c d) = 0.4, F(a b, c d) = 0 -> min 0 -> dropped
    assert s.reason == "below_threshold" and s.min_score == 0.0
    s = select(cands, "mbr", -1.0, utility="token_f1")
    assert s.candidate_scores == pytest.approx([1.2, 0.8, 0.4]) and s.index == 0
    assert s.scores[0, 1] == pytest.approx(0.8)
    # chrF is not symmetric; MBR sums rows (the candidate as hypothesis)
    c = select(["abcd", "abc", "abcx"], "mbr", 0.01, utility="chrf")
    u = utility_matrix(["abcd", "abc", "abcx"], "chrf")
    assert c.candidate_scores == pytest.approx((u.sum(1) - np.diag(u)).tolist())
    assert c.index == int(np.argmax(u.sum(1) - np.diag(u)))
    with pytest.raises(ValueError, match="utility"):
        select(cands, "mbr", utility="bleu")


def test_judge_and_reward_picks_ties_missing_and_min_score():
    cands = ["red green blue", "red green", "green blue red"]
    j = select(cands, "judge", 0.01, candidate_scores=[3.0, 9.0, 9.0], details={"panel": [1]})
    assert (j.index, j.reason) == (1, "consensus")  # tie -> earlier
    assert j.record_fields()["score_details"] == {"panel": [1]}
    j = select(cands, "judge", 0.01, candidate_scores=[None, float("nan"), 2.0])
    assert j.index == 2  # missing scores count as the lowest
    # the judge overrides the exact-match candidate, the filter still keeps the example
    j = select(
        ["The cat sat.", "the cat sat", "A dog."], "reward", 0.01, candidate_scores=[0.1, 0.2, 0.9]
    )
    assert (j.index, j.reason) == (2, "exact_match")
    # the Rouge-L filter drops what the paper drops; a negative threshold turns it off
    far = ["alpha beta", "gamma delta", "epsilon"]
    assert select(far, "reward", 0.01, candidate_scores=[1, 2, 3]).reason == "below_threshold"
    assert select(far, "reward", -1.0, candidate_scores=[1, 2, 3]).index == 2
    # min_score edge: equal is kept, below is dropped
    assert select(far, "judge", -1.0, candidate_scores=[1, 2, 5], min_score=5).index == 2
    low = select(far, "judge", -1.0, candidate_scores=[1, 2, 4.5], min_score=5)
    assert (low.index, low.reason) == (None, "low_score") and "below min_score" in low.why
    # the best-scored candidate is empty -> dropped as empty
    e = select(["", "x y", "x z"], "judge", -1.0, candidate_scores=[9, 1, 1])
    assert (e.index, e.reason) == (None, "empty")
    with pytest.raises(ValueError, match="one score per candidate"):
        select(cands, "judge", candidate_scores=[1.0])


def test_threshold_edge_is_inclusive_for_every_selector():
    cands = ["the cat sat", "the dog ran fast today", "the cat ran"]
    for sel, kw in [("sum", {}), ("best_pair", {}), ("mbr", {"utility": "token_f1"})]:
        m = select(cands, sel, -1.0, **kw).min_score
        assert m > 0
        assert select(cands, sel, m, **kw).reason == "below_threshold"
        assert select(cands, sel, float(np.nextafter(m, -1.0)), **kw).reason == "consensus"


def test_records_say_why_and_keep_every_score():
    s = select(["b c a", "h d f g b", "h a"], "sum")
    rec = s.record_fields()
    assert rec["selector"] == rec["rule"] == "sum" and rec["chosen_index"] == 2
    assert rec["candidate_scores"] == pytest.approx([0.65, 0.25 + 2 / 7, 0.4 + 2 / 7])
    assert rec["why"].startswith("kept candidate 2") and "threshold 0.01" in rec["why"]
    b = select(["b c a", "h d f g b", "h a"], "best_pair")
    assert b.candidate_scores == pytest.approx([0.4, 2 / 7, 0.4]) and b.index == 0
    d = select(["sunny weather", "quantum physics", "banana bread"], "sum")
    assert d.why.startswith("dropped: lowest pairwise rouge_l 0 <= threshold")
    x = select(["Paris.", "paris", "Rome"], "sum")
    assert "exact-match" in x.why and x.reason in SELECTOR_REASONS
    with pytest.raises(ValueError, match="selector"):
        select(["a", "b"], "vote")
    with pytest.raises(ValueError, match="at least 2"):
        select(["a"], "sum")
