"""Rouge-L against rouge-score (exact equality on real text) and against hand-worked cases."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from rouge_score import rouge_scorer

from ensemble_instruct_lib import rouge_l
from ensemble_instruct_lib.method.rouge import (
    NoveltyIndex,
    pairwise_rouge_l,
    rouge_l_many,
    rouge_l_pairs,
    tokenize,
)


@pytest.fixture(scope="module")
def seed_instructions(data_root):
    with open(data_root / "self_instruct" / "seed_tasks.jsonl") as f:
        return [json.loads(line)["instruction"] for line in f if line.strip()]


@pytest.fixture(scope="module")
def recorded(data_root):
    rows = []
    for path in sorted((data_root / "self_instruct" / "user_oriented_predictions").glob("*.jsonl")):
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


def _reference(prediction, reference, stem):
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stem)
    return scorer.score(target=reference, prediction=prediction)["rougeL"].fmeasure


@pytest.mark.parametrize("stem", [False, True])
def test_all_pairs_of_seed_instructions_equal_rouge_score(seed_instructions, stem):
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stem)
    expected = np.array(
        [
            [scorer.score(target=b, prediction=a)["rougeL"].fmeasure for b in seed_instructions]
            for a in seed_instructions
        ]
    )
    got = pairwise_rouge_l(seed_instructions, stem=stem)
    assert got.shape == (175, 175)
    assert np.abs(got - expected).max() == 0.0
    assert (got == expected).all()
    # the one-against-many form and the index agree too
    idx = NoveltyIndex(stem=stem)
    idx.extend(seed_instructions)
    for i in (0, 17, 174):
        assert (idx.scores(seed_instructions[i]) == expected[i]).all()
        assert (
            rouge_l_many(seed_instructions[i], seed_instructions, stem=stem) == expected[i]
        ).all()


@pytest.mark.parametrize("stem", [False, True])
def test_recorded_outputs_equal_rouge_score(recorded, stem):
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stem)
    preds = [r["response"] for r in recorded]
    golds = [r["target"] for r in recorded]
    expected = np.array(
        [
            scorer.score(target=g, prediction=p)["rougeL"].fmeasure
            for p, g in zip(preds, golds, strict=True)
        ]
    )
    assert len(expected) == 2016
    assert (rouge_l_pairs(preds, golds, stem=stem) == expected).all()
    # the scalar form on a sample, and model-vs-model pairs (what consensus compares)
    rng = random.Random(0)
    for _ in range(300):
        a, b = rng.sample(preds, 2)
        assert rouge_l(a, b, stem=stem) == _reference(a, b, stem)


def test_tokenize_is_rouge_score_tokenizer():
    from rouge_score.tokenizers import DefaultTokenizer

    for text in ["Running dogs, RUN!", "naïve café 3.14 ÉCOLE", "", "---", "It's a don't-stop day"]:
        for stem in (False, True):
            assert tokenize(text, stem) == DefaultTokenizer(stem).tokenize(text)


def test_hand_worked_cases():
    # LCS("the cat sat on the mat", "the cat is on the mat") = 5 of 6 tokens each: P = R = F = 5/6
    assert rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # prediction "b d" against reference "a b c d": P = 2/2, R = 2/4, F = 2 * 1 * 0.5 / 1.5 = 2/3
    assert rouge_l("b d", "a b c d") == pytest.approx(2 / 3)
    assert rouge_l("a b c d", "b d") == pytest.approx(2 / 3)
    # no common token, empty and punctuation-only texts score 0
    assert rouge_l("alpha beta", "gamma delta") == 0.0
    assert rouge_l("", "anything") == 0.0
    assert rouge_l("!!!", "...") == 0.0
    # case and punctuation are ignored by the tokenizer
    assert rouge_l("Hello, World!", "hello world") == 1.0
    # stemming merges inflections (only with stem=True)
    assert rouge_l("running dogs", "run dog", stem=True) == 1.0
    assert rouge_l("running dogs", "run dog", stem=False) == 0.0


def test_novelty_index_bounds_give_exact_decisions(seed_instructions, recorded):
    pool = seed_instructions + [r["instruction"] for r in recorded[:252]]
    idx = NoveltyIndex()
    idx.extend(pool)
    queries = (
        [r["response"][:200] for r in recorded[::7]]
        + seed_instructions[::5]
        + [
            "Translate the following sentence into French.",
            "Write a poem about the sea.",
        ]
    )
    idx.stats = {"pairs": 0, "exact": 0}
    for q in queries:
        full = np.array([_reference(q, p, False) for p in pool])
        assert (idx.scores(q) == full).all()
        for t in (0.3, 0.5, 0.7):
            assert idx.exceeds(q, t) == bool((full > t).any())
        top_i, top_s = idx.top_k(q, 10)
        order = np.lexsort((np.arange(len(full)), -full))
        positive = order[full[order] > 0][:10]
        assert list(top_i) == list(positive)
        assert (top_s == full[positive]).all()
        assert idx.max_score(q) == full.max()
    assert len(idx) == len(pool)


def test_novelty_index_prunes_most_pairs(seed_instructions):
    idx = NoveltyIndex()
    idx.extend(seed_instructions)
    idx.stats = {"pairs": 0, "exact": 0}
    for q in seed_instructions[:50]:
        idx.exceeds(q + " Explain your answer in detail.", 0.7)
    assert idx.stats["pairs"] == 50 * 175
    assert idx.stats["exact"] < 0.1 * idx.stats["pairs"]


def test_empty_index_and_empty_query():
    idx = NoveltyIndex()
    assert len(idx) == 0
    assert idx.scores("hello there").shape == (0,)
    assert idx.max_score("hello there") == 0.0
    assert not idx.exceeds("hello there", 0.7)
    idx.add("hello there")
    assert idx.scores("...").tolist() == [0.0]
    assert not idx.exceeds("...", 0.0)


def test_tokenizer_matches_rouge_score_on_adversarial_text():
    from rouge_score.tokenizers import DefaultTokenizer

    rng = random.Random(7)
    alphabet = (
        "abcxyzABCXYZ0189 \t\n\r\x0b\x0c\x1c\x1f\u00a0\u2028.,;:'\"-_!?()"
        "éÉßİıſKKµÅﬁ①²٣\u0307\u200b漢字😀"
    )
    words = [
        "running",
        "runs",
        "ran",
        "happily",
        "generalization",
        "sses",
        "ied",
        "abcd",
        "Ability",
    ]
    ref_plain, ref_stem = DefaultTokenizer(False), DefaultTokenizer(True)
    for _ in range(3000):
        parts = [
            rng.choice(words)
            if rng.random() < 0.4
            else "".join(rng.choices(alphabet, k=rng.randint(1, 8)))
            for _ in range(rng.randint(0, 12))
        ]
        text = rng.choice(["", " ", "\n"]).join(parts)
        assert tokenize(text, False) == ref_plain.tokenize(text), text
        assert tokenize(text, True) == ref_stem.tokenize(text), text
