"""Degenerate text: flag an LM output that is mostly repetition (a loop), as a pure function.

Small real models loop ("1. Create a new document 2. Create a new document ..."; "I'm sorry, I
can't do it. I'm sorry, I can't do it. ..."). The kit's criterion is the **repeat share**: over the
text's Rouge tokens (`method.rouge.tokenize`, lowercase [a-z0-9] runs, no stemming), the share of
token positions covered by an occurrence of an n-gram (n = 5) that already occurred earlier in the
text. A text is degenerate when that share is >= 0.5 (at least half of it repeats something said
before it) and it has at least 2n tokens (shorter texts cannot hold a repeated 5-gram and the
first one). A sentence said twice scores exactly 0.5; a sentence looped k times scores about
(k - 1) / k.

Measured (docs/hygiene.md): 0 of the 252 gold outputs of the user-oriented tasks and 0 of the 175
seed outputs are flagged (n = 4 would flag one gold output, a regular expression); text-davinci-003
had 6 of 252 flagged, real loops or link lists. Not included: loops of characters inside one token
("ahahahah...") and repeats that differ in every 5-gram (paraphrase loops).
"""

from __future__ import annotations

from dataclasses import dataclass

from .rouge import tokenize

#: the n-gram length whose repeats count
REPEAT_NGRAM = 5
#: flag a text whose repeat share is >= this
REPEAT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Degeneracy:
    """The repeat share of one text and the verdict.

    Attributes:
        degenerate: share >= the threshold (and the text has at least 2n tokens).
        share: the share of tokens covered by a repeat of an earlier n-gram (0.0-1.0).
        tokens: the text's Rouge-token count.
    """

    degenerate: bool
    share: float
    tokens: int


def repeat_share(text: str | None, n: int = REPEAT_NGRAM) -> float:
    """The share of `text`'s Rouge tokens covered by an n-gram occurrence whose n-gram occurred
    earlier in the text (overlapping occurrences count; 0.0 below 2n tokens)."""
    tokens = tokenize(text or "")
    if n < 1 or len(tokens) < 2 * n:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    covered_to = 0  # positions < covered_to are covered
    covered = 0
    for i in range(len(tokens) - n + 1):
        gram = tuple(tokens[i : i + n])
        if gram in seen:
            start = max(i, covered_to)
            covered += i + n - start
            covered_to = i + n
        else:
            seen.add(gram)
    return covered / len(tokens)


def degeneracy(
    text: str | None, n: int = REPEAT_NGRAM, threshold: float = REPEAT_THRESHOLD
) -> Degeneracy:
    """Whether `text` is mostly repetition (see the module docstring), with its repeat share."""
    share = repeat_share(text, n)
    count = len(tokenize(text or ""))
    return Degeneracy(count >= 2 * n and share >= threshold, share, count)


def is_degenerate(
    text: str | None, n: int = REPEAT_NGRAM, threshold: float = REPEAT_THRESHOLD
) -> bool:
    """`degeneracy(text, n, threshold).degenerate`."""
    return degeneracy(text, n, threshold).degenerate


__all__ = [
    "REPEAT_NGRAM",
    "REPEAT_THRESHOLD",
    "Degeneracy",
    "degeneracy",
    "is_degenerate",
    "repeat_share",
]
