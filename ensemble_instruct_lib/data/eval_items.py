"""One evaluation item (SuperNI instance or user-oriented task): prompt fields and gold outputs.

Shared by the SuperNI loader (`data.superni`) and the scorer (`train.evaluate`); no scoring here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EvalItem:
    """One evaluation instance.

    Attributes:
        id: unique instance id (a SuperNI instance id, a user-oriented task id).
        instruction: the task definition / instruction shown "with definition".
        input: the instance input ("" when the task has none).
        references: gold outputs; the best-matching one counts.
        task_id: the task the instance belongs to (per-task scores).
        task_category: the task's category (per-category scores).
    """

    id: str
    instruction: str
    input: str
    references: tuple[str, ...]
    task_id: str = ""
    task_category: str = ""

    def __post_init__(self) -> None:
        refs = self.references
        if isinstance(refs, str) or not refs or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"item {self.id!r}: references must be a non-empty list of strings")
        object.__setattr__(self, "references", tuple(refs))


__all__ = ["EvalItem"]
