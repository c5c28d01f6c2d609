"""The resumable per-item stage loop: ids already on file are skipped, the rest go in batches to
a step that asks the LM and makes their records, which are appended as they come (one flushed
line each), under a progress bar and a failure budget (`run_batches`).

Its users: stage 2 of every method (`methods.ensemble_instruct`, `methods.self_instruct`,
`methods.alpaca`), stage 3 (`runs.stage3`), evaluation (`train.evaluate`) and the members'
answers of `analysis.eval_members`. Stage 1 works in rounds instead (`methods.rounds.run_rounds`,
which shares the progress bar). Not here: what a record holds (`method.records`), how a failed
call becomes a failure marker (`engines.isolation`), the prompts and parsers (each user's own).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..data.jsonl import JsonlAppender, read_jsonl, write_jsonl
from ..method.records import is_failed
from .base import Backend, DecodingParams, Generation
from .isolation import FailureBudget, generate_isolated

T = TypeVar("T")
Records = Sequence[dict[str, Any]]


def progress_bar(total: int, desc: str, enabled: bool, tokens: Callable[[], int] | None = None):
    """A tqdm bar (tqdm shows the ETA); with `tokens` (generated tokens so far, e.g.
    `StageContext.generated_tokens`) its postfix also shows the generated tokens per second since
    the bar opened."""
    from tqdm.auto import tqdm

    if tokens is None:
        return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True, leave=True)

    class TokenBar(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            self._tokens, self._t0 = tokens, None
            super().__init__(
                total=total, desc=desc, disable=not enabled, dynamic_ncols=True, leave=True
            )
            self._n0, self._t0 = tokens(), time.perf_counter()
            self._extra: dict[str, Any] = {}

        def _tok_s(self) -> dict[str, Any]:
            elapsed = time.perf_counter() - self._t0 if self._t0 is not None else 0.0
            n = self._tokens() - self._n0
            return {"tok/s": f"{n / elapsed:.1f}"} if elapsed > 0 and n > 0 else {}

        def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
            self._extra = {**(ordered_dict or {}), **kwargs}
            super().set_postfix(self._extra | self._tok_s(), refresh=refresh)

        def update(self, n=1):
            if not self.disable and self._t0 is not None:
                super().set_postfix(self._extra | self._tok_s(), refresh=False)
            return super().update(n)

    return TokenBar()


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def load_records(
    path: Path,
    retry_failed: bool,
    check: Callable[[int, Mapping[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """A stage file's records; with `retry_failed`, records of calls that failed for good
    (`method.records.is_failed`) are dropped from the file (rewritten atomically) so their ids are
    asked again and the file never holds two lines for one id.

    Args:
        check: called with (line number from 1, record) for every record before anything is
            dropped; it raises when the file cannot be resumed (evaluation: another setting).
    """
    records = read_jsonl(path) if path.exists() else []
    if check is not None:
        for k, rec in enumerate(records, start=1):
            check(k, rec)
    if retry_failed and any(is_failed(r) for r in records):
        records = [r for r in records if not is_failed(r)]
        write_jsonl(path, records)
    return records


def generate_checked(
    backend: Backend,
    prompts: Sequence[str],
    params: DecodingParams,
    budget: FailureBudget,
    sample_indices: Sequence[int] | None = None,
) -> list[Generation]:
    """`engines.isolation.generate_isolated` (a failed call becomes a failure marker), counted
    in `budget`; `run_batches` calls `budget.check()` once the batch's records are written, which
    stops the run when too many calls failed."""
    gens = generate_isolated(backend, prompts, params, sample_indices)
    budget.add(gens)
    return gens


def _record_id(item: Any) -> str:
    return item["id"]


def batches(
    items: Sequence[T],
    size: int | None,
    asked: Container[str],
    *,
    key: Callable[[T], str] = _record_id,
    keep_places: bool = False,
) -> list[Sequence[T]]:
    """The batches of `items` still to ask (those whose `key` is not in `asked`), in order.

    Args:
        size: items per batch (None: one batch).
        keep_places: cut the batches from every item and then leave out the asked ones, so a
            resumed run puts each remaining item in the batch an uninterrupted run would have
            (padded batches change greedy text slightly); otherwise cut them from the items left.
    """
    if size is None:
        size = max(len(items), 1)
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    if keep_places:
        cut = [[x for x in c if key(x) not in asked] for c in chunks(items, size)]
        return [c for c in cut if c]
    return list(chunks([x for x in items if key(x) not in asked], size))


def run_batches(
    items: Sequence[T],
    step: Callable[[Sequence[T]], Iterable[Records]],
    *,
    asked: Container[str],
    batch_size: int | None,
    path: Path | None,
    budget: FailureBudget | None = None,
    desc: str = "",
    progress: bool = False,
    tokens: Callable[[], int] | None = None,
    key: Callable[[T], str] = _record_id,
    keep_places: bool = False,
    postfix: Callable[[], dict[str, Any]] | None = None,
) -> None:
    """Ask `step` for the records of every item not yet asked, batch by batch, and append them.

    The bar counts `items` (those already asked as done). For each batch, `step` yields, item by
    item in order, the records to append for it (a step asks the LM through `generate_checked`
    with `budget`); after each batch the bar's postfix is set from `postfix` and `budget.check()`
    stops the run when too many calls failed, and after the last `budget.check(final=True)`.

    Args:
        items: everything the stage answers (what was asked before included).
        asked: keys already on file (`load_records`); their items are skipped.
        batch_size: items per `step` call (None: one call).
        path: the JSONL file appended to (None: records are made but not written).
        budget: the stage's failure budget (None: the step makes no LM call).
        desc, progress, tokens: the progress bar's label, whether it shows, and the generated
            tokens so far for its tok/s (`progress_bar`).
        key: an item's id (default ``item["id"]``).
        keep_places: see `batches`.
    """
    todo = batches(items, batch_size, asked, key=key, keep_places=keep_places)
    bar = progress_bar(len(items), desc, progress, tokens)
    bar.update(len(items) - sum(len(b) for b in todo))
    out = JsonlAppender(path) if path is not None else None
    try:
        for batch in todo:
            for records in step(batch):
                if out is not None:
                    out.extend(records)
                bar.update(1)
            if postfix is not None:
                bar.set_postfix(postfix(), refresh=False)
            if budget is not None:
                budget.check()
        if budget is not None:
            budget.check(final=True)
    finally:
        if out is not None:
            out.close()
        bar.close()


__all__ = [
    "batches",
    "chunks",
    "generate_checked",
    "load_records",
    "progress_bar",
    "run_batches",
]
