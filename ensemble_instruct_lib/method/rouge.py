"""Rouge-L F-measure, bit-identical to `rouge-score`, fast enough for 50k-instruction pools.

Implements the similarity used by METHOD.md stage 1 (novelty: Rouge-L F, no stemming, reject if the
best match is > 0.7) and stage 4 (consensus: pairwise Rouge-L F with Porter stemming). Scoring one
text against a growing pool of 50k, indexed, is method/novelty_index.py (`NoveltyIndex`); this
module holds the tokens and the one-, many-, paired- and all-pairs scores it builds on.

How it stays identical to `rouge_score.rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stem)`:
tokens are those of `rouge_score.tokenize.tokenize` (lowercase, non-alphanumerics to spaces, NLTK
Porter stemming of tokens longer than 3 characters, invalid tokens dropped); the LCS length is an
integer, so any exact algorithm gives the same one; precision, recall and F are then computed with
the same floating-point operations in the same order as `rouge_score.scoring.fmeasure`.

How it is fast: a word's rouge token (stemmed or not) is looked up once per process and memoized as
one character of a token vocabulary, so a text becomes a short string of code points with one
`str.translate`, one `split` and one `join` (ASCII text; other text goes through rouge-score's own
regex). rapidfuzz's bit-parallel C++ LCS (`LCSseq`) then runs on whole token sequences. F is
symmetric in its two arguments, so each pair's LCS is computed once. `pairwise_rouge_l_batch`
tokenizes each distinct text of many groups once and computes each distinct pair once.

Not included: Rouge-1/2 and Rouge-Lsum (the method does not use them), the pool index.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from nltk.stem import porter
from rapidfuzz.distance import LCSseq
from rapidfuzz.process import cdist
from rouge_score.tokenize import NON_ALPHANUM_RE, VALID_TOKEN_RE

_PORTER = porter.PorterStemmer()
# ASCII text: lowercase A-Z, every other non-[a-z0-9] character becomes a separator
_ASCII_TABLE = str.maketrans(
    {chr(i): (chr(i).lower() if chr(i).isalnum() else " ") for i in range(128)}
)


class _StemCache(dict):
    """word -> its rouge-score token after stemming, or None when rouge-score would drop it."""

    def __missing__(self, word: str) -> str | None:
        stemmed = _PORTER.stem(word) if len(word) > 3 else word
        value = stemmed if VALID_TOKEN_RE.match(stemmed) else None
        self[word] = value
        return value


_STEMS = _StemCache()


def _words(text: str) -> list[str]:
    """rouge-score's tokens before stemming: lowercase, runs of non-[a-z0-9] split."""
    if text.isascii():
        return text.translate(_ASCII_TABLE).split()
    return NON_ALPHANUM_RE.sub(" ", text.lower()).split()


def tokenize(text: str, stem: bool = False) -> list[str]:
    """The exact tokens `rouge-score`'s default tokenizer produces for `text`.

    Same steps as `rouge_score.tokenize.tokenize`: lowercase, every run of characters outside
    [a-z0-9] becomes a space, split, Porter-stem tokens longer than 3 characters, drop tokens
    that are not [a-z0-9]+. Splitting the substituted text on spaces leaves only [a-z0-9]+
    tokens, so only stemmed tokens need the validity check, which is memoized with the stem.
    """
    tokens = _words(text)
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


_MAX_CODE = 0x10FFFF - 0x800  # code points available to a Vocab (surrogates skipped)


class Vocab(dict):
    """Maps tokens to single characters so a token sequence becomes a str for rapidfuzz.

    Each new token gets the next code point (surrogates skipped); `encode` runs at C speed.
    Holds at most 1,112,063 - 2,048 distinct tokens.
    """

    def __missing__(self, token: str) -> str:
        cp = len(self) + 1
        if cp >= 0xD800:
            cp += 0x800  # skip the surrogate block
        if cp > 0x10FFFF:
            raise ValueError(f"Vocab is full: more than {_MAX_CODE:,} distinct tokens")
        c = chr(cp)
        self[token] = c
        return c

    def encode(self, tokens: Sequence[str]) -> str:
        return "".join(map(self.__getitem__, tokens))


class _Codes(dict):
    """word (before stemming) -> the code of its rouge token in `vocab`, "" when it is dropped."""

    def __init__(self, vocab: Vocab, stem: bool) -> None:
        super().__init__()
        self.vocab = vocab
        self.stem = stem

    def __missing__(self, word: str) -> str:
        if self.stem:
            token = _STEMS[word]
            code = "" if token is None else self.vocab[token]
        else:
            code = self.vocab[word]
        self[word] = code
        return code

    def encode(self, text: str) -> str:
        """`text`'s rouge tokens as a string, one character per token."""
        return "".join(map(self.__getitem__, _words(text)))


_SHARED_VOCAB = Vocab()
_SHARED_CODES = {False: _Codes(_SHARED_VOCAB, False), True: _Codes(_SHARED_VOCAB, True)}


def clear_memos() -> None:
    """Forget every memoized stem and word code (benchmarks use it to time a cold start)."""
    _STEMS.clear()
    _SHARED_VOCAB.clear()
    for c in _SHARED_CODES.values():
        c.clear()


def _codes(stem: bool) -> _Codes:
    """The process-wide memo of word codes, emptied between calls once it grows large (codes
    are only ever compared within one call)."""
    if len(_SHARED_VOCAB) > 500_000:
        clear_memos()
    return _SHARED_CODES[bool(stem)]


