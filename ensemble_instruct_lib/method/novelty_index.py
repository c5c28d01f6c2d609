"""`NoveltyIndex`: exact Rouge-L F of a new text against a growing pool of 50k texts, fast.

Implements METHOD.md stage 1's novelty check (reject an instruction whose best Rouge-L F against
the pool is > 0.7) and the top-k most similar texts each accepted one is recorded with. Scores are
those of method/rouge.py (same tokens, same F), so every decision equals a brute-force
`rouge_l_many` over the pool.

The index is an inverted index over token occurrences ("the 2nd 'a'" is its own key, so
shared keys count the token-multiset overlap, an upper bound on the LCS). A query reads its keys
from the rarest: a pool text sharing none of the first m keys has LCS <= len(query) - m, so once
that bound is below the threshold (or the k-th best score known) the common keys need not be read
at all, and only the texts found whose bound can still reach it get an exact LCS. The top-k part
runs compiled (`_walk_kernel`, numba). Decisions, maxima and top-k lists are exact (ties broken by
insertion order). `NoveltyIndex.add_novel` grows a pool from many texts with the answers of
checking and adding them one at a time, a block at a time.

Its length (over 600 lines) is one class whose parts share private state: the pruning bounds, the
prefix postings per threshold, the walk for top-k lists and the block-wise growth.

Not included: deleting texts from the pool (it only grows).
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from itertools import islice
from typing import NamedTuple

import numpy as np
from rapidfuzz.distance import LCSseq
from rapidfuzz.process import cdist

from .rouge import Vocab, _Codes, _f_measure_array, _lcs_row

_NO_IDS = np.zeros(0, dtype=np.int64)
_EPS = 1e-9  # slack on every pruning bound: float F may exceed the exact rational by a few ulps


def _keys(enc: str) -> list[str]:
    """The occurrence keys of an encoded text: token c once as "c", its 2nd occurrence as "cc",
    ... Two texts share min(count_a, count_b) keys per token: their multiset overlap."""
    if len(set(enc)) == len(enc):  # no repeated token (most texts): the tokens themselves
        return list(enc)
    out = []
    for c, n in Counter(enc).items():
        out.append(c)
        if n > 1:
            out.extend(c * j for j in range(2, n + 1))
    return out


def _unseen_keys_for(tau: float, lq: int) -> int:
    """Largest r such that a text sharing at most r of the query's lq keys scores below `tau`
    for sure: max over its length lp of 2 min(r, lp) / (lq + lp) is 2r / (lq + r) < tau - eps.
    """
    t = tau - _EPS
    if t <= 0:
        return -1
    if t >= 1:
        return lq
    r = min(lq, int(t * lq / (2 - t)) + 1)
    while r >= 0 and 2 * r / (lq + r) >= t:
        r -= 1
    return r


@lru_cache(maxsize=65536)
def _prefix_len(tau: float, n: int) -> int:
    """How many of a text's n keys (in the global order) its prefix for level `tau` holds: two
    texts scoring >= tau - eps share more than `_unseen_keys_for(tau, n)` keys, so (prefix
    filtering) their prefixes of these lengths share a key."""
    return n - max(_unseen_keys_for(tau, n), 0) if n else 0


_POS_BITS = 20  # a prefix posting is (text index << 20) | min(position in the text's order, mask)
_POS_MASK = (1 << _POS_BITS) - 1
_UNSEEN = -(1 << 62)  # rank of a key no pool text has: first in any order
_MAX_LEVELS = 8


class Match(NamedTuple):
    """`NoveltyIndex.match`'s answer for one query.

    Attributes:
        exceeds: whether some pool text scores > the threshold.
        max_score: the highest score against the pool (0.0 when nothing is shared).
        indices, scores: the k most similar pool texts (score > 0), best first, ties by insertion
            order; empty when `exceeds` (a rejected text needs no list).
    """

    exceeds: bool
    max_score: float
    indices: np.ndarray
    scores: np.ndarray


def _code_points(enc: str) -> np.ndarray:
    """An encoded text's token codes (its characters' code points)."""
    return np.frombuffer(enc.encode("utf-32-le"), dtype=np.int32)


def _kth(sc: np.ndarray, k: int) -> float:
    """The k-th largest of `sc` (0.0 when it has fewer than k)."""
    if len(sc) < k:
        return 0.0
    return float(np.partition(sc, len(sc) - k)[len(sc) - k])


def _count_ids(chunks: list[array], n: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ids of posting lists `chunks` (ids below n), ascending, and how many of
    the lists hold each."""
    ids = np.frombuffer(b"".join(chunks), dtype=np.intc)  # a copy, not a view
    if len(ids) * 2 > n:  # counting beats sorting when the ids are dense
        counts = np.bincount(ids, minlength=n)
        cand = np.flatnonzero(counts)
        return cand, counts[cand]
    ids = np.sort(ids)
    edge = np.empty(len(ids) + 1, dtype=bool)
    edge[0] = edge[-1] = True
    np.not_equal(ids[1:], ids[:-1], out=edge[1:-1])
    starts = np.flatnonzero(edge)
    return ids[starts[:-1]], np.diff(starts)


