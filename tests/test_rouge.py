"""Rouge-L against rouge-score (exact equality on real text) and against hand-worked cases."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from rouge_score import rouge_scorer

from ensemble_instruct_lib import rouge_l
from ensemble_instruct_lib.method.novelty_index import NoveltyIndex
from ensemble_instruct_lib.method.rouge import (
    pairwise_rouge_l,
    pairwise_rouge_l_batch,
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


def _brute_match(scores: np.ndarray, threshold: float, k: int):
    """The reference for `NoveltyIndex.match`: every score, sorted by (score desc, index asc)."""
    exceeds = bool((scores > threshold).any())
    order = np.lexsort((np.arange(len(scores)), -scores))
    order = order[scores[order] > 0]
    best = float(scores.max()) if len(scores) else 0.0
    return exceeds, best, ([] if exceeds else order[:k].tolist())


def _check_match(idx: NoveltyIndex, pool: list[str], q: str, expected: np.ndarray) -> None:
    for t in (0.0, 0.2, 0.5, 0.7, 0.9, 1.0):
        for k in (1, 3, 10):
            m = idx.match(q, t, k)
            exceeds, best, top = _brute_match(expected, t, k)
            assert (m.exceeds, m.max_score) == (exceeds, best), (q, t, k)
            assert m.indices.tolist() == top, (q, t, k)
            assert (m.scores == expected[top]).all()
            assert idx.exceeds(q, t) == exceeds
    top_i, top_s = idx.top_k(q, 10)
    assert top_i.tolist() == _brute_match(expected, 2.0, 10)[2]
    assert idx.max_score(q) == (float(expected.max()) if len(expected) else 0.0)


def test_match_equals_brute_force_on_seed_instructions(seed_instructions):
    """Decisions, maxima and top-k lists of a growing index equal rouge-score's over every pair."""
    idx = NoveltyIndex()
    pool: list[str] = []
    rng = random.Random(3)
    queries = seed_instructions[::9] + [
        " ".join(rng.sample(s.split(), len(s.split()))) for s in seed_instructions[1::11]
    ]
    for i, s in enumerate(seed_instructions):
        if i % 25 == 0 and pool:
            for q in queries[i // 25 :: 7]:
                _check_match(idx, pool, q, np.array([_reference(q, p, False) for p in pool]))
        idx.add(s)
        pool.append(s)


def test_match_adversarial_ties_duplicates_empty_and_unicode():
    # 14 exact duplicates tie for every place; near-duplicates tie at the 10th place; empty and
    # punctuation-only pool texts never enter a list; unicode folds as rouge-score folds it
    pool = (
        ["", "!!!"]
        + ["the cat sat on the mat"] * 14
        + ["a cat sat on a mat", "the dog sat on the mat", "the cat sat on the rug"] * 4
        + ["Café naïve ÉCOLE 漢字 straße", "cafe naive ecole strasse", "ＦＵＬＬ width Kelvin K"]
        + ["the the the the cat", "cat the", "mat on sat cat the"]
    )
    idx = NoveltyIndex()
    idx.extend(pool)
    queries = [
        "the cat sat on the mat",
        "The cat sat on the mat, again!",
        "the the cat",
        "cat",
        "café école naïve",
        "full width kelvin k",
        "",
        "...",
        "sat sat sat sat sat sat",
        "unrelated words only here",
    ]
    for q in queries:
        expected = np.array([_reference(q, p, False) for p in pool])
        _check_match(idx, pool, q, expected)


def test_match_random_small_vocabulary_against_rouge_score():
    """Random texts over 6 words: many equal scores, repeated tokens, varied lengths."""
    rng = random.Random(11)
    words = ["a", "b", "c", "d", "e", "f"]
    pool = [" ".join(rng.choices(words, k=rng.randint(0, 12))) for _ in range(120)]
    idx = NoveltyIndex()
    idx.extend(pool)
    for _ in range(40):
        q = " ".join(rng.choices(words, k=rng.randint(0, 14)))
        _check_match(idx, pool, q, np.array([_reference(q, p, False) for p in pool]))


def test_pairwise_batch_equals_per_group_and_rouge_score(recorded):
    rng = random.Random(5)
    by_example: dict[str, list[str]] = {}
    for r in recorded:
        by_example.setdefault(r["instruction"], []).append(r["response"])
    groups = []
    for outs in list(by_example.values())[:40]:
        for n in (2, 3, 5):
            groups.append(rng.sample(outs, n))
    groups += [["", "", "x"], ["same text", "same text", "Same text!"]]
    got = pairwise_rouge_l_batch(groups, stem=True)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    for g, m in zip(groups, got, strict=True):
        assert (m == pairwise_rouge_l(g, stem=True)).all()
        exp = [[scorer.score(target=b, prediction=a)["rougeL"].fmeasure for b in g] for a in g]
        for i in range(len(g)):
            for j in range(len(g)):
                if i != j:
                    assert m[i, j] == exp[i][j]


def test_small_and_large_pairwise_paths_agree(seed_instructions):
    # groups of up to 12 texts take the pure-Python path, larger ones rapidfuzz's cdist
    big = pairwise_rouge_l(seed_instructions[:40], stem=True)
    for s in (0, 9, 17):
        small = pairwise_rouge_l(seed_instructions[s : s + 12], stem=True)
        assert (small == big[s : s + 12, s : s + 12]).all()


def test_match_hand_worked_ties_at_the_threshold_and_the_tenth_place():
    # query of 10 distinct tokens (the prediction). 12 pool texts of 10 tokens share 7 in order:
    # P = R = 0.7, F = 0.7 exactly in floats; "a b c d e f": P = 0.6, R = 1, F = 0.75 (rouge-score
    # gives 0.7499999999999999), so at threshold 0.7 the query is rejected, at 0.8 it is novel
    # and its 10 kept are the 0.75 text and then the first 9 of the tied texts, by insertion
    q = "a b c d e f g h i j"
    tied = [f"a b c d e f g x{i} y{i} z{i}" for i in range(12)]
    pool = ["k l m n o", "a b", *tied, "a b c d e f"]  # F: 0, 1/3, 0.7 x 12, 0.75
    idx = NoveltyIndex()
    idx.extend(pool)
    m = idx.match(q, 0.7, 10)  # the first query builds the level and re-ranks the keys
    assert m.exceeds and len(m.indices) == 0
    assert m.max_score == _reference(q, pool[14], False) == 0.7499999999999999
    m = idx.match(q, 0.8, 10)
    assert not m.exceeds and m.max_score == 0.7499999999999999
    assert m.indices.tolist() == [14] + list(range(2, 11))  # 0.75 first, then ties by index
    assert m.scores.tolist()[1:] == [_reference(q, tied[0], False)] * 9 == [0.7] * 9
    assert not idx.exceeds(q, 0.75) and idx.exceeds(q, 0.7)
    idx.add("a b c d e f g h y z")  # LCS 8: P = R = 0.8, F = 0.8000000000000002 > 0.8
    m = idx.match(q, 0.8, 10)
    assert m.exceeds and len(m.indices) == 0
    assert m.max_score == _reference(q, "a b c d e f g h y z", False) == 0.8000000000000002
    fresh = NoveltyIndex()  # a fresh index: the decision is the query's first use of the level
    fresh.extend(pool)
    assert fresh.exceeds(q, 0.7)


def test_match_on_a_growing_pool_across_re_rankings_equals_rouge_score():
    """A pool grown past the re-rankings of the key order (at 512 and 1,024 texts), queried as
    it grows, so prefix postings posted under one order are re-posted under the next; mid-size
    vocabulary so that many queries have 10 scores >= 0.3 (the decision's scores bound the
    walk) and some exceed 0.7 (the decision's maximum)."""
    rng = random.Random(21)
    words = [f"w{i}" for i in range(60)]
    base = [rng.choices(words, k=rng.randint(3, 16)) for _ in range(200)]
    pool: list[str] = []
    idx = NoveltyIndex()
    levels_used: set[float] = set()
    orig = NoveltyIndex._candidates

    def spy(self, ordered, tau, *args):
        levels_used.add(tau)
        return orig(self, ordered, tau, *args)

    NoveltyIndex._candidates = spy
    try:
        for n in range(1_150):
            b = rng.choice(base)
            text = " ".join(b[: rng.randint(1, len(b))] + rng.choices(words, k=rng.randint(0, 6)))
            if n % 97 == 0 and pool:
                for q in (text, " ".join(rng.choice(base)), " ".join(rng.choices(words, k=9))):
                    expected = np.array([_reference(q, p, False) for p in pool])
                    for t, k in ((0.7, 10), (0.5, 3)):
                        got = idx.match(q, t, k)
                        exceeds, best, top = _brute_match(expected, t, k)
                        assert (got.exceeds, got.max_score) == (exceeds, best), (q, t, k)
                        assert got.indices.tolist() == top, (q, t, k)
                        assert (got.scores == expected[top]).all()
                        assert idx.exceeds(q, t) == exceeds
            idx.add(text)
            pool.append(text)
    finally:
        NoveltyIndex._candidates = orig
    assert idx._rerank_at > 1_024  # re-ranked at least twice
    assert levels_used == {0.7, 0.5}  # prefix levels are read for the decisions only


def _one_at_a_time(seeds: list[str], texts: list[str], threshold: float, k: int):
    """The reference loop for `add_novel`: `match`, then `add` when novel, text by text."""
    idx = NoveltyIndex()
    idx.extend(seeds)
    out = []
    for t in texts:
        m = idx.match(t, threshold, k)
        if not m.exceeds:
            idx.add(t)
        out.append(m)
    return idx, out


def _same(a, b) -> bool:
    return (
        a.exceeds == b.exceeds
        and a.max_score == b.max_score
        and a.indices.tolist() == b.indices.tolist()
        and a.scores.tolist() == b.scores.tolist()
    )


def test_add_novel_equals_rouge_score_text_by_text():
    """Against rouge-score over every pair: each text is judged against the seeds and the texts
    accepted before it, including those of its own block (duplicates, ties, empty texts)."""
    rng = random.Random(8)
    words = ["a", "b", "c", "d", "e", "f", "g", "h"]
    seeds = [" ".join(rng.choices(words, k=rng.randint(0, 9))) for _ in range(25)]
    texts = [" ".join(rng.choices(words, k=rng.randint(0, 11))) for _ in range(70)]
    texts += ["", "a b c", "a b c", "A, b; c!"] + texts[:5]
    for threshold, k, block in ((0.7, 10, 16), (0.5, 3, 7), (0.9, 10, 256), (0.7, 0, 1)):
        idx = NoveltyIndex()
        idx.extend(seeds)
        got = idx.add_novel(texts, threshold, k, block=block)
        pool = list(seeds)
        for t, m in zip(texts, got, strict=True):
            expected = np.array([_reference(t, p, False) for p in pool])
            exceeds, best, top = _brute_match(expected, threshold, k)
            assert (m.exceeds, m.max_score) == (exceeds, best), (t, threshold, k)
            assert m.indices.tolist() == top and (m.scores == expected[top]).all(), (t, k)
            if not m.exceeds:
                pool.append(t)
        assert idx.texts == pool


def test_add_novel_equals_match_then_add_on_a_growing_real_pool(seed_instructions, recorded):
    """Real instructions and output sentences, some repeated and re-worded, past the key
    re-rankings: the blocks give the one-at-a-time answers, lists and pool; the decisions read
    the threshold's prefix level, the lists walk the full index."""
    rng = random.Random(4)
    sents = list(
        dict.fromkeys(
            s.strip()
            for r in recorded
            for s in r["response"].split(".")
            if 3 <= len(s.split()) <= 30
        )
    )
    texts = sents[:1500] + rng.sample(seed_instructions, 40) + rng.sample(sents[:1500], 60)
    texts += [" ".join(rng.sample(t.split(), len(t.split()))) for t in rng.sample(sents, 60)]
    rng.shuffle(texts)
    seeds = seed_instructions[:100]
    calls = {"walk": 0, "levels": set()}

    walk, pairs = NoveltyIndex._walk, NoveltyIndex._level_pairs

    def spy_walk(self, *args):
        calls["walk"] += 1
        return walk(self, *args)

    def spy_pairs(self, orders, qlen, qs, tau, *args):
        calls["levels"].add(tau)
        return pairs(self, orders, qlen, qs, tau, *args)

    for threshold, k in ((0.7, 10), (0.5, 4)):
        ref_idx, ref = _one_at_a_time(seeds, texts, threshold, k)
        idx = NoveltyIndex()
        idx.extend(seeds)
        NoveltyIndex._walk, NoveltyIndex._level_pairs = spy_walk, spy_pairs
        try:
            got = idx.add_novel(texts, threshold, k, block=128)
        finally:
            NoveltyIndex._walk, NoveltyIndex._level_pairs = walk, pairs
        bad = [i for i, (a, b) in enumerate(zip(ref, got, strict=True)) if not _same(a, b)]
        assert not bad, (threshold, k, bad[:5])
        assert idx.texts == ref_idx.texts
        assert threshold < 0.7 or idx._rerank_at > 1_024  # re-ranked twice on the way
        dec = NoveltyIndex()
        dec.extend(seeds)
        assert dec.add_novel_decisions(texts, threshold, block=100).tolist() == [
            not m.exceeds for m in ref
        ]
        assert dec.texts == ref_idx.texts
    assert calls["walk"] > 0 and calls["levels"] == {0.7, 0.5}
