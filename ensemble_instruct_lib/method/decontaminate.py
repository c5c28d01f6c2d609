"""Decontamination: does a generated example copy or paraphrase an evaluation item? (pure)

The paper does not decontaminate; the kit adds it (README "Deliberate differences"): every
accepted stage-1 instruction and every stage-2 instance is checked against named evaluation sets
(the 252 user-oriented tasks and the SuperNI test split by default). Two checks, both exact:

- **n-gram overlap**: a generated field (instruction, input or output) is contaminated when it
  shares at least `min_shared` distinct word n-grams (n = 13, `min_shared` = 1 by default) with
  the evaluation texts (every instruction, input and reference output of the sets). Words are
  the kit's Rouge tokens (`method.rouge.tokenize`: lowercase [a-z0-9] runs, no stemming), so
  punctuation, case and spacing do not hide a copy. A text of fewer than n tokens has no n-gram
  and is never flagged this way. Each evaluation n-gram is a key of one hash table (the n-gram's
  tokens as code points of one short string), so a check is one slice and one lookup per
  position.
- **Rouge-L**: the generated instruction is contaminated when its Rouge-L F (no stemming, as the
  stage-1 novelty filter) against some evaluation instruction is > `rouge_l` (0.7), the novelty
  threshold itself: a generated instruction the novelty filter would reject as a near-copy of an
  evaluation task is rejected. The highest score comes from a `NoveltyIndex` over the
  evaluation instructions (its exact top-1 walk).

`Decontaminator.check(instruction, input, output)` answers with the first match in the order
Rouge-L on the instruction, then n-grams of the instruction, the input, the output, or None.
Not included: fuzzy n-grams (a copy with one word changed every 12 words passes), other
languages' tokenization, and checks of stage-3 outputs (they are judged by stage 4).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .novelty_index import NoveltyIndex
from .rouge import tokenize

NGRAM = 13
ROUGE_L = 0.7
MIN_SHARED = 1
#: the fields of a generated example that are checked, in the order `check` reports them
FIELDS = ("instruction", "input", "output")
_UNKNOWN = "\x00"  # a token no evaluation text has: no evaluation n-gram contains it


@dataclass(frozen=True)
class EvalText:
    """One text of an evaluation set.

    Attributes:
        set: the set's name ("user_oriented", "superni").
        item: the evaluation item's id (a task id, a SuperNI instance id).
        field: which of its texts: "instruction", "input" or "output" (a reference).
        text: the text.
    """

    set: str
    item: str
    field: str
    text: str


@dataclass(frozen=True)
class Match:
    """Why a generated example is contaminated.

    Attributes:
        set, item, eval_field: the evaluation text it matched (its set, item id and field).
        kind: "rouge_l" (score: Rouge-L F of the instruction against that evaluation
            instruction) or "ngram" (score: the share of the field's n-grams found in the
            evaluation texts; `shared`: how many distinct ones).
        field: the generated field that matched ("instruction", "input", "output").
        score: see `kind`.
        shared: distinct shared n-grams ("ngram"), else 0.
    """

    set: str
    item: str
    eval_field: str
    kind: str
    field: str
    score: float
    shared: int = 0

    def as_record(self) -> dict[str, Any]:
        """The fields a dropped record carries (``contamination``)."""
        return {
            "set": self.set,
            "item": self.item,
            "eval_field": self.eval_field,
            "kind": self.kind,
            "field": self.field,
            "score": round(self.score, 6),
            "shared": self.shared,
        }


class Decontaminator:
    """Evaluation texts indexed once; `check` a generated example against them.

    Args:
        texts: the evaluation texts (any fields; instructions also go to the Rouge-L index).
        ngram: n of the n-gram check (>= 1).
        rouge_l: flag an instruction whose Rouge-L F against an evaluation instruction is >
            this; None turns the Rouge-L check off.
        min_shared: distinct shared n-grams that make a field contaminated (>= 1).
    """

    def __init__(
        self,
        texts: Iterable[EvalText],
        ngram: int = NGRAM,
        rouge_l: float | None = ROUGE_L,
        min_shared: int = MIN_SHARED,
    ) -> None:
        if ngram < 1 or min_shared < 1:
            raise ValueError(f"ngram and min_shared must be >= 1, got {ngram}, {min_shared}")
        self.ngram = ngram
        self.rouge_l = rouge_l
        self.min_shared = min_shared
        self.sources: list[EvalText] = []
        self._vocab: dict[str, str] = {}
        self._grams: dict[str, int] = {}  # n-gram (encoded) -> first source holding it
        self._instructions = NoveltyIndex(stem=False)
        self._instruction_src: list[int] = []  # index position -> source
        seen_instructions: dict[str, int] = {}
        for t in texts:
            k = len(self.sources)
            self.sources.append(t)
            enc = self._encode(t.text, grow=True)
            for i in range(len(enc) - ngram + 1):
                self._grams.setdefault(enc[i : i + ngram], k)
            if t.field == "instruction" and t.text.strip() and t.text not in seen_instructions:
                seen_instructions[t.text] = k
                self._instructions.add(t.text)
                self._instruction_src.append(k)

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def num_ngrams(self) -> int:
        """Distinct evaluation n-grams indexed."""
        return len(self._grams)

    def _encode(self, text: str, grow: bool = False) -> str:
        vocab = self._vocab
        if grow:
            for tok in tokenize(text):
                if tok not in vocab:
                    vocab[tok] = chr(0x100 + len(vocab))
        return "".join(vocab.get(tok, _UNKNOWN) for tok in tokenize(text))

    def ngram_match(self, text: str | None, field: str = "output") -> Match | None:
        """The n-gram check of one generated text (None when clean)."""
        enc = self._encode(text or "")
        n = self.ngram
        total = len(enc) - n + 1
        if total <= 0:
            return None
        grams, hits = self._grams, {}
        for i in range(total):
            g = enc[i : i + n]
            if _UNKNOWN in g:
                continue
            src = grams.get(g)
            if src is not None:
                hits[g] = src
        if len(hits) < self.min_shared:
            return None
        best, _ = Counter(hits.values()).most_common(1)[0]
        s = self.sources[best]
        distinct = len(set(enc[i : i + n] for i in range(total)))
        return Match(s.set, s.item, s.field, "ngram", field, len(hits) / distinct, len(hits))

    def rouge_match(self, instruction: str | None) -> Match | None:
        """The Rouge-L check of one generated instruction (None when clean or turned off)."""
        if self.rouge_l is None or not instruction or len(self._instructions) == 0:
            return None
        ids, scores = self._instructions.top_k(instruction, 1)
        if not len(ids) or float(scores[0]) <= self.rouge_l:
            return None
        s = self.sources[self._instruction_src[int(ids[0])]]
        return Match(s.set, s.item, s.field, "rouge_l", "instruction", float(scores[0]))

    def check(
        self,
        instruction: str | None = "",
        input: str | None = "",
        output: str | None = "",  # noqa: A002
    ) -> Match | None:
        """The first match of a generated example: Rouge-L of the instruction, then n-grams of
        the instruction, the input and the output; None when it is clean."""
        m = self.rouge_match(instruction)
        if m is not None:
            return m
        for field, text in zip(FIELDS, (instruction, input, output), strict=True):
            m = self.ngram_match(text, field)
            if m is not None:
                return m
        return None


def eval_texts(
    set_name: str,
    items: Sequence[Any],
) -> list[EvalText]:
    """The evaluation texts of `EvalItem`-like items (id, instruction, input, references): every
    non-empty instruction, input and reference."""
    out = []
    for it in items:
        if it.instruction:
            out.append(EvalText(set_name, it.id, "instruction", it.instruction))
        if it.input:
            out.append(EvalText(set_name, it.id, "input", it.input))
        out += [EvalText(set_name, it.id, "output", r) for r in it.references if r]
    return out


__all__ = [
    "FIELDS",
    "MIN_SHARED",
    "NGRAM",
    "ROUGE_L",
    "Decontaminator",
    "EvalText",
    "Match",
    "eval_texts",
]
