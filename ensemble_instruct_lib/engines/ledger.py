"""The token ledger of a run dir: per model and stage, the LM calls, their prompt and completion
tokens, cache hits, failures and wall time, each call counted once however often the run was
interrupted and resumed.

Not part of the method (METHOD.md counts no tokens); it is what tells a user what a run cost and
what lets `runs.estimate` predict the next one. Every call goes through `CachedBackend`
(`engines.cache`), which reports to a `CallLedger` bound to a model name; the run sets the stage
(`CallLedger.stage`). The ledger is a JSONL file (``ledger.jsonl`` in the run dir) of events, keyed
by the call's cache key:

- ``ask``: written (and flushed) *before* a cache miss is sent to the model;
- ``new``: the model answered it: its tokens and wall time (a batch's wall time split evenly over
  its calls);
- ``hit``: answered by the call cache the first time this run dir asked for the key (a cache made
  by another run dir, or shared through ``config.cache``): counted apart, never as new tokens;
- ``failed``: one failed attempt (a call of a `PartialFailure`, or a one-prompt call that raised);
  a batch that raised as a whole is counted through the per-prompt retries that follow it.

A key is counted once per run dir: a later hit on a key already recorded (a stage-1 round redone
from the cache after a kill, an in-batch duplicate) adds nothing. If a process is killed after a
call was cached but before its ``new`` event was written, the next run finds an ``ask`` without a
``new`` and a cache hit for that key: that hit is recorded as the ``new`` call it was, with the
cached token counts (``recovered``; its wall time is unknown and left out of the rates). So the
ledger of a run killed and resumed equals the ledger of the same run made in one go (wall times
aside). Left out: several processes writing one run dir at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.jsonl import JsonlAppender, read_jsonl

LEDGER = "ledger.jsonl"

#: the counters of one (model, stage) row, in display order
FIELDS = (
    "calls",
    "new",
    "hits",
    "failures",
    "prompt_tokens",
    "completion_tokens",
    "wall_s",
)


@dataclass(frozen=True)
class Call:
    """One distinct call as `CachedBackend` saw it: its key and result tokens."""

    key: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class CallLedger:
    """A run dir's ledger file, read on open and appended to as calls are made.

    Args:
        path: the JSONL file (created on first write).
        clock: seconds, for wall times (tests pass a fake one).

    Attributes:
        stage: the stage the next calls belong to ("stage1" ... "stage4"); set by the run.
    """

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.perf_counter) -> None:
        self.path = Path(path)
        self.clock = clock
        self.stage = "other"
        self._rows: list[dict[str, Any]] = read_jsonl(self.path) if self.path.exists() else []
        self._counted = {r["key"] for r in self._rows if r["event"] in ("new", "hit")}
        self._asked = {r["key"] for r in self._rows if r["event"] == "ask"}
        self._out: JsonlAppender | None = None
        #: completion tokens of new calls made by this process (progress bars' tok/s)
        self.live_completion_tokens = 0

    def _write(self, rows: Iterable[dict[str, Any]]) -> None:
        rows = list(rows)
        if not rows:
            return
        if self._out is None:
            self._out = JsonlAppender(self.path)
        self._out.extend(rows)
        self._rows.extend(rows)

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    # -- what CachedBackend reports -------------------------------------------------------

    def asking(self, model: str, keys: Sequence[str]) -> None:
        """Before misses are sent to the model: remember that this run dir asked for them."""
        fresh = [k for k in dict.fromkeys(keys) if k not in self._asked]
        self._asked.update(fresh)
        self._write({"event": "ask", "key": k, "model": model, "stage": self.stage} for k in fresh)

    def answered(self, model: str, calls: Sequence[Call], wall_s: float | None) -> None:
        """New calls the model answered; `wall_s` is the time of all of them together."""
        each = None if wall_s is None or not calls else round(wall_s / len(calls), 6)
        rows = [self._new(model, c, each) for c in calls if c.key not in self._counted]
        self._counted.update(r["key"] for r in rows)
        self.live_completion_tokens += sum(r["completion_tokens"] for r in rows)
        self._write(rows)

    def served(self, model: str, calls: Sequence[Call]) -> None:
        """Calls the cache answered; only keys this run dir never counted are recorded."""
        rows = []
        for c in calls:
            if c.key in self._counted:
                continue
            self._counted.add(c.key)
            if c.key in self._asked:  # made before a kill, cached, never written: a new call
                rows.append({**self._new(model, c, None), "recovered": True})
            else:
                rows.append(
                    {
                        "event": "hit",
                        "key": c.key,
                        "model": model,
                        "stage": self.stage,
                        "prompt_tokens": int(c.prompt_tokens),
                        "completion_tokens": int(c.completion_tokens),
                    }
                )
        self._write(rows)

    def failed(self, model: str, keys: Sequence[str], reasons: Sequence[str]) -> None:
        """Failed attempts, one row each."""
        self._write(
            {"event": "failed", "key": k, "model": model, "stage": self.stage, "reason": r}
            for k, r in zip(keys, reasons, strict=True)
        )

    def _new(self, model: str, c: Call, wall_s: float | None) -> dict[str, Any]:
        return {
            "event": "new",
            "key": c.key,
            "model": model,
            "stage": self.stage,
            "prompt_tokens": int(c.prompt_tokens),
            "completion_tokens": int(c.completion_tokens),
            "wall_s": wall_s,
        }

    # -- reading it back -------------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        return list(self._rows)

    def summary(self) -> dict[str, dict[str, dict[str, Any]]]:
        """`summarize` over this ledger's rows."""
        return summarize(self._rows)


