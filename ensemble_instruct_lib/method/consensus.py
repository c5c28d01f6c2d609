"""Output ensembling by greedy consensus (METHOD.md stage 4), as a pure function of N strings.

Candidates are the instance generator's output first, then the extra LMs' outputs. Rules, in order:
normalize for comparison (lowercase, drop ASCII punctuation, collapse spaces); exact-match shortcut
(the first candidate equals any other -> keep it; else the first pair of equal extra outputs -> keep
the first of them); otherwise pairwise Rouge-L F with Porter stemming, drop the example when the
lowest pairwise score is <= the threshold, else keep the candidate with the largest sum of scores
against the others (`rule="sum"`, the reference code's rule and the default) or the first member of
the best-scoring pair (`rule="best_pair"`, the paper's wording). Ties go to the earlier candidate.
The text kept is the raw, un-normalized candidate; an empty choice drops the example.

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


def _exact_match(norm: Sequence[str]) -> int | None:
    if norm[0] and any(norm[0] == other for other in norm[1:]):
        return 0
    for i in range(1, len(norm)):
        if norm[i] and any(norm[i] == norm[j] for j in range(i + 1, len(norm))):
            return i
    return None


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
        A `ConsensusResult`.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if len(candidates) < 2:
        raise ValueError(f"consensus needs at least 2 candidates, got {len(candidates)}")
    raw = ["" if c is None else str(c) for c in candidates]
    norm = [normalize(c) for c in raw]
    n = len(raw)
    scores = pairwise_rouge_l(norm, stem=True)
    off = ~np.eye(n, dtype=bool)
    min_score = float(scores[off].min())
    sums = np.where(off, scores, 0.0).sum(axis=1)

    def result(index: int | None, reason: str) -> ConsensusResult:
        if index is not None and not raw[index].strip():
            index, reason = None, "empty"
        return ConsensusResult(
            index=index,
            output=None if index is None else raw[index],
            reason=reason,
            scores=scores,
            min_score=min_score,
            sums=sums,
            rule=rule,
            threshold=threshold,
        )

    exact = _exact_match(norm)
    if exact is not None:
        return result(exact, "exact_match")
    if min_score <= threshold:
        return result(None, "below_threshold")
    if rule == "sum":
        return result(int(np.argmax(sums)), "consensus")
    best, best_i = -1.0, 0
    for i in range(n):
        for j in range(i + 1, n):
            if scores[i, j] > best:
                best, best_i = float(scores[i, j]), i
    return result(best_i, "consensus")


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
