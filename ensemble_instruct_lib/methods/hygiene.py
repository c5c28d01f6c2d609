"""Data hygiene in stages 1-2 of every method: decontamination against evaluation sets and
degenerate (looping) instances, as verdicts on the stage records (docs/hygiene.md).

- Stage 1 (`stage1_reason`, called by `rounds.judge_candidate` after the post-filters and before
  novelty): a candidate instruction that matches an evaluation item is rejected with reason
  ``contaminated`` and its ``contamination`` (set, item, kind, score); it never enters the pool.
- Stage 2 (`screen_instance`, called by each method on every record it writes): a valid instance
  whose instruction, input or output matches is made invalid with reason ``contaminated``; one
  whose input or output is mostly repetition, with reason ``degenerate`` (and its
  ``repeat_share``).

The evaluation sets are read and indexed once per process and settings (`decontaminator`).
Stage 3 outputs are judged in stage 4 (`runs.stage4`), where a degenerate member's output
counts as missing.
"""

from __future__ import annotations

import dataclasses
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..data.eval_sets import eval_set
from ..method.decontaminate import Decontaminator, eval_texts
from ..method.degenerate import degeneracy, is_degenerate
from ..method.run_files import DROPPED, ENSEMBLED, STAGE2
from .context import StageConfig

CONTAMINATED = "contaminated"
DEGENERATE = "degenerate"


@lru_cache(maxsize=4)
def _build(
    sets: tuple[str, ...],
    ngram: int,
    min_shared: int,
    rouge_l: float,
    data_dir: str | None,
    superni_dir: str | None,
) -> tuple[Decontaminator, tuple[str, ...]]:
    texts, notes = [], []
    for name in sets:
        items, note = eval_set(name, data_dir)
        texts += eval_texts(name, items)
        notes.append(note)
    return Decontaminator(texts, ngram=ngram, rouge_l=rouge_l, min_shared=min_shared), tuple(notes)


def decontaminator(config: StageConfig) -> tuple[Decontaminator | None, list[str]]:
    """The run's `Decontaminator` (None when ``decontaminate.sets`` is empty) and one line per
    set saying what was read; built once per process for the same settings and data."""
    d = config.decontaminate
    if not d.sets:
        return None, []
    data_dir = str(Path(config.data_dir).resolve()) if config.data_dir else None
    dec, notes = _build(
        tuple(d.sets),
        d.ngram,
        d.min_shared,
        d.rouge_l,
        data_dir or os.environ.get("EI_DATA_DIR"),
        os.environ.get("EI_SUPERNI_DIR"),
    )
    return dec, list(notes)


class Hygiene:
    """A run's stage-1 and stage-2 checks, from its config."""

    def __init__(self, config: StageConfig) -> None:
        self.decontaminator, self.notes = decontaminator(config)
        self.degenerate = config.degenerate

    def stage1_reason(self, rec: dict[str, Any]) -> str | None:
        """``contaminated`` (and the record's ``contamination``) for a candidate instruction
        matching an evaluation item, else None."""
        if self.decontaminator is None:
            return None
        m = self.decontaminator.check(rec["instruction"], "", "")
        if m is None:
            return None
        rec["contamination"] = m.as_record()
        return CONTAMINATED

    def screen_instance(self, rec: dict[str, Any]) -> dict[str, Any]:
        """Make a valid stage-2 record invalid when it is contaminated or degenerate (in that
        order); other records pass unchanged. Returns the record."""
        if not rec.get("valid"):
            return rec
        if self.decontaminator is not None:
            m = self.decontaminator.check(rec["instruction"], rec.get("input"), rec["output"])
            if m is not None:
                rec.update(valid=False, reason=CONTAMINATED, contamination=m.as_record())
                return rec
        dg = self.degenerate
        if dg.enabled:
            for field in ("input", "output"):
                d = degeneracy(rec.get(field), dg.ngram, dg.threshold)
                if d.degenerate:
                    rec.update(
                        valid=False,
                        reason=DEGENERATE,
                        degenerate_field=field,
                        repeat_share=round(d.share, 4),
                    )
                    return rec
        return rec


def hygiene_counts(out: Path, config: StageConfig) -> dict[str, Any]:
    """What decontamination and the degenerate filter did in a run dir, from its files (the
    manifest's ``hygiene``): the settings and what each set read; stage 1 and 2 contaminated
    records per set (and per kind); stage 2 degenerate instances; stage 3 degenerate outputs per
    member (counted whether or not the filter is on); stage 4 members left out as degenerate."""
    from ..data.jsonl import read_jsonl

    def read(path: Path) -> list[dict[str, Any]]:
        return read_jsonl(path) if path.exists() else []

    def tally(records: list[dict[str, Any]]) -> dict[str, Any]:
        per_set: dict[str, int] = {}
        per_kind: dict[str, int] = {}
        for r in records:
            c = r.get("contamination") or {}
            per_set[c.get("set", "?")] = per_set.get(c.get("set", "?"), 0) + 1
            per_kind[c.get("kind", "?")] = per_kind.get(c.get("kind", "?"), 0) + 1
        return {"contaminated": per_set, "by_kind": per_kind}

    d, dg = config.decontaminate, config.degenerate
    _, notes = decontaminator(config)
    s1 = [
        r
        for p in sorted(out.glob("stage1_instructions_*.jsonl"))
        for r in read(p)
        if r.get("reason") == CONTAMINATED
    ]
    s2 = read(out / STAGE2)
    stage3: dict[str, dict[str, int]] = {}
    for p in sorted(out.glob("stage3_outputs_*.jsonl")):
        name = p.stem.removeprefix("stage3_outputs_")
        answered = [r for r in read(p) if r.get("status") != "failed"]
        loops = sum(is_degenerate(r.get("output"), dg.ngram, dg.threshold) for r in answered)
        stage3[name] = {"outputs": len(answered), "degenerate": loops}
    left_out: dict[str, int] = {}
    for r in read(out / ENSEMBLED) + read(out / DROPPED):
        for m, why in (r.get("missing_reasons") or {}).items():
            if why == DEGENERATE:
                left_out[m] = left_out.get(m, 0) + 1
    return {
        "decontaminate": {**dataclasses.asdict(d), "read": notes},
        "degenerate": dataclasses.asdict(dg),
        "stage1": tally(s1),
        "stage2": {
            **tally([r for r in s2 if r.get("reason") == CONTAMINATED]),
            "degenerate": sum(r.get("reason") == DEGENERATE for r in s2),
        },
        "stage3": stage3,
        "stage4": {"degenerate_left_out": left_out},
    }


def hygiene(config: StageConfig) -> Hygiene:
    """`Hygiene` for a run's config (the evaluation sets are indexed once per process)."""
    return Hygiene(config)


__all__ = [
    "CONTAMINATED",
    "DEGENERATE",
    "Hygiene",
    "decontaminator",
    "hygiene",
    "hygiene_counts",
]