class _Rank(dict):
    """key -> its place in the global key order; a key no pool text has comes first."""

    def __missing__(self, key: str) -> int:
        return _UNSEEN


class NoveltyIndex:
    """A growing pool of texts, scored against a new text with exact Rouge-L F.

    Args:
        stem: Porter-stem tokens (METHOD.md's novelty filter uses no stemming).
        workers: threads for rapidfuzz's batch LCS (-1 = all cores).

    `scores(text)` gives every exact score. `match` and `exceeds` use prefix filtering (see
    `_prefix_len`) with a positional bound: keys are ordered globally (rarest first, by pool
    frequency at the last re-ranking, keys new since then first of all), each pool text posts
    only the prefix of its ordered keys for a level tau, so a query reads a few short posting
    lists; the first shared key, at position i of the query and j of the pool text, bounds the
    overlap (hence the LCS) by min(lq - i, lp - j). Only texts whose bound reaches the threshold
    get an exact LCS. The k most similar of a text that does not exceed the threshold come from
    the walk of the full inverted index (`_walk`), started with the decision's scores: their k-th
    best tells it how few keys it must read. `add_novel`
    and `add_novel_decisions` grow the pool from many texts a block at a time. `stats` counts
    pairs considered and pairs whose LCS was computed. Decisions, maxima and top-k lists are
    exact (ties broken by insertion order).
    """

    def __init__(self, stem: bool = False, workers: int = 1) -> None:
        self.stem = stem
        self.workers = workers
        self._vocab = Vocab()
        self._codes = _Codes(self._vocab, stem)
        self._texts: list[str] = []
        self._enc: list[str] = []
        self._keys: list[list[str]] = []
        self._lens = np.zeros(1024, dtype=np.int64)
        self._mark = np.zeros(1024, dtype=bool)
        self._enc_arr = np.empty(1024, dtype=object)  # _enc as an array, for fancy indexing
        self._cnt = np.zeros(1024, dtype=np.int32)  # the compiled walk's zeroed work array
        self._tok = np.zeros(16384, dtype=np.int32)  # every text's token codes, end to end
        self._off = np.zeros(1025, dtype=np.int64)  # text i is _tok[_off[i]:_off[i + 1]]
        self._pm = np.zeros(0, dtype=np.uint64)  # token code -> bit vector, zeroed between walks
        self._post: dict[str, array] = {}
        self._rank = _Rank()  # the global key order (smaller = earlier = rarer)
        self._new_rank = -1
        self._levels: dict[float, dict[str, array]] = {}  # tau -> prefix postings
        self._rerank_at = 0
        self.stats = {"pairs": 0, "exact": 0}

    def __len__(self) -> int:
        return len(self._enc)

    @property
    def texts(self) -> list[str]:
        return self._texts

    def add(self, text: str) -> int:
        """Add a text to the pool; returns its index."""
        return self._append(text, self._codes.encode(text))

    def _append(self, text: str, enc: str, keys: list[str] | None = None) -> int:
        i = len(self._enc)
        self._texts.append(text)
        self._enc.append(enc)
        if i == len(self._lens):
            self._lens = np.resize(self._lens, 2 * i)
            self._mark = np.zeros(2 * i, dtype=bool)
            self._cnt = np.zeros(2 * i, dtype=np.int32)
            self._enc_arr = np.resize(self._enc_arr, 2 * i)
            self._off = np.resize(self._off, 2 * i + 1)
        self._lens[i] = len(enc)
        self._enc_arr[i] = enc
        a = self._off[i]
        b = self._off[i + 1] = a + len(enc)
        if b > len(self._tok):
            self._tok = np.resize(self._tok, 2 * b)
        self._tok[a:b] = _code_points(enc)
        keys = _keys(enc) if keys is None else keys
        self._keys.append(keys)
        posts = self._post
        rank = self._rank
        for k in keys:
            p = posts.get(k)
            if p is None:
                p = posts[k] = array("i")
                rank[k] = self._new_rank  # new keys are rarest until the next re-ranking
                self._new_rank -= 1
            p.append(i)
        if self._levels:
            if i + 1 >= self._rerank_at:
                self._rerank()
            else:
                self._post_prefixes(i, self._levels)
        return i

    def extend(self, texts: Iterable[str]) -> None:
        for t in texts:
            self.add(t)

    # -- prefix filtering -------------------------------------------------------------------

    def _post_prefixes(self, i: int, levels: dict[float, dict[str, array]]) -> None:
        """Post text i's prefix keys, with their positions, in each level of `levels`."""
        ordered = sorted(self._keys[i], key=self._rank.__getitem__)
        n = len(ordered)
        base = i << _POS_BITS
        for tau, post in levels.items():
            for j in range(_prefix_len(tau, n)):
                k = ordered[j]
                p = post.get(k)
                if p is None:
                    p = post[k] = array("q")
                p.append(base | min(j, _POS_MASK))

    def _rerank(self) -> None:
        """Order keys by their pool frequency (rarest first, ties by key) and re-post every
        prefix; done when the pool has doubled since the last time, so the order stays close to
        the frequencies while the total work stays linear in the pool."""
        ordered = sorted(self._post, key=lambda k: (len(self._post[k]), k))
        self._rank = _Rank(zip(ordered, range(len(ordered)), strict=True))
        self._new_rank = -1
        for tau in self._levels:
            self._levels[tau] = {}
        for i in range(len(self._enc)):
            self._post_prefixes(i, self._levels)
        self._rerank_at = max(2 * len(self._enc), 512)

    def _level(self, tau: float) -> dict[str, array]:
        """The prefix postings for level `tau`, built on first use."""
        post = self._levels.get(tau)
        if post is None:
            if len(self._levels) >= _MAX_LEVELS:  # forget the oldest level
                del self._levels[next(iter(self._levels))]
            post = self._levels[tau] = {}
            if len(self._levels) == 1:  # ranks change only here and in `add`, never mid-query
                self._rerank()
            else:
                for i in range(len(self._enc)):
                    self._post_prefixes(i, {tau: post})
        return self._levels[tau]

    def _order(self, q: str, keys: list[str] | None = None) -> list[str]:
        """The query's keys (`keys`, when known) in the global order (keys no pool text has
        first)."""
        return sorted(_keys(q) if keys is None else keys, key=self._rank.__getitem__)

    def _candidates(
        self, ordered: list[str], tau: float, floor: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pool texts that can score >= max(tau, floor) - eps against the query whose ordered
        keys are `ordered`, with their bounds, highest bound first (ties by index); see
        `_level_pairs`."""
        _, ids, bound = self._level_pairs(
            [ordered], np.array([len(ordered)]), np.zeros(1, dtype=np.int64), tau, floor
        )
        order = np.argsort(-bound, kind="stable")
        return ids[order], bound[order]

    def _exact(self, q: str, ids: np.ndarray) -> np.ndarray:
        """Exact F of query q (prediction) against pool texts `ids` (each shares a key with q, so
        LCS >= 1); the same float operations as `_f_measure`."""
        lcs = self._lcs_many(q, ids)
        self.stats["exact"] += len(ids)
        p = lcs / len(q)
        r = lcs / self._lens[ids]
        return 2 * p * r / (p + r)

    def _match_prefix(self, q: str, threshold: float, k: int, decide_only: bool) -> Match:
        """`match` (k >= 1): the decision by prefix filtering, then the k best by the walk."""
        self._level(threshold)  # first, as building the first level re-ranks the keys
        ordered = self._order(q)
        ids, bound = self._candidates(ordered, threshold, threshold)
        # the decision: every text scoring > threshold is among ids
        if len(ids) > 96:
            first = self._exact(q, ids[:64])
            if (first > threshold).any():
                if decide_only:
                    return Match(True, 0.0, _NO_IDS, np.zeros(0))
                best = float(first.max())
                rest = ids[64:][bound[64:] >= best - _EPS]
                sc = np.concatenate((first, self._exact(q, rest)))
                return Match(True, float(sc.max()), _NO_IDS, np.zeros(0))
            sc = np.concatenate((first, self._exact(q, ids[64:])))
        else:
            sc = self._exact(q, ids)
        if (sc > threshold).any():
            return Match(True, float(sc.max()), _NO_IDS, np.zeros(0))
        if decide_only:
            return Match(False, 0.0, _NO_IDS, np.zeros(0))
        # the top k: the walk of the full index, which the decision's scores start with
        idx, sc = self._walk(q, ids, sc, k)
        return Match(False, float(sc[0]) if len(sc) else 0.0, idx, sc)

    def _postings(self, keys: list[str]) -> list[array]:
        """The posting lists of those of `keys` that some pool text holds."""
        return [p for p in map(self._post.get, keys) if p is not None]

    def _walk(
        self, q: str, ids: np.ndarray, sc: np.ndarray, k: int, keys: list[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k best (index, score) of encoded query q, given the exact scores `sc` of pool
        texts `ids` already known (each sharing a key with q, each once): their k-th best tells
        how many of q's keys, rarest first, must be read; the texts holding them get a bound from
        how many they hold, and `_walk_kernel.walk_scores` scores them from the highest bound
        down while it can still reach the k-th best so far."""
        lq = len(q)
        present = self._postings(_keys(q) if keys is None else keys)
        present.sort(key=len)
        missing = lq - len(present)
        # no k-th best yet (fewer than k known): every key is read, and the bounds are exact
        # overlaps, so the first texts scored give one
        m = lq if len(sc) < k else min(max(lq - _unseen_keys_for(_kth(sc, k), lq), missing), lq)
        if m > missing:
            codes = _code_points(q)
            size = len(self._vocab) + 0x801  # above every code the vocabulary has given
            if len(self._pm) < size:
                self._pm = np.zeros(2 * size, dtype=np.uint64)
            from ensemble_instruct_lib.method import _walk_kernel  # numba: imported on first use

            top, top_sc, n_scored = _walk_kernel.walk_scores(
                np.frombuffer(b"".join(present[: m - missing]), dtype=np.intc),
                self._cnt,
                self._mark,
                self._pm,
                np.asarray(ids, dtype=np.int64),
                sc,
                self._lens,
                self._tok,
                self._off,
                codes,
                lq - m,
                k,
                _EPS,
            )
            self.stats["exact"] += n_scored
            return top, top_sc
        sel = np.lexsort((ids, -sc))[:k]
        return ids[sel].astype(np.int64), sc[sel]

    def scores(self, text: str) -> np.ndarray:
        """Exact Rouge-L F of `text` (as prediction) against every pool text, in insertion order.

        Pairs sharing at most one token need no LCS: it equals their overlap (0 or 1).
        """
        q = self._codes.encode(text)
        n = len(self._enc)
        self.stats["pairs"] += n
        if not q or n == 0:
            return np.zeros(n)
        lcs = np.zeros(n, dtype=np.int64)
        present = self._postings(_keys(q))
        if present:
            cand, cnt = _count_ids(present, n)
            lcs[cand] = cnt
            need = cand[cnt >= 2]
            if need.size:
                lcs[need] = self._lcs_many(q, need)
            self.stats["exact"] += int(need.size)
        return _f_measure_array(lcs, len(q), self._lens[:n])

    def match(self, text: str, threshold: float, k: int = 10) -> Match:
        """Exactly: does any pool text score > `threshold`; the best score; and the k most
        similar pool texts (score > 0; best first, ties by insertion order), unless the threshold
        is exceeded (a rejected text needs no list)."""
        if threshold < _EPS:  # a text sharing nothing can exceed it: score every pair
            sc = self.scores(text)
            exceeds = bool((sc > threshold).any())
            order = np.lexsort((np.arange(len(sc)), -sc))
            order = order[sc[order] > 0][: 0 if exceeds else max(k, 0)]
            return Match(exceeds, float(sc.max()) if len(sc) else 0.0, order, sc[order])
        q = self._codes.encode(text)
        if not q or not self._enc:
            return Match(False, 0.0, _NO_IDS, np.zeros(0))
        self.stats["pairs"] += len(self._enc)
        m = self._match_prefix(q, threshold, max(k, 1), False)
        if m.exceeds or k >= len(m.indices):
            return m
        return Match(False, m.max_score, m.indices[: max(k, 0)], m.scores[: max(k, 0)])

    def top_k(self, text: str, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The k pool texts most similar to `text`, exactly scored, best first.

        Returns:
            (indices, scores); ties are broken by insertion order. Fewer than k when the pool is
            smaller or other texts share no token with `text`.
        """
        q = self._codes.encode(text)
        if not q or not self._enc or k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        self.stats["pairs"] += len(self._enc)
        return self._walk(q, _NO_IDS, np.zeros(0), k)

    def max_score(self, text: str) -> float:
        """The highest exact Rouge-L F of `text` against the pool (0.0 for an empty pool)."""
        _, sc = self.top_k(text, 1)
        return float(sc[0]) if len(sc) else 0.0

    def exceeds(self, text: str, threshold: float) -> bool:
        """Exactly whether any pool text scores > `threshold` (no maximum, no list)."""
        if threshold < _EPS:
            return bool((self.scores(text) > threshold).any())
        q = self._codes.encode(text)
        if not q or not self._enc:
            return False
        self.stats["pairs"] += len(self._enc)
        return self._match_prefix(q, threshold, 1, True).exceeds

    # -- many texts at once ------------------------------------------------------------------

    def add_novel(
        self, texts: Iterable[str], threshold: float, k: int = 10, block: int = 256
    ) -> list[Match]:
        """Grow the pool with the texts that are novel: for each text in order, `match(text,
        threshold, k)` against the pool as it stands at that point, then `add(text)` unless it
        exceeds the threshold. Gives the same answers and leaves the same pool as that loop.

        Works a block of texts at a time, so numpy and rapidfuzz calls serve many texts: the
        pool as it was before the block is searched for all of them together (the threshold's
        prefix postings in one numpy pass, one `cdist` call per text for the pairs whose bound
        survives), the texts of the block are scored against each other with one `cdist`, the
        decisions then follow in order, and each accepted text's list comes from the walk
        (`match`'s), merged with the block's earlier texts. Returns one `Match` per text.
        """
        out: list[Match] = []
        for chunk in _chunks(texts, block):
            out.extend(self._grow_block(chunk, threshold, max(k, 0)))
        return out

    def add_novel_decisions(
        self, texts: Iterable[str], threshold: float, block: int = 256
    ) -> np.ndarray:
        """`add_novel` without the maxima and lists: True where the text was added (the same
        decisions as `exceeds(text, threshold)`, then `add`, for each text in order)."""
        out: list[bool] = []
        for chunk in _chunks(texts, block):
            out.extend(not m.exceeds for m in self._grow_block(chunk, threshold, None))
        return np.array(out, dtype=bool)

    def _grow_block(self, texts: list[str], threshold: float, k: int | None) -> list[Match]:
        """`add_novel` for one block (k None: decisions only, maxima and lists left empty)."""
        if threshold < _EPS:  # every pair counts: no bound helps, go one text at a time
            out = []
            for t in texts:
                m = self.match(t, threshold, 1 if k is None else k)
                if not m.exceeds:
                    self.add(t)
                out.append(m)
            return out
        n0 = len(self._enc)
        enc = [self._codes.encode(t) for t in texts]
        keys = [_keys(e) for e in enc]
        qlen = np.array([len(e) for e in enc], dtype=np.int64)
        nb = len(enc)
        self.stats["pairs"] += n0 * nb + nb * (nb - 1) // 2
        qi, ids, f = _NO_IDS, _NO_IDS, np.zeros(0)
        orders: list[list[str]] = []
        if n0:
            self._level(threshold)  # first, as building the first level re-ranks the keys
            orders = [self._order(e, ks) for e, ks in zip(enc, keys, strict=True)]
            qi, ids, _ = self._level_pairs(orders, qlen, np.arange(nb), threshold, threshold)
            f = self._pair_scores(enc, qi, ids)
        pool_ex = np.zeros(nb, dtype=bool)
        pool_ex[qi[f > threshold]] = True
        pool_max = np.zeros(nb)
        if k is not None and len(f):
            np.maximum.at(pool_max, qi, f)
        # the block against itself: rows = every text (only those that can still be accepted
        # when only decisions are wanted), columns = the texts the pool did not reject
        live = np.flatnonzero(~pool_ex)
        rows = np.arange(nb) if k is not None else live
        lcs = cdist(
            [enc[i] for i in rows.tolist()],
            [enc[i] for i in live.tolist()],
            scorer=LCSseq.similarity,
            dtype=np.int32,
            workers=self.workers,
        )
        inner = _f_measure_array(lcs, qlen[rows][:, None], qlen[live][None, :])
        row_of = np.full(nb, -1)
        row_of[rows] = np.arange(len(rows))
        col_of = np.full(nb, -1)
        col_of[live] = np.arange(len(live))
        # the decisions, in order
        accepted: list[int] = []
        acc_cols: list[int] = []
        exceeds = pool_ex.copy()
        best = pool_max.copy()
        # rows with a score > threshold against an earlier text of the block
        hot = ((inner > threshold) & (live[None, :] < rows[:, None])).any(axis=1)
        for j in range(nb):
            r = row_of[j]
            if r >= 0 and acc_cols and (k is not None or hot[r]):
                before = inner[r, acc_cols]
                if k is not None:
                    best[j] = max(best[j], float(before.max()))
                if not exceeds[j] and (before > threshold).any():
                    exceeds[j] = True
            if not exceeds[j]:
                accepted.append(j)
                acc_cols.append(int(col_of[j]))
        if k is None:
            out = [Match(bool(x), 0.0, _NO_IDS, np.zeros(0)) for x in exceeds]
        else:
            pool = self._pool_lists(enc, keys, accepted, (qi, ids, f), k, n0)
            rank = {j: a for a, j in enumerate(accepted)}
            out = []
            for j in range(nb):
                if exceeds[j]:
                    out.append(Match(True, float(best[j]), _NO_IDS, np.zeros(0)))
                    continue
                idx, sc = pool[j]
                a = rank[j]  # the block's texts accepted before j follow the pool
                if a:
                    s_in = inner[row_of[j], col_of[accepted[:a]]]
                    keep = s_in > (sc[-1] if len(sc) >= max(k, 1) else 0.0)
                    if keep.any():
                        idx = np.concatenate((idx, n0 + np.flatnonzero(keep)))
                        sc = np.concatenate((sc, s_in[keep]))
                        sel = np.lexsort((idx, -sc))[: max(k, 1)]
                        idx, sc = idx[sel], sc[sel]
                out.append(Match(False, float(sc[0]) if len(sc) else 0.0, idx[:k], sc[:k]))
        for j in accepted:
            self._append(texts[j], enc[j], keys[j])
        return out

    def _level_pairs(
        self,
        orders: list[list[str]],
        qlen: np.ndarray,
        qs: np.ndarray,
        tau: float,
        floor: float | np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The (query, pool text) pairs of queries `qs` (positions in `orders`, each query's keys
        in the global order; lengths `qlen`) that can score >= max(tau, floor) - eps, with
        their bounds; sorted by query, then pool index. `floor`: one value, or one per query.

        Level tau's prefixes find every pair scoring >= tau - eps; the first shared key (query
        position i, text position j) bounds the LCS by min(lq - i, lp - j): no key before it in
        the order is shared, since it would lie in both prefixes too.
        """
        post = self._level(tau)
        chunks, cq, cpos = [], [], []
        for q in qs.tolist():
            o = orders[q]
            for i in range(_prefix_len(tau, len(o))):
                p = post.get(o[i])
                if p is not None:
                    chunks.append(p)
                    cq.append(q)
                    cpos.append(i)
        if not chunks:
            return _NO_IDS, _NO_IDS, np.zeros(0)
        sizes = [len(c) for c in chunks]
        e = np.frombuffer(b"".join(chunks), dtype=np.int64)  # a copy: no view on the postings
        qp = np.repeat((np.array(cq, dtype=np.int64) << _POS_BITS) | cpos, sizes)
        ids = e >> _POS_BITS
        lp = self._lens[ids]
        pp = e & _POS_MASK
        qi = qp >> _POS_BITS
        lq = qlen[qi]
        bound = 2.0 * np.minimum(lq - (qp & _POS_MASK), lp - pp) / (lq + lp)
        low = np.maximum(floor[qi], tau) if isinstance(floor, np.ndarray) else max(floor, tau)
        keep = np.flatnonzero(bound >= low - _EPS)
        # the first entry of a pair (its first shared key) has the largest bound; the stable
        # sort of np.unique keeps entries in reading order
        key, first = np.unique((qi[keep] << 32) | ids[keep], return_index=True)
        return key >> 32, key & 0xFFFFFFFF, bound[keep[first]]

    def _lcs_many(self, q: str, ids: np.ndarray) -> np.ndarray:
        """LCS of encoded query q with each pool text `ids`."""
        return _lcs_row(q, self._enc_arr[ids], self.workers)

    def _pair_scores(self, enc: list[str], qi: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Exact F of block queries qi (prediction; sorted) against pool texts ids, pair by pair
        (each pair shares a key): `_exact` once per query."""
        n = len(ids)
        f = np.zeros(n)
        cut = (np.flatnonzero(np.diff(qi)) + 1).tolist()
        for a, b in zip([0, *cut], [*cut, n], strict=True):
            if b > a:
                f[a:b] = self._exact(enc[qi[a]], ids[a:b])
        return f

    def _pool_lists(
        self,
        enc: list[str],
        keys: list[list[str]],
        accepted: list[int],
        pairs: tuple[np.ndarray, np.ndarray, np.ndarray],
        k: int,
        n0: int,
    ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """The k most similar texts of the pool as it was before the block (k >= 1), for the
        block's accepted texts (encoded `enc`, with their `keys`): the walk of each, started with
        the decision's scored `pairs` (sorted by query)."""
        k = max(k, 1)
        if n0 == 0 or not accepted:
            return dict.fromkeys(accepted, (_NO_IDS, np.zeros(0)))
        qi, ids, f = pairs
        acc = np.array(accepted, dtype=np.int64)
        starts = np.searchsorted(qi, acc, "left").tolist()
        ends = np.searchsorted(qi, acc, "right").tolist()
        return {
            j: self._walk(enc[j], ids[a:b], f[a:b], k, keys[j])
            for j, a, b in zip(accepted, starts, ends, strict=True)
        }


def _chunks(texts: Iterable[str], size: int) -> Iterable[list[str]]:
    """`texts` in lists of `size` (the last one shorter)."""
    it = iter(texts)
    while chunk := list(islice(it, max(size, 1))):
        yield chunk