def rouge_l(prediction: str, reference: str, stem: bool = False) -> float:
    """Rouge-L F-measure of `prediction` against `reference`.

    Equal, bit for bit, to
    ``RougeScorer(["rougeL"], use_stemmer=stem).score(target=reference, prediction=prediction)
    ["rougeL"].fmeasure``.
    """
    codes = _codes(stem)
    p = codes.encode(prediction)
    r = codes.encode(reference)
    if not p or not r:
        return 0.0
    return _f_measure(int(LCSseq.similarity(p, r)), len(p), len(r))


def rouge_l_many(
    prediction: str, references: Sequence[str], stem: bool = False, workers: int = 1
) -> np.ndarray:
    """Rouge-L F of one prediction against each reference (one-against-many form)."""
    codes = _codes(stem)
    q = codes.encode(prediction)
    refs = [codes.encode(r) for r in references]
    return _scores_encoded(q, refs, workers)


def _lcs_row(q: str, pool: Sequence[str], workers: int = 1) -> np.ndarray:
    if len(pool) <= 32:  # cdist's own overhead is larger
        sim = LCSseq.similarity
        return np.array([sim(q, s) for s in pool], dtype=np.int64)
    return cdist([q], pool, scorer=LCSseq.similarity, dtype=np.int32, workers=workers)[0]


def _scores_encoded(q: str, pool: Sequence[str], workers: int = 1) -> np.ndarray:
    lcs = _lcs_row(q, pool, workers)
    lens = np.fromiter((len(s) for s in pool), dtype=np.int64, count=len(pool))
    return _f_measure_array(lcs, len(q), lens)


def _pairwise_encoded(enc: Sequence[str]) -> np.ndarray:
    """The all-pairs F matrix of encoded texts (each LCS once; F is symmetric)."""
    n = len(enc)
    if n > 12:
        lens = np.array([len(e) for e in enc], dtype=np.int64)
        lcs = cdist(enc, enc, scorer=LCSseq.similarity, dtype=np.int32)
        return _f_measure_array(lcs, lens[:, None], lens[None, :])
    sim = LCSseq.similarity
    rows = [[0.0] * n for _ in range(n)]
    for i, a in enumerate(enc):
        if not a:
            continue
        row = rows[i]
        row[i] = 1.0
        la = len(a)
        for j in range(i + 1, n):
            b = enc[j]
            if b:
                lcs = sim(a, b)
                if lcs:
                    p = lcs / la
                    r = lcs / len(b)
                    row[j] = rows[j][i] = 2 * p * r / (p + r)
    return np.array(rows, dtype=np.float64).reshape(n, n)


def pairwise_rouge_l(texts: Sequence[str], stem: bool = True) -> np.ndarray:
    """N x N matrix M with M[i, j] = rouge_l(texts[i], texts[j], stem) (all-pairs form).

    Each LCS is computed once (it is symmetric, and so is F: 2PR/(P+R) with P and R swapped
    rounds the same). The diagonal is each text against itself (1.0, or 0.0 for a text with no
    tokens).
    """
    codes = _codes(stem)
    return _pairwise_encoded([codes.encode(t) for t in texts])


def pairwise_rouge_l_batch(groups: Iterable[Sequence[str]], stem: bool = True) -> list[np.ndarray]:
    """`pairwise_rouge_l` of every group, tokenizing each distinct text and scoring each
    distinct pair of texts once across all groups (e.g. every ordered member list of an ablation
    grid over the same examples).

    Returns:
        One N x N matrix per group, in order; equal to ``[pairwise_rouge_l(g, stem) for g in
        groups]``.
    """
    codes = _codes(stem)
    encoded: dict[str, str] = {}
    pair_f: dict[tuple[str, str], float] = {}
    sim = LCSseq.similarity
    out = []
    for group in groups:
        enc = []
        for t in group:
            e = encoded.get(t)
            if e is None:
                e = encoded[t] = codes.encode(t)
            enc.append(e)
        n = len(enc)
        rows = [[0.0] * n for _ in range(n)]
        for i, a in enumerate(enc):
            if not a:
                continue
            row = rows[i]
            row[i] = 1.0
            for j in range(i + 1, n):
                b = enc[j]
                if not b:
                    continue
                key = (a, b) if a <= b else (b, a)
                f = pair_f.get(key)
                if f is None:
                    lcs = sim(a, b)
                    if lcs:
                        p = lcs / len(a)
                        r = lcs / len(b)
                        f = 2 * p * r / (p + r)
                    else:
                        f = 0.0
                    pair_f[key] = f
                row[j] = rows[j][i] = f
        out.append(np.array(rows, dtype=np.float64).reshape(n, n))
    return out


def rouge_l_pairs(
    predictions: Sequence[str], references: Sequence[str], stem: bool = False
) -> np.ndarray:
    """Rouge-L F of predictions[i] against references[i] for every i (paired form)."""
    if len(predictions) != len(references):
        raise ValueError("predictions and references must have the same length")
    codes = _codes(stem)
    p = [codes.encode(t) for t in predictions]
    r = [codes.encode(t) for t in references]
    lcs = np.fromiter(
        (LCSseq.similarity(a, b) for a, b in zip(p, r, strict=True)), dtype=np.int64, count=len(p)
    )
    return _f_measure_array(lcs, [len(a) for a in p], [len(b) for b in r])
