"""Rouge-L F-measure, bit-identical to `rouge-score`, fast enough for 50k-instruction pools.

Implements the similarity used by METHOD.md stage 1 (novelty: Rouge-L F, no stemming, reject if the
best match is > 0.7) and stage 4 (consensus: pairwise Rouge-L F with Porter stemming).

How it stays identical to `rouge_score.rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stem)`:
tokens come from `rouge_score.tokenize.tokenize` itself (lowercase, non-alphanumerics to spaces,
NLTK Porter stemming of tokens longer than 3 characters), with the stemmer memoized; the LCS length
is an integer, so any exact algorithm gives the same one; precision, recall and F are then computed
with the same floating-point operations in the same order as `rouge_score.scoring.fmeasure`.

How it is fast: each text is tokenized once and its tokens are mapped to integer ids, stored as a
string of code points, so rapidfuzz's bit-parallel C++ LCS (`LCSseq`) runs on whole token
sequences. `NoveltyIndex` adds an inverted index of token counts: the LCS of two sequences is at
most their token-multiset overlap, which bounds F from above, so most pool entries are ruled out
without computing any LCS, and the decision "is any score above the threshold?" stays exact.

Not included: Rouge-1/2 and Rouge-Lsum (the method does not use them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
from nltk.stem import porter
from rapidfuzz.distance import LCSseq
from rapidfuzz.process import cdist
from rouge_score.tokenize import NON_ALPHANUM_RE, VALID_TOKEN_RE

_PORTER = porter.PorterStemmer()


class _StemCache(dict):
    """word -> its rouge-score token after stemming, or None when rouge-score would drop it."""

    def __missing__(self, word: str) -> str | None:
        stemmed = _PORTER.stem(word) if len(word) > 3 else word
        value = stemmed if VALID_TOKEN_RE.match(stemmed) else None
        self[word] = value
        return value


_STEMS = _StemCache()


def tokenize(text: str, stem: bool = False) -> list[str]:
    """The exact tokens `rouge-score`'s default tokenizer produces for `text`.

    Same steps as `rouge_score.tokenize.tokenize`: lowercase, every run of characters outside
    [a-z0-9] becomes a space, split, Porter-stem tokens longer than 3 characters, drop tokens
    that are not [a-z0-9]+. Splitting the substituted text on spaces leaves only [a-z0-9]+
    tokens, so only stemmed tokens need the validity check, which is memoized with the stem.
    """
    tokens = NON_ALPHANUM_RE.sub(" ", text.lower()).split()
    if not stem:
        return tokens
    stems = _STEMS
    return [t for t in map(stems.__getitem__, tokens) if t is not None]


def _f_measure(lcs: int, n_pred: int, n_ref: int) -> float:
    if n_pred == 0 or n_ref == 0:
        return 0.0
    precision = lcs / n_pred
    recall = lcs / n_ref
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def _f_measure_array(
    lcs: np.ndarray, n_pred: np.ndarray | int, n_ref: np.ndarray | int
) -> np.ndarray:
    """Vectorized `_f_measure`; numpy float64 element-wise ops round exactly like Python floats."""
    lcs = np.asarray(lcs, dtype=np.float64)
    n_pred = np.asarray(n_pred, dtype=np.float64)
    n_ref = np.asarray(n_ref, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = lcs / n_pred
        recall = lcs / n_ref
        s = precision + recall
        f = 2 * precision * recall / s
    ok = (n_pred > 0) & (n_ref > 0) & (s > 0)
    return np.where(ok, f, 0.0)


class Vocab(dict):
    """Maps tokens to single characters so a token sequence becomes a str for rapidfuzz.

    Each new token gets the next code point (surrogates skipped); `encode` runs at C speed.
    """

    def __missing__(self, token: str) -> str:
        cp = len(self) + 1
        if cp >= 0xD800:
            cp += 0x800  # skip the surrogate block
        c = chr(cp)
        self[token] = c
        return c

    def encode(self, tokens: Sequence[str]) -> str:
        return "".join(map(self.__getitem__, tokens))


def rouge_l(prediction: str, reference: str, stem: bool = False) -> float:
    """Rouge-L F-measure of `prediction` against `reference`.

    Equal, bit for bit, to
    ``RougeScorer(["rougeL"], use_stemmer=stem).score(target=reference, prediction=prediction)
    ["rougeL"].fmeasure``.
    """
    p = tokenize(prediction, stem)
    r = tokenize(reference, stem)
    if not p or not r:
        return 0.0
    return _f_measure(int(LCSseq.similarity(p, r)), len(p), len(r))


def rouge_l_many(
    prediction: str, references: Sequence[str], stem: bool = False, workers: int = 1
) -> np.ndarray:
    """Rouge-L F of one prediction against each reference (one-against-many form)."""
    vocab = Vocab()
    q = vocab.encode(tokenize(prediction, stem))
    refs = [vocab.encode(tokenize(r, stem)) for r in references]
    return _scores_encoded(q, refs, workers)


def _lcs_row(q: str, pool: Sequence[str], workers: int = 1) -> np.ndarray:
    if not pool:
        return np.zeros(0, dtype=np.int64)
    return cdist([q], pool, scorer=LCSseq.similarity, dtype=np.int32, workers=workers)[0]


def _scores_encoded(q: str, pool: Sequence[str], workers: int = 1) -> np.ndarray:
    lcs = _lcs_row(q, pool, workers)
    lens = np.fromiter((len(s) for s in pool), dtype=np.int64, count=len(pool))
    return _f_measure_array(lcs, len(q), lens)


def pairwise_rouge_l(texts: Sequence[str], stem: bool = True) -> np.ndarray:
    """N x N matrix M with M[i, j] = rouge_l(texts[i], texts[j], stem) (all-pairs form).

    Each LCS is computed once (it is symmetric); F is then computed for both argument orders, as
    rouge-score would. The diagonal is each text against itself (1.0, or 0.0 for a text with no
    tokens).
    """
    vocab = Vocab()
    enc = [vocab.encode(tokenize(t, stem)) for t in texts]
    n = len(enc)
    lens = np.array([len(e) for e in enc], dtype=np.int64)
    lcs = np.zeros((n, n), dtype=np.int64)
    for i in range(n):
        lcs[i, i] = lens[i]
        for j in range(i + 1, n):
            lcs[i, j] = lcs[j, i] = LCSseq.similarity(enc[i], enc[j])
    return _f_measure_array(lcs, lens[:, None], lens[None, :])


def rouge_l_pairs(
    predictions: Sequence[str], references: Sequence[str], stem: bool = False
) -> np.ndarray:
    """Rouge-L F of predictions[i] against references[i] for every i (paired form)."""
    if len(predictions) != len(references):
        raise ValueError("predictions and references must have the same length")
    vocab = Vocab()
    p = [vocab.encode(tokenize(t, stem)) for t in predictions]
    r = [vocab.encode(tokenize(t, stem)) for t in references]
    lcs = np.fromiter(
        (LCSseq.similarity(a, b) for a, b in zip(p, r, strict=True)), dtype=np.int64, count=len(p)
    )
    return _f_measure_array(lcs, [len(a) for a in p], [len(b) for b in r])


class _Postings:
    """Growable (doc id, count) arrays for one token of the inverted index."""

    __slots__ = ("ids", "counts", "n")

    def __init__(self) -> None:
        self.ids = np.empty(4, dtype=np.int32)
        self.counts = np.empty(4, dtype=np.int32)
        self.n = 0

    def append(self, doc: int, count: int) -> None:
        if self.n == len(self.ids):
            self.ids = np.resize(self.ids, 2 * self.n)
            self.counts = np.resize(self.counts, 2 * self.n)
        self.ids[self.n] = doc
        self.counts[self.n] = count
        self.n += 1


class NoveltyIndex:
    """A growing pool of texts, scored against a new text with exact Rouge-L F.

    Args:
        stem: Porter-stem tokens (METHOD.md's novelty filter uses no stemming).
        workers: threads for rapidfuzz's batch LCS (-1 = all cores).

    `scores(text)` gives every exact score; `max_score`, `top_k` and `exceeds` use the
    token-overlap bound to compute exact LCS only where it can matter. `stats` counts pairs
    considered and pairs whose LCS was computed.
    """

    def __init__(self, stem: bool = False, workers: int = 1) -> None:
        self.stem = stem
        self.workers = workers
        self._vocab = Vocab()
        self._texts: list[str] = []
        self._enc: list[str] = []
        self._lens = np.zeros(1024, dtype=np.int64)
        self._postings: dict[str, _Postings] = {}
        self.stats = {"pairs": 0, "exact": 0}

    def __len__(self) -> int:
        return len(self._enc)

    @property
    def texts(self) -> list[str]:
        return self._texts

    def _encode(self, text: str) -> tuple[list[str], str]:
        toks = tokenize(text, self.stem)
        return toks, self._vocab.encode(toks)

    def add(self, text: str) -> int:
        """Add a text to the pool; returns its index."""
        toks, enc = self._encode(text)
        i = len(self._enc)
        self._texts.append(text)
        self._enc.append(enc)
        if i == len(self._lens):
            self._lens = np.resize(self._lens, 2 * i)
        self._lens[i] = len(enc)
        for tok, c in Counter(toks).items():
            post = self._postings.get(tok)
            if post is None:
                post = self._postings[tok] = _Postings()
            post.append(i, c)
        return i

    def extend(self, texts: Iterable[str]) -> None:
        for t in texts:
            self.add(t)

    def scores(self, text: str) -> np.ndarray:
        """Exact Rouge-L F of `text` (as prediction) against every pool text, in insertion order.

        Pairs sharing at most one token need no LCS: it equals their overlap (0 or 1).
        """
        toks, q = self._encode(text)
        n = len(self._enc)
        self.stats["pairs"] += n
        if not q or n == 0:
            return np.zeros(n)
        lcs = self._overlap(toks)
        need = np.flatnonzero(lcs >= 2)
        if need.size:
            enc = self._enc
            lcs[need] = _lcs_row(q, [enc[i] for i in need], self.workers)
        self.stats["exact"] += int(need.size)
        return _f_measure_array(lcs, len(q), self._lens[:n])

    def _overlap(self, toks: list[str]) -> np.ndarray:
        """Token-multiset overlap of `toks` with every pool text (an upper bound on the LCS)."""
        overlap = np.zeros(len(self._enc), dtype=np.int64)
        for tok, c in Counter(toks).items():
            post = self._postings.get(tok)
            if post is not None:
                overlap[post.ids[: post.n]] += np.minimum(post.counts[: post.n], c)
        return overlap

    def _upper_bounds(self, toks: list[str], q_len: int) -> np.ndarray:
        """Upper bound on F per pool text: F <= 2 * overlap / (len_q + len_pool)."""
        n = len(self._enc)
        overlap = self._overlap(toks)
        with np.errstate(divide="ignore", invalid="ignore"):
            ub = 2.0 * overlap / (q_len + self._lens[:n])
        # guard against rounding: the bound only prunes, so make it err upward
        return np.nan_to_num(ub, nan=0.0) + 1e-12

    def top_k(self, text: str, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The k pool texts most similar to `text`, exactly scored, best first.

        Returns:
            (indices, scores); ties are broken by insertion order. Fewer than k when the pool is
            smaller or other texts share no token with `text`.
        """
        toks, q = self._encode(text)
        n = len(self._enc)
        self.stats["pairs"] += n
        if n == 0 or not q or k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        ub = self._upper_bounds(toks, len(q))
        order = np.argsort(-ub, kind="stable")
        order = order[ub[order] > 1e-12]  # texts sharing no token score 0
        best_idx: list[np.ndarray] = []
        best_sc: list[np.ndarray] = []
        kth = -1.0
        chunk = max(64, 2 * k)
        start = 0
        while start < len(order):
            if kth >= 0 and ub[order[start]] < kth:
                break  # no remaining text can beat (or tie) the current k-th best
            idx = order[start : start + chunk]
            start += chunk
            lcs = _lcs_row(q, [self._enc[i] for i in idx], self.workers)
            self.stats["exact"] += len(idx)
            best_idx.append(idx)
            best_sc.append(_f_measure_array(lcs, len(q), self._lens[idx]))
            all_sc = np.concatenate(best_sc)
            if len(all_sc) >= k:
                kth = float(np.sort(all_sc)[-k])
        if not best_idx:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        idx = np.concatenate(best_idx)
        sc = np.concatenate(best_sc)
        sel = np.lexsort((idx, -sc))[:k]
        return idx[sel], sc[sel]

    def max_score(self, text: str) -> float:
        """The highest exact Rouge-L F of `text` against the pool (0.0 for an empty pool)."""
        _, sc = self.top_k(text, 1)
        return float(sc[0]) if len(sc) else 0.0

    def exceeds(self, text: str, threshold: float) -> bool:
        """Exactly whether any pool text scores > `threshold`, computing LCS only where the
        overlap bound allows a score above it."""
        toks, q = self._encode(text)
        n = len(self._enc)
        self.stats["pairs"] += n
        if n == 0 or not q:
            return False
        ub = self._upper_bounds(toks, len(q))
        cand = np.flatnonzero(ub > threshold)
        cand = cand[np.argsort(-ub[cand], kind="stable")]
        for s in range(0, len(cand), 256):
            idx = cand[s : s + 256]
            lcs = _lcs_row(q, [self._enc[i] for i in idx], self.workers)
            self.stats["exact"] += len(idx)
            if np.any(_f_measure_array(lcs, len(q), self._lens[idx]) > threshold):
                return True
        return False
