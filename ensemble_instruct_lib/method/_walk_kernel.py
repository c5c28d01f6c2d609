"""Compiled (numba) inner loop of `NoveltyIndex`'s top-k walk: counting the keys a query shares
with each pool text, bounding each text's Rouge-L F, and exact bit-parallel LCS scoring of the
texts whose bound can still reach the k-th best score, highest bound first.

Every score it returns is computed with the float operations of `rouge._f_measure`, in the same
order, from an exact LCS length, so it equals rouge-score's F bit for bit.

numba's own sorts take seconds each to compile, so the few orderings needed here are written out
(a heap, insertion sorts on short arrays); compiling the module takes a few seconds once, and
`cache=True` keeps the machine code beside the module (or in numba's user cache) for later runs.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_WORD = 64


@njit(cache=True, nogil=True)
def _lcs_word(pm: np.ndarray, tok: np.ndarray, a: int, b: int) -> int:
    """LCS length of a query of at most 64 tokens (`pm[c]` = the bit vector of the positions of
    token c in it) and tok[a:b]: V <- (V + (V & M)) | (V - (V & M)), then the zero bits of V."""
    v = np.uint64(0xFFFFFFFFFFFFFFFF)
    for j in range(a, b):
        u = v & pm[tok[j]]
        v = (v + u) | (v - u)
    ones = 0
    while v:
        v &= v - np.uint64(1)
        ones += 1
    return _WORD - ones


@njit(cache=True, nogil=True)
def _find(sorted_tokens: np.ndarray, c: int) -> int:
    """Position of c in an ascending array, or -1."""
    lo, hi = 0, len(sorted_tokens)
    while lo < hi:
        mid = (lo + hi) >> 1
        if sorted_tokens[mid] < c:
            lo = mid + 1
        else:
            hi = mid
    if lo < len(sorted_tokens) and sorted_tokens[lo] == c:
        return lo
    return -1


@njit(cache=True, nogil=True)
def _lcs(qtok: np.ndarray, qmask: np.ndarray, tok: np.ndarray, a: int, b: int) -> int:
    """LCS length of a query of any length (distinct tokens `qtok`, ascending; `qmask[i]` =
    the bit vector of the positions of qtok[i] in it, in 64-bit words) and tok[a:b]: the same
    recurrence as `_lcs_word`, with the carry of V + (V & M) passed from word to word."""
    words = qmask.shape[1]
    v = np.full(words, np.uint64(0xFFFFFFFFFFFFFFFF))
    for j in range(a, b):
        i = _find(qtok, tok[j])
        if i < 0:
            continue  # V & M = 0: V stays
        carry = np.uint64(0)
        for w in range(words):
            x = v[w]
            u = x & qmask[i, w]
            s = x + u
            c1 = np.uint64(1) if s < x else np.uint64(0)
            s2 = s + carry
            c2 = np.uint64(1) if s2 < s else np.uint64(0)
            carry = c1 | c2
            v[w] = s2 | (x - u)
    ones = 0
    for w in range(words):
        x = v[w]
        while x:
            x &= x - np.uint64(1)
            ones += 1
    return words * _WORD - ones


@njit(cache=True, nogil=True)
def _query_masks(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The query's distinct tokens, ascending, and the bit vectors of their positions."""
    lq = len(q)
    qs = q.copy()
    for i in range(1, lq):  # insertion sort, then drop repeats
        c = qs[i]
        j = i - 1
        while j >= 0 and qs[j] > c:
            qs[j + 1] = qs[j]
            j -= 1
        qs[j + 1] = c
    nu = 1 if lq else 0
    for i in range(1, lq):
        if qs[i] != qs[nu - 1]:
            qs[nu] = qs[i]
            nu += 1
    qtok = qs[:nu]
    qmask = np.zeros((nu, (lq + _WORD - 1) // _WORD), np.uint64)
    for i in range(lq):
        qmask[_find(qtok, q[i]), i // _WORD] |= np.uint64(1) << np.uint64(i % _WORD)
    return qtok, qmask


@njit(cache=True, nogil=True)
def _sift_down(heap: np.ndarray, key: np.ndarray, i: int, n: int) -> None:
    """Restore the max-heap order (by key[heap[.]]) below position i of heap[:n]."""
    while True:
        c = 2 * i + 1
        if c >= n:
            return
        if c + 1 < n and key[heap[c + 1]] > key[heap[c]]:
            c += 1
        if key[heap[c]] <= key[heap[i]]:
            return
        heap[i], heap[c] = heap[c], heap[i]
        i = c


@njit(cache=True, nogil=True)
def _insert_best(best: np.ndarray, f: float) -> None:
    """Put f among the k best (ascending) when it beats the lowest, dropping the lowest."""
    if f <= best[0]:
        return
    i = 1
    while i < len(best) and best[i] < f:
        best[i - 1] = best[i]
        i += 1
    best[i - 1] = f


@njit(cache=True, nogil=True)
def walk_scores(
    read: np.ndarray,
    cnt: np.ndarray,
    mark: np.ndarray,
    pm: np.ndarray,
    known: np.ndarray,
    known_sc: np.ndarray,
    lens: np.ndarray,
    tok: np.ndarray,
    off: np.ndarray,
    q: np.ndarray,
    unread: int,
    k: int,
    eps: float,
) -> tuple[np.ndarray, np.ndarray, int]:
    """The k pool texts most similar to query `q` (token codes), given the exact scores of
    `known` texts: (indices, F with q as prediction, how many texts it scored), best first, ties
    by index. The other texts are scored from the highest bound down while their bound reaches
    the k-th best so far.

    read: the pool ids of the query keys read (one entry per key a text holds); a text not in
        it shares at most `unread` keys with q, too few to reach the k-th best of `known_sc`.
    cnt, mark, pm: zeroed work arrays (pool size, pool size, above every token code), left
        zeroed.
    known, known_sc: texts already scored (at least k of them, each once) and their scores.
    lens, tok, off: pool text lengths and tokens (text i is tok[off[i]:off[i + 1]]).
    """
    lq = len(q)
    best = np.full(k, -1.0)  # the k best so far, ascending
    for f in known_sc:
        _insert_best(best, f)
    tau = best[0]
    # how many of the keys read each text holds
    touched = np.empty(len(read), np.int64)
    nt = 0
    for x in read:
        c = cnt[x]
        touched[nt] = x
        nt += c == 0
        cnt[x] = c + 1
    # the texts not known whose bound reaches the k-th best
    for x in known:
        mark[x] = True
    ids = np.empty(nt, np.int64)
    ub = np.empty(nt, np.float64)
    n = 0
    for t in range(nt):
        x = touched[t]
        lp = lens[x]
        o = cnt[x] + unread
        cnt[x] = 0
        if lp < o:
            o = lp
        b = 2.0 * o / (lq + lp)
        if b >= tau - eps and not mark[x]:
            ids[n] = x
            ub[n] = b
            n += 1
    for x in known:
        mark[x] = False
    # score them from the highest bound down (a max-heap of their positions)
    heap = np.arange(n)
    for i in range(n // 2 - 1, -1, -1):
        _sift_down(heap, ub, i, n)
    one_word = lq <= _WORD
    if one_word:
        for i in range(lq):
            pm[q[i]] |= np.uint64(1) << np.uint64(i)
        qtok, qmask = q[:0], np.zeros((0, 0), np.uint64)
    else:
        qtok, qmask = _query_masks(q)
    out_ids = np.empty(n, np.int64)
    out_sc = np.empty(n, np.float64)
    m = 0
    size = n
    while size > 0 and ub[heap[0]] >= tau - eps:
        t = heap[0]
        size -= 1
        heap[0] = heap[size]
        _sift_down(heap, ub, 0, size)
        x = ids[t]
        if one_word:
            lcs = _lcs_word(pm, tok, off[x], off[x + 1])
        else:
            lcs = _lcs(qtok, qmask, tok, off[x], off[x + 1])
        p = lcs / lq
        r = lcs / lens[x]
        f = 2 * p * r / (p + r)
        out_ids[m] = x
        out_sc[m] = f
        m += 1
        _insert_best(best, f)
        tau = best[0]
    if one_word:
        for i in range(lq):
            pm[q[i]] = 0
    # the k best of known and scored: those >= the k-th best, by (score desc, index asc)
    top_ids = np.empty(len(known) + m, np.int64)
    top_sc = np.empty(len(known) + m, np.float64)
    nb = 0
    for i in range(len(known) + m):
        f = known_sc[i] if i < len(known) else out_sc[i - len(known)]
        if f >= tau:
            top_ids[nb] = known[i] if i < len(known) else out_ids[i - len(known)]
            top_sc[nb] = f
            nb += 1
    for i in range(1, nb):  # insertion sort: nb is about k
        x, f = top_ids[i], top_sc[i]
        j = i - 1
        while j >= 0 and (top_sc[j] < f or (top_sc[j] == f and top_ids[j] > x)):
            top_ids[j + 1] = top_ids[j]
            top_sc[j + 1] = top_sc[j]
            j -= 1
        top_ids[j + 1] = x
        top_sc[j + 1] = f
    return top_ids[:k].copy(), top_sc[:k].copy(), m


def warm_up() -> None:
    """Compile the kernel (or load it from numba's cache) now, for the argument types
    `NoveltyIndex._walk` passes, rather than in the first walk (benchmarks time it apart)."""
    one = np.frombuffer(np.zeros(1, np.int32).tobytes(), dtype=np.int32)  # read-only, like _walk's
    walk_scores(
        one,
        np.zeros(1, np.int32),
        np.zeros(1, np.bool_),
        np.zeros(2, np.uint64),
        np.zeros(0, np.int64),
        np.zeros(0),
        np.ones(1, np.int64),
        np.ones(1, np.int32),
        np.array([0, 1], np.int64),
        np.frombuffer(np.ones(1, np.int32).tobytes(), dtype=np.int32),
        0,
        1,
        1e-9,
    )
