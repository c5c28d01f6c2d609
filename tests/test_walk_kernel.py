"""The compiled top-k walk (`method/_walk_kernel.py`) against rapidfuzz's LCS and rouge-score."""

from __future__ import annotations

import random

import numpy as np
from rapidfuzz.distance import LCSseq
from rouge_score import rouge_scorer

import ensemble_instruct_lib.method._walk_kernel as kernel_mod
import ensemble_instruct_lib.method.novelty_index as index_mod
from ensemble_instruct_lib.method._walk_kernel import _WORD, _lcs, _lcs_word, _query_masks
from ensemble_instruct_lib.method.novelty_index import NoveltyIndex

_SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def _lcs_of(a: list[int], b: list[int]) -> int:
    """The kernel's LCS of query a and text b, by the path `walk_scores` takes for len(a)."""
    q = np.array(a, dtype=np.int32)
    tok = np.array([7, 7, *b, 7], dtype=np.int32)  # b inside a longer buffer, as in the pool
    if len(a) <= _WORD:
        pm = np.zeros(64, dtype=np.uint64)
        for i, c in enumerate(a):
            pm[c] |= np.uint64(1) << np.uint64(i)
        return _lcs_word(pm, tok, 2, 2 + len(b))
    qtok, qmask = _query_masks(q)
    assert qtok.tolist() == sorted(set(a))
    for t, row in zip(qtok.tolist(), qmask, strict=True):  # bit i of the row: a[i] == t
        bits = "".join(f"{int(w):064b}"[::-1] for w in row)
        assert [i for i, x in enumerate(bits) if x == "1"] == [i for i, c in enumerate(a) if c == t]
    return _lcs(qtok, qmask, tok, 2, 2 + len(b))


def test_bit_parallel_lcs_equals_rapidfuzz_across_word_boundaries():
    """Lengths around one and two 64-bit words (carries between words), tiny and larger
    alphabets, empty texts, and identical sequences (every bit of a word used)."""
    rng = random.Random(3)
    lengths = [0, 1, 2, 5, 63, 64, 65, 127, 128, 129, 200]
    checked = 0
    for la in lengths[1:]:
        for lb in lengths:
            for alphabet in (2, 5, 40):
                a = [rng.randrange(1, alphabet + 1) for _ in range(la)]
                b = [rng.randrange(1, alphabet + 1) for _ in range(lb)]
                for x, y in ((a, b), (a, a), (a, a[::-1])):
                    expected = LCSseq.similarity([chr(c + 99) for c in x], [chr(c + 99) for c in y])
                    assert _lcs_of(x, y) == expected, (len(x), len(y), alphabet)
                    checked += 1
    assert checked > 600
    # a carry that crosses a whole word of ones (no match in the middle word) into the next
    a = [1] * 64 + [2] * 64 + [3] * 10
    for b in ([1, 3, 3], [1] * 70 + [3] * 12, [2, 1, 3, 1, 3], [3] * 5 + [1] * 64):
        expected = LCSseq.similarity([chr(c + 99) for c in a], [chr(c + 99) for c in b])
        assert _lcs_of(a, b) == expected, b


def _reference(prediction: str, reference: str) -> float:
    return _SCORER.score(target=reference, prediction=prediction)["rougeL"].fmeasure


def _texts(rng: random.Random, ordered: bool):
    """Texts edited from a few long base texts. ordered: bases of distinct words, edited by
    deletions and insertions that keep their order, so the LCS is close to the shared-key count
    and bounds are tight; else a small vocabulary with repeats, where the LCS is often far
    below the bound."""
    vocab = [f"w{i}" for i in range(400 if ordered else 30)]
    if ordered:
        base = [rng.sample(vocab, rng.randint(20, 110)) for _ in range(12)]
    else:
        base = [rng.choices(vocab, k=rng.randint(20, 110)) for _ in range(12)]

    def text() -> str:
        out = []
        for w in rng.choice(base):
            if rng.random() < 0.85:
                out.append(w)
            if rng.random() < 0.05:
                out.append(rng.choice(vocab))
        return " ".join(out)

    return text, " ".join(base[0])


