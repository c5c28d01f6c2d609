"""Stage-4 selectors beyond the paper's rule: which of N candidates to keep, with every score kept.

METHOD.md stage 4 keeps the candidate the others agree with most (Rouge-L). This module makes the
selector a setting, as pure functions of the candidates and, for the model-based selectors, of
scores computed elsewhere. It is one of the modules about stage-4 selection, each a different
question: this one decides (the selectors themselves, pure functions, what stage 4 runs);
`runs/selector_models.py` runs the models some selectors need (LM judges, reward models,
embedders); the ``analysis/selectors_on_*`` modules compare the selectors on the recorded answers
against gold (`selectors_on_recorded`) or on a generated run (`selectors_on_run`). The selectors:

- ``sum``: the authors' code rule (largest sum of stemmed Rouge-L against the others), the default;
  identical to `consensus.select_consensus(rule="sum")`.
- ``best_pair``: the paper's wording (first member of the best-scoring pair); identical to
  `select_consensus(rule="best_pair")`.
- ``mbr``: minimum-Bayes-risk selection: the candidate with the largest sum of a utility against
  the others, for a choice of utility: ``rouge_l`` (equals ``sum``), ``chrf`` (character n-gram
  F-score, Popović 2015, over the effective orders), ``token_f1`` (bag-of-tokens F1, as SQuAD),
  ``embedding`` (cosine of embeddings from a function the caller gives). The agreement filter
  (drop when the lowest pairwise utility is <= the threshold) runs on the utility matrix.
- ``judge``: one or more LMs score each candidate with a rubric; the panel's mean decides.
- ``reward``: a reward model's score of each candidate decides.

Every selector goes through `consensus.decide`, the one stage-4 rule: the exact-match shortcut and
the agreement filter on the (Rouge-L or utility) matrix decide what is dropped; the selector decides
what is kept. For ``judge`` and ``reward`` the pick is the highest-scoring candidate (earlier on
ties; a missing score counts as the lowest), the Rouge-L filter still drops what the paper drops
(a negative threshold turns it off), and ``min_score`` optionally drops an example whose kept
candidate scores below it (reason "low_score").

Not here: calling models (judges, reward models, embedders live in the runs layer).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .consensus import (
    EMPTY,
    EXACT,
    REASONS,
    RULES,
    decide,
    empty_mask,
    equal_matrix,
    normalize,
)
from .rouge import pairwise_rouge_l

SELECTORS = ("sum", "best_pair", "mbr", "judge", "reward")
UTILITIES = ("rouge_l", "chrf", "token_f1", "embedding")
#: selectors whose pick comes from per-candidate scores computed by a model
SCORED = ("judge", "reward")
#: `consensus.REASONS` plus the reason only scored selectors give
SELECTOR_REASONS = (*REASONS, "low_score")
KEPT_REASONS = ("exact_match", "consensus")

Embedder = Callable[[Sequence[str]], np.ndarray]


# ------------------------------------------------------------------------------------------
# utilities


def chrf(hypothesis: str, reference: str, max_n: int = 6, beta: float = 2.0) -> float:
    """Character n-gram F-score (chrF, Popović 2015), whitespace removed: the mean over orders
    n = 1..max_n of the F-beta of character n-gram precision and recall.

    Orders longer than either text are left out of the mean (sacrebleu's "effective order"), so
    two equal short answers score 1; over the orders it keeps, the arithmetic is NLTK's
    `sentence_chrf` (tests check equality). 0.0 when either text is empty.
    """
    hyp = "".join(hypothesis.split())
    ref = "".join(reference.split())
    orders = min(max_n, len(hyp), len(ref))
    if orders == 0:
        return 0.0
    factor = beta**2
    total = 0.0
    for n in range(1, orders + 1):
        h = Counter(hyp[i : i + n] for i in range(len(hyp) - n + 1))
        r = Counter(ref[i : i + n] for i in range(len(ref) - n + 1))
        tp = sum((h & r).values())
        if tp:
            prec, rec = tp / sum(h.values()), tp / sum(r.values())
            total += (1 + factor) * (prec * rec) / (factor * prec + rec)
    return total / orders


def token_f1(hypothesis: str, reference: str) -> float:
    """Bag-of-tokens F1 of two texts split on whitespace (SQuAD's F1); 0.0 when either is empty
    (two empty outputs are not agreement)."""
    h, r = hypothesis.split(), reference.split()
    if not h or not r:
        return 0.0
    common = sum((Counter(h) & Counter(r)).values())
    if common == 0:
        return 0.0
    p, rc = common / len(h), common / len(r)
    return 2 * p * rc / (p + rc)


def cosine_matrix(vectors: np.ndarray, empty: np.ndarray | None = None) -> np.ndarray:
    """(N, N) cosine similarity of row vectors; a zero vector or an empty candidate scores 0."""
    v = np.asarray(vectors, dtype=float)
    norms = np.linalg.norm(v, axis=1)
    ok = norms > 0
    if empty is not None:
        ok &= ~np.asarray(empty, dtype=bool)
    unit = np.where(ok[:, None], v / np.where(norms > 0, norms, 1.0)[:, None], 0.0)
    return unit @ unit.T


def utility_matrix(
    candidates: Sequence[str | None], utility: str = "rouge_l", embed: Embedder | None = None
) -> np.ndarray:
    """(N, N) utility of candidate i (hypothesis) against j (reference), on normalized text
    (`consensus.normalize`) except ``embedding``, which embeds the raw text.

    Args:
        candidates: raw outputs (None counts as "").
        utility: one of `UTILITIES`.
        embed: for ``embedding``: texts -> (N, D) array.
    """
    if utility not in UTILITIES:
        raise ValueError(f"utility must be one of {UTILITIES}, got {utility!r}")
    raw = ["" if c is None else str(c) for c in candidates]
    norm = [normalize(c) for c in raw]
    if utility == "rouge_l":
        return pairwise_rouge_l(norm, stem=True)
    if utility == "embedding":
        if embed is None:
            raise ValueError("utility 'embedding' needs an embedding function (`embed`)")
        vectors = np.asarray(embed(raw), dtype=float)
        if vectors.ndim != 2 or len(vectors) != len(raw):
            raise ValueError(
                f"embed must return one vector per candidate, got shape {vectors.shape}"
            )
        return cosine_matrix(vectors, empty_mask(raw))
    fn = chrf if utility == "chrf" else token_f1
    n = len(norm)
    return np.array([[fn(norm[i], norm[j]) for j in range(n)] for i in range(n)])


def parse_selector_entry(entry: str) -> tuple[str, str]:
    """(selector, utility) of a grid entry "<selector>" or "mbr:<utility>"."""
    name, _, utility = entry.partition(":")
    if name not in SELECTORS or (name == "mbr") != bool(utility):
        raise ValueError(
            f"selector grid entries are one of {[s for s in SELECTORS if s != 'mbr']} or "
            f"'mbr:<utility>' with a utility of {list(UTILITIES)}; got {entry!r}"
        )
    if utility and utility not in UTILITIES:
        raise ValueError(f"unknown utility in {entry!r}; choose from {list(UTILITIES)}")
    return name, utility


# ------------------------------------------------------------------------------------------
# selection


@dataclass
class Selection:
    """What a selector decided for one example, with everything it computed.

    Attributes:
        selector: the selector's name; utility: the MBR utility (None for other selectors).
        index, output: the kept candidate and its raw text, or None when dropped.
        reason: one of `SELECTOR_REASONS`.
        scores: (N, N) the matrix the agreement filter read (stemmed Rouge-L, or the utility).
        min_score: its lowest off-diagonal value.
        candidate_scores: per candidate, the score the pick maximized (sum of agreement or
            utility; best pair score the candidate is in; judge panel mean; reward).
        details: further scores (each judge's scores, the reward model, ...).
        why: one sentence: why this candidate was kept, or why the example was dropped.
        threshold: the agreement threshold; min_score_kept: the `min_score` setting, if any.
    """

    selector: str
    index: int | None
    output: str | None
    reason: str
    scores: np.ndarray
    min_score: float
    candidate_scores: list[float | None]
    threshold: float
    utility: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    why: str = ""
    min_score_kept: float | None = None

    @property
    def kept(self) -> bool:
        return self.index is not None

    def record_fields(self) -> dict[str, Any]:
        """The fields a stage-4 record gets from this selection (next to id, instruction, ...)."""
        return {
            "output": self.output,
            "reason": self.reason,
            "chosen_index": self.index,
            "min_score": self.min_score,
            "scores": self.scores.tolist(),
            "rule": self.selector,
            "threshold": self.threshold,
            "selector": self.selector,
            "utility": self.utility,
            "candidate_scores": self.candidate_scores,
            "score_details": self.details,
            "why": self.why,
        }


def _first_max(values: Sequence[float | None]) -> int:
    """Position of the largest value, the earlier on ties; None/NaN count as the lowest."""
    arr = np.array([-np.inf if v is None or math.isnan(v) else v for v in values], dtype=float)
    return int(arr.argmax())


def _pair_scores(scores: np.ndarray) -> list[float]:
    """Per candidate, the best score of a pair i < j it belongs to (what best_pair maximizes)."""
    n = len(scores)
    return [max(float(scores[min(i, j), max(i, j)]) for j in range(n) if j != i) for i in range(n)]


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"


def _why(
    selector: str,
    reason: str,
    index: int | None,
    exact: int,
    pick: int,
    min_score: float,
    threshold: float,
    key: str,
    value: float | None,
) -> str:
    if reason == "below_threshold":
        return f"dropped: lowest pairwise {key} {min_score:.4g} <= threshold {threshold:g}"
    if reason == "empty":
        return f"dropped: the candidate chosen ({pick if exact < 0 else exact}) is empty"
    if reason == "low_score":
        return f"dropped: the best candidate ({pick}) scores {_fmt(value)}, below min_score"
    lead = (
        f"candidates {exact} and another are equal after normalization"
        if reason == "exact_match"
        else f"lowest pairwise {key} {min_score:.4g} > threshold {threshold:g}"
    )
    if selector in RULES or selector == "mbr":
        if reason == "exact_match":
            return f"kept candidate {index}: {lead} (exact-match shortcut)"
        return f"kept candidate {index}: {lead}; {selector} pick with score {_fmt(value)}"
    return f"kept candidate {index}: {lead}; highest {selector} score {_fmt(value)}"


def select(
    candidates: Sequence[str | None],
    selector: str = "sum",
    threshold: float = 0.01,
    *,
    utility: str = "rouge_l",
    embed: Embedder | None = None,
    candidate_scores: Sequence[float | None] | None = None,
    details: Mapping[str, Any] | None = None,
    min_score: float | None = None,
) -> Selection:
    """Run one selector on one example's candidates (the first is the stage-2 output).

    Args:
        candidates: raw outputs, N >= 2 (None counts as "").
        selector: one of `SELECTORS`.
        threshold: the agreement filter's threshold (negative: off).
        utility, embed: ``mbr`` only (see `utility_matrix`).
        candidate_scores: ``judge``/``reward`` only: one score per candidate (None: no score).
        details: ``judge``/``reward``: the scores behind `candidate_scores`, kept in the record.
        min_score: ``judge``/``reward``: drop when the kept candidate scores below this.

    Returns:
        A `Selection`.
    """
    if selector not in SELECTORS:
        raise ValueError(f"selector must be one of {SELECTORS}, got {selector!r}")
    if len(candidates) < 2:
        raise ValueError(f"selection needs at least 2 candidates, got {len(candidates)}")
    raw = ["" if c is None else str(c) for c in candidates]
    norm = [normalize(c) for c in raw]
    equal, empty = equal_matrix(norm), empty_mask(raw)
    pick = None
    key = "rouge_l"
    if selector == "mbr":
        key = utility
        scores = utility_matrix(raw, utility, embed)
        d = decide(scores, equal, empty, threshold, "sum")
        values: list[float | None] = [float(v) for v in d.sums]
    else:
        scores = pairwise_rouge_l(norm, stem=True)
        if selector in SCORED:
            if candidate_scores is None or len(candidate_scores) != len(raw):
                raise ValueError(
                    f"selector {selector!r} needs one score per candidate ({len(raw)}), "
                    f"got {candidate_scores!r}"
                )
            values = [None if v is None else float(v) for v in candidate_scores]
            pick = _first_max(values)
            d = decide(scores, equal, empty, threshold, pick=np.asarray(pick))
        else:
            d = decide(scores, equal, empty, threshold, selector)
            sums = [float(v) for v in d.sums]
            values = sums if selector == "sum" else _pair_scores(scores)
    index = int(d.index)
    reason = REASONS[int(d.reason)]
    value = values[index] if index >= 0 else None
    too_low = min_score is not None and (value is None or value < min_score)
    if selector in SCORED and index >= 0 and too_low:
        index, reason = -1, "low_score"
    exact = int(d.exact) if int(d.reason) in (EXACT, EMPTY) else -1
    why = _why(
        selector,
        reason,
        None if index < 0 else index,
        exact,
        int(d.pick),
        float(d.min_score),
        threshold,
        key,
        value if index >= 0 or reason == "low_score" else None,
    )
    return Selection(
        selector=selector,
        index=None if index < 0 else index,
        output=None if index < 0 else raw[index],
        reason=reason,
        scores=scores,
        min_score=float(d.min_score),
        candidate_scores=values,
        threshold=threshold,
        utility=utility if selector == "mbr" else None,
        details=dict(details or {}),
        why=why,
        min_score_kept=min_score,
    )


__all__ = [
    "KEPT_REASONS",
    "SCORED",
    "SELECTORS",
    "SELECTOR_REASONS",
    "UTILITIES",
    "Embedder",
    "Selection",
    "chrf",
    "cosine_matrix",
    "select",
    "token_f1",
    "utility_matrix",
]