def summarize(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{model: {stage: counters}}`` over ledger rows; counters are `FIELDS`: ``calls`` =
    new + hits (distinct keys), tokens of new calls only, ``wall_s`` the summed wall time of the
    new calls whose time was measured (``timed`` of them)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        c = out.setdefault(r["model"], {}).setdefault(
            r["stage"], {f: 0 for f in FIELDS} | {"wall_s": 0.0, "timed": 0}
        )
        ev = r["event"]
        if ev == "new":
            c["calls"] += 1
            c["new"] += 1
            c["prompt_tokens"] += r["prompt_tokens"]
            c["completion_tokens"] += r["completion_tokens"]
            if r.get("wall_s") is not None:
                c["wall_s"] = round(c["wall_s"] + r["wall_s"], 6)
                c["timed"] += 1
        elif ev == "hit":
            c["calls"] += 1
            c["hits"] += 1
        elif ev == "failed":
            c["failures"] += 1
    return out


def read_ledger(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a run dir's ledger (none when it has no ledger)."""
    path = Path(run_dir) / LEDGER
    return read_jsonl(path) if path.exists() else []


def ledger_rows(summary: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One flat row per (model, stage), stages in order, with generated tokens per second."""
    out = []
    for model, stages in summary.items():
        for stage in sorted(stages):
            c = stages[stage]
            wall = float(c.get("wall_s") or 0.0)
            rate = c["completion_tokens"] / wall if wall > 0 and c.get("timed") else None
            out.append(
                {"model": model, "stage": stage}
                | {f: c.get(f, 0) for f in FIELDS}
                | {"wall_s": round(wall, 1)}
                | {"gen_tok_per_s": None if rate is None else round(rate, 1)}
            )
    return sorted(out, key=lambda r: (r["stage"], r["model"]))


def format_ledger(summary: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    """The ledger as aligned text lines (a header, then one line per model and stage)."""
    rows = ledger_rows(summary)
    if not rows:
        return []
    head = ("stage", "model", *FIELDS, "gen tok/s")
    table = [head] + [
        (
            r["stage"],
            r["model"],
            *(str(r[f]) for f in FIELDS),
            "" if r["gen_tok_per_s"] is None else str(r["gen_tok_per_s"]),
        )
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(head))]
    return ["  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)) for row in table]


__all__ = [
    "Call",
    "CallLedger",
    "FIELDS",
    "LEDGER",
    "format_ledger",
    "ledger_rows",
    "read_ledger",
    "summarize",
]