def test_walk_with_short_and_long_queries_equals_rouge_score():
    """Lists from the compiled walk (queries of up to 64 tokens and longer ones) are those of
    rouge-score over every pair: pools in which most texts share many tokens, so the decision
    scores at least k texts and the walk prunes by bound, with ties and repeated texts."""
    rng = random.Random(12)
    calls: list[int] = []
    kernel = kernel_mod.walk_scores

    def spy(*args):
        calls.append(len(args[9]))  # the query's token codes
        return kernel(*args)

    for ordered in (True, False):
        text, first = _texts(rng, ordered)
        pool = [text() for _ in range(160)] + [first] * 2
        idx = NoveltyIndex()
        idx.extend(pool)
        kernel_mod.walk_scores = spy
        try:
            for _ in range(14):
                q = text()
                expected = np.array([_reference(q, p) for p in pool])
                order = np.lexsort((np.arange(len(pool)), -expected))
                for threshold, k in ((0.97, 10), (0.9, 3)):
                    m = idx.match(q, threshold, k)
                    assert m.max_score == expected.max()
                    if m.exceeds:
                        assert expected.max() > threshold
                        continue
                    assert m.indices.tolist() == order[:k].tolist(), (q, threshold, k)
                    assert m.scores.tolist() == expected[order[:k]].tolist()
        finally:
            kernel_mod.walk_scores = kernel
        assert not idx._cnt.any() and not idx._mark.any() and not idx._pm.any()  # left zeroed
    assert any(n <= _WORD for n in calls) and any(n > _WORD for n in calls), calls


def test_walk_scores_from_weak_known_scores_equals_brute_force():
    """The kernel called directly on an index's arrays, every key of the query read, and the
    known scores the k weakest of the pool: many texts can reach the k-th best, so the order
    in which they are scored (the heap of bounds) decides what is pruned. Its lists are the
    exact top k of every pool text (ties by index), also when fewer than k scores are known."""
    rng = random.Random(5)
    vocab = [f"v{i}" for i in range(12)]
    pool = [" ".join(rng.choices(vocab, k=rng.randint(1, 90))) for _ in range(300)]
    pool += pool[:20]  # exact ties
    idx = NoveltyIndex()
    idx.extend(pool)
    for trial in range(30):
        q_text = " ".join(rng.choices(vocab, k=rng.randint(2, 140)))
        q = idx._codes.encode(q_text)
        exact = idx.scores(q_text)
        assert exact[::40].tolist() == [_reference(q_text, p) for p in pool[::40]]
        k = (1, 3, 10)[trial % 3]
        order = np.lexsort((np.arange(len(pool)), -exact))
        order = order[exact[order] > 0]
        # the k weakest positive scores; or fewer than k known (no k-th best to start from)
        known = order[::-1][: (k, k - 1, 0)[trial % 5 % 3]]
        keys = [idx._post[c] for c in index_mod._keys(q) if c in idx._post]
        size = len(idx._vocab) + 0x801
        idx._pm = np.zeros(2 * size, dtype=np.uint64)
        top, sc, n = kernel_mod.walk_scores(
            np.frombuffer(b"".join(keys), dtype=np.intc),
            idx._cnt,
            idx._mark,
            idx._pm,
            known.astype(np.int64),
            exact[known],
            idx._lens,
            idx._tok,
            idx._off,
            index_mod._code_points(q),
            0,
            k,
            index_mod._EPS,
        )
        assert top.tolist() == order[:k].tolist(), (trial, len(q), k)
        assert sc.tolist() == exact[order[:k]].tolist()
        assert n < len(order) - len(known)  # the bounds pruned some
        assert not idx._cnt.any() and not idx._mark.any() and not idx._pm.any()


def test_warm_up_compiles_what_the_index_calls():
    """`warm_up` passes the argument types `NoveltyIndex` passes (numba types include
    read-only-ness), so the first walk after it compiles nothing more."""
    kernel_mod.warm_up()
    idx = NoveltyIndex()
    idx.extend(["a b c d", "a b c e", "b c d e", "a c d e", "a b d e", "x y z"])
    idx.top_k("a b c d e", 3)  # fewer than k known scores
    idx.add_novel(["a b c d f", "q r s", "a b c d e f g"], 0.9, 2)
    assert len(kernel_mod.walk_scores.signatures) == 1, kernel_mod.walk_scores.signatures
