"""Output ensembling by greedy consensus (METHOD.md stage 4): the rule once, over score matrices.

Candidates are the instance generator's output first, then the extra LMs' outputs. Rules, in order:
normalize for comparison (lowercase, drop ASCII punctuation, collapse spaces); exact-match shortcut
(the first candidate equals any other -> keep it; else the first pair of equal extra outputs -> keep
the first of them); otherwise pairwise Rouge-L F with Porter stemming, drop the example when the
lowest pairwise score is <= the threshold, else keep the candidate with the largest sum of scores
against the others (`rule="sum"`, the reference code's rule and the default) or the first member of
the best-scoring pair (`rule="best_pair"`, the paper's wording). Ties go to the earlier candidate.
The text kept is the raw, un-normalized candidate; an empty choice drops the example.

`decide` is the one implementation of these rules: a pure function of the score matrix, the
exact-match relation and the empty mask, for one example or a batch (..., N, N). Everything else
calls it: `select_consensus` (one example from its strings), the ablation grids (sub-matrices of
the recorded data), the plots (stored matrices) and the selectors of `selectors.py`.

Deliberate detail: an empty normalized candidate never takes the exact-match shortcut (two empty
outputs are not agreement); it then scores 0 against every other and the example is dropped.
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .rouge import pairwise_rouge_l

RULES = ("sum", "best_pair")
REASONS = ("exact_match", "consensus", "below_threshold", "empty")
#: reason codes of `decide`, in `REASONS` order
EXACT, CONSENSUS, BELOW, EMPTY = range(4)
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    """Lowercase, remove ASCII punctuation, collapse whitespace (for comparison only)."""
    return " ".join(text.lower().translate(_PUNCT).split())


@dataclass
class ConsensusResult:
    """What `select_consensus` decided for one example.

    Attributes:
        index: position of the chosen candidate, or None when the example is dropped.
        output: the raw chosen candidate, or None.
        reason: "exact_match", "consensus", "below_threshold" or "empty".
        scores: N x N matrix, scores[i, j] = Rouge-L F (stemmed) of normalized candidate i against j.
        min_score: lowest off-diagonal score.
        sums: per candidate, the sum of its scores against the others.
        rule: the selection rule used.
        threshold: the threshold used.
    """

    index: int | None
    output: str | None
    reason: str
    scores: np.ndarray
    min_score: float
    sums: np.ndarray
    rule: str
    threshold: float

    @property
    def kept(self) -> bool:
        return self.index is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "output": self.output,
            "reason": self.reason,
            "scores": self.scores.tolist(),
            "min_score": self.min_score,
            "sums": self.sums.tolist(),
            "rule": self.rule,
            "threshold": self.threshold,
        }


def equal_matrix(norm: Sequence[str]) -> np.ndarray:
    """(N, N) bool: normalized candidates i and j are equal and not empty, i != j (the relation
    the exact-match shortcut reads; two empty outputs are not agreement)."""
    n = len(norm)
    arr = np.array(list(norm), dtype=object)
    filled = np.array([bool(t) for t in norm], dtype=bool)
    eq = (arr[:, None] == arr[None, :]) & filled[:, None] & ~np.eye(n, dtype=bool)
    return eq.astype(bool)


def empty_mask(candidates: Sequence[str | None]) -> np.ndarray:
    """(N,) bool: the raw candidate is empty after stripping (choosing it drops the example)."""
    return np.array([not ("" if c is None else str(c)).strip() for c in candidates], dtype=bool)


@dataclass(frozen=True)
class Decisions:
    """Stage-4 decisions of `decide`, as arrays over the batch axes (0-d for one example).

    Attributes:
        index: position of the kept candidate, -1 when the example is dropped.
        reason: code into `REASONS` (EXACT, CONSENSUS, BELOW, EMPTY).
        exact: position the exact-match shortcut picks, -1 when no two candidates are equal.
        pick: position the candidate scores pick (the rule's, or the `pick` given), before the
            shortcut, the threshold and the empty check.
        chosen: position picked past the agreement filter, before the empty check (-1 dropped).
        eligible: the example passes the agreement filter (an exact match, or min score > t).
        min_score: lowest off-diagonal score.
        sums: per candidate, the sum of its scores against the others (the sum rule's key).
    """

    index: np.ndarray
    reason: np.ndarray
    exact: np.ndarray
    pick: np.ndarray
    chosen: np.ndarray
    eligible: np.ndarray
    min_score: np.ndarray
    sums: np.ndarray


def rule_pick(scores: np.ndarray, rule: str = "sum") -> np.ndarray:
    """The candidate a rule picks from score matrices (..., N, N), first on ties.

    "sum": the largest sum of off-diagonal scores in its row. "best_pair": the first member of
    the first highest-scoring pair i < j (row-major order).
    """
    scores = np.asarray(scores, dtype=float)
    n = scores.shape[-1]
    if rule == "sum":
        return np.where(~np.eye(n, dtype=bool), scores, 0.0).sum(axis=-1).argmax(axis=-1)
    if rule == "best_pair":
        iu, ju = np.triu_indices(n, 1)
        return iu[scores[..., iu, ju].argmax(axis=-1)]
    raise ValueError(f"rule must be one of {RULES}, got {rule!r}")


def decide(
    scores: np.ndarray,
    equal: np.ndarray,
    empty: np.ndarray,
    threshold: float = 0.01,
    rule: str = "sum",
    *,
    pick: np.ndarray | None = None,
) -> Decisions:
    """The stage-4 rule, once: decisions from score matrices, for one example or a batch.

    Every stage-4 decision in the kit goes through here: `select_consensus` (the pipeline and
    the recorded ensembles), the ablation grids on sub-matrices of the recorded data, the plots'
    threshold curve from stored matrices, and the selectors of `selectors.py`.

    Args:
        scores: (..., N, N) agreement scores, scores[i, j] of candidate i against j (N >= 2).
        equal: (..., N, N) bool, `equal_matrix`: candidates i != j equal after normalization.
        empty: (..., N) bool, `empty_mask`: the raw candidate is empty.
        threshold: drop when the lowest off-diagonal score is <= this (no exact match);
            a negative threshold turns the agreement filter off.
        rule: "sum" or "best_pair" (`rule_pick`); ignored when `pick` is given.
        pick: (...,) a pick made elsewhere (a judge, a reward model): it replaces both the
            rule's pick and the exact-match candidate; the agreement filter still applies.

    Returns:
        `Decisions`. Order of the rules: exact-match shortcut (the first candidate equal to any
        other, else the first candidate equal to a later one), else the threshold on the lowest
        score, else the pick; a kept candidate that is empty drops the example ("empty").
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    scores = np.asarray(scores, dtype=float)
    n = scores.shape[-1]
    if n < 2 or scores.shape[-2] != n:
        raise ValueError(f"consensus needs (..., N, N) scores with N >= 2, got {scores.shape}")
    equal = np.asarray(equal, dtype=bool)
    empty = np.asarray(empty, dtype=bool)
    off = ~np.eye(n, dtype=bool)
    min_score = np.where(off, scores, np.inf).min(axis=(-2, -1))
    sums = np.where(off, scores, 0.0).sum(axis=-1)
    later = (equal & np.triu(np.ones((n, n), dtype=bool), 1)).any(axis=-1)
    exact = np.where(later.any(axis=-1), later.argmax(axis=-1), -1)
    pick_arr = rule_pick(scores, rule) if pick is None else np.asarray(pick, dtype=int)
    chosen_pick = np.where(exact >= 0, exact, pick_arr) if pick is None else pick_arr
    eligible = (exact >= 0) | (min_score > threshold)
    chosen = np.where(eligible, chosen_pick, -1)
    picked_empty = np.take_along_axis(empty, np.maximum(chosen, 0)[..., None].astype(int), axis=-1)[
        ..., 0
    ]
    is_empty = (chosen >= 0) & picked_empty
    reason = np.where(exact >= 0, EXACT, np.where(eligible, CONSENSUS, BELOW))
    reason = np.where(is_empty, EMPTY, reason)
    return Decisions(
        index=np.where(is_empty, -1, chosen),
        reason=reason,
        exact=exact,
        pick=pick_arr,
        chosen=chosen,
        eligible=eligible,
        min_score=min_score,
        sums=sums,
    )


def select_consensus(
    candidates: Sequence[str], threshold: float = 0.01, rule: str = "sum"
) -> ConsensusResult:
    """Pick the consensus output among N >= 2 candidates (the first is the stage-2 output).

    Args:
        candidates: raw outputs; None counts as "".
        threshold: drop the example when the lowest pairwise Rouge-L is <= this.
        rule: "sum" (largest sum of Rouge-L against the others) or "best_pair" (first member of
            the highest-scoring pair).

    Returns:
        A `ConsensusResult` (the decision is `decide` on the stemmed Rouge-L matrix).
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if len(candidates) < 2:
        raise ValueError(f"consensus needs at least 2 candidates, got {len(candidates)}")
    raw = ["" if c is None else str(c) for c in candidates]
    norm = [normalize(c) for c in raw]
    scores = pairwise_rouge_l(norm, stem=True)
    return result_from(
        raw,
        scores,
        decide(scores, equal_matrix(norm), empty_mask(raw), threshold, rule),
        rule,
        threshold,
    )


def result_from(
    raw: Sequence[str], scores: np.ndarray, d: Decisions, rule: str, threshold: float
) -> ConsensusResult:
    """The `ConsensusResult` of one example's `decide` output."""
    index = int(d.index)
    return ConsensusResult(
        index=None if index < 0 else index,
        output=None if index < 0 else raw[index],
        reason=REASONS[int(d.reason)],
        scores=scores,
        min_score=float(d.min_score),
        sums=d.sums,
        rule=rule,
        threshold=threshold,
    )


def consensus_summary(results: Iterable[ConsensusResult]) -> dict[str, Any]:
    """Agreement statistics over many examples: kept fraction, reasons, who gets chosen."""
    results = list(results)
    n = len(results)
    reasons = Counter(r.reason for r in results)
    chosen = Counter(r.index for r in results if r.index is not None)
    kept = sum(r.kept for r in results)
    return {
        "examples": n,
        "kept": kept,
        "kept_fraction": kept / n if n else 0.0,
        "reasons": {k: reasons.get(k, 0) for k in REASONS},
        "chosen_index": dict(sorted(chosen.items())),
    }
