"""Instruction filters and the novelty decision (METHOD.md stage 1), each rejection with a reason.

Post-filters (as in Self-Instruct): reject an instruction of <= 3 or > 150 words; one containing, as
a whole word, image(s), graph(s), picture(s), file(s), map(s), draw, plot or "go to"; one starting
with "Write a program"; one whose first character is punctuation or non-ASCII.

Novelty: Rouge-L F (no stemming) against the same type's seeds plus every instruction of that type
already accepted; reject when the best match is > 0.7. For accepted instructions the 10 most
similar pool texts and the mean similarity to the pool are kept, as Self-Instruct shows them.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from .novelty_index import Match, NoveltyIndex

MIN_WORDS = 3  # reject if <= this many words
MAX_WORDS = 150  # reject if > this many words
BLOCKED_KEYWORDS = (
    "image", "images", "graph", "graphs", "picture", "pictures", "file", "files",
    "map", "maps", "draw", "plot", "go to",
)  # fmt: skip
_KEYWORD_RE = re.compile(
    r"\b(" + "|".join(re.escape(k).replace(r"\ ", r"\s+") for k in BLOCKED_KEYWORDS) + r")\b",
    re.IGNORECASE,
)
NOVELTY_THRESHOLD = 0.7


def instruction_rejection(text: str) -> str | None:
    """Why the instruction fails the post-filters, or None when it passes.

    Reasons: "empty", "too_short", "too_long", "keyword:<word>", "write_a_program",
    "starts_with_punctuation", "starts_non_ascii".
    """
    text = text.strip()
    if not text:
        return "empty"
    n = len(text.split())
    if n <= MIN_WORDS:
        return "too_short"
    if n > MAX_WORDS:
        return "too_long"
    m = _KEYWORD_RE.search(text)
    if m:
        return "keyword:" + " ".join(m.group(1).lower().split())
    if text.startswith("Write a program"):
        return "write_a_program"
    if text[0] in string.punctuation:
        return "starts_with_punctuation"
    if not text[0].isascii():
        return "starts_non_ascii"
    return None


@dataclass
class NoveltyDecision:
    """The novelty filter's verdict on one candidate instruction.

    Attributes:
        accepted: True when the best match is <= the threshold.
        max_score: the best Rouge-L F against the pool.
        most_similar: up to `keep_top` (pool text, score) pairs, best first.
        mean_similarity: mean Rouge-L F against the whole pool (None when not computed).
    """

    accepted: bool
    max_score: float
    most_similar: list[tuple[str, float]] = field(default_factory=list)
    mean_similarity: float | None = None

    @property
    def reason(self) -> str | None:
        return None if self.accepted else "not_novel"


def _decision(pool: NoveltyIndex, m: Match) -> NoveltyDecision:
    """A `NoveltyIndex` match as the filter's verdict (the kept list as pool texts)."""
    if m.exceeds:
        return NoveltyDecision(False, m.max_score)
    top = [(pool.texts[i], float(s)) for i, s in zip(m.indices.tolist(), m.scores, strict=True)]
    return NoveltyDecision(True, m.max_score, top, None)


class NoveltyFilter:
    """Per-type pools of seeds and accepted instructions; decides novelty exactly.

    Args:
        seeds_by_type: {"A": [instruction, ...], "B": [...]}: the pools start with these.
        threshold: reject when the best Rouge-L F is > this (METHOD.md: 0.7).
        keep_top: how many most-similar pool texts to keep for accepted instructions.
        with_mean: also compute the mean similarity to the whole pool (scores every pair; off,
            the decision scores only the pairs the token-overlap bound cannot rule out).
    """

    def __init__(
        self,
        seeds_by_type: dict[str, Iterable[str]],
        threshold: float = NOVELTY_THRESHOLD,
        keep_top: int = 10,
        with_mean: bool = True,
    ) -> None:
        self.threshold = threshold
        self.keep_top = keep_top
        self.with_mean = with_mean
        self.pools: dict[str, NoveltyIndex] = {}
        for task_type, texts in seeds_by_type.items():
            self.pools[task_type] = NoveltyIndex(stem=False)
            self.pools[task_type].extend(texts)

    def check(self, text: str, task_type: str) -> NoveltyDecision:
        """Score `text` against its type's pool without adding it."""
        pool = self.pools[task_type]
        if len(pool) == 0:
            return NoveltyDecision(True, 0.0, [], 0.0 if self.with_mean else None)
        if self.with_mean:
            scores = pool.scores(text)
            best = float(scores.max())
            order = np.lexsort((np.arange(len(scores)), -scores))[: self.keep_top]
            top = [(pool.texts[i], float(scores[i])) for i in order]
            return NoveltyDecision(best <= self.threshold, best, top, float(scores.mean()))
        return _decision(pool, pool.match(text, self.threshold, self.keep_top))

    def add(self, text: str, task_type: str) -> None:
        """Add an accepted instruction to its type's pool."""
        self.pools[task_type].add(text)

    def add_novel(self, texts: Iterable[str], task_type: str) -> list[NoveltyDecision]:
        """`check` each text, then `add` it when accepted, in order: the same decisions, lists
        and pool as that loop. Without `with_mean` it runs a block of texts at a time
        (`NoveltyIndex.add_novel`), which is what makes a 50k-instruction pool take seconds."""
        if self.with_mean:
            out = []
            for t in texts:
                d = self.check(t, task_type)
                if d.accepted:
                    self.add(t, task_type)
                out.append(d)
            return out
        pool = self.pools[task_type]
        return [_decision(pool, m) for m in pool.add_novel(texts, self.threshold, self.keep_top)]
