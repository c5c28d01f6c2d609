"""Per-call failure isolation: one bad prompt or one failed request never costs a whole batch.

Not part of the method (METHOD.md stages 1-3 assume every call answers); this is what lets a long
run finish when a few calls cannot be answered. `generate_isolated` calls any `Backend` on a batch
and returns, for every prompt, either its `Generation` or a failure marker: a `Generation` with
``finish_reason="failed"``, empty text and ``extra={"error": <one line>, "reason": <reason>}``
(never a traceback). Failure markers are never stored in the call cache, so a later run asks again.

Reasons:
- ``prompt_too_long``: the prompt (plus ``max_new_tokens``) does not fit the model's context, found
  before the call where the engine can tell (`check_prompts`) or from the server's answer;
- ``rejected``: the server refused the request for good (a 4xx other than rate limiting);
- ``retries_exhausted``: no answer after every retry (server down, overloaded, timing out);
- ``error``: anything else the engine raised for that prompt alone.

Engines report per-request outcomes with `PartialFailure` (the answers that did arrive, and the
error of each request that failed) and a failed call with `CallFailed` (which carries a reason).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import Backend, DecodingParams, Generation

FAILED = "failed"
REASONS = ("prompt_too_long", "rejected", "retries_exhausted", "error")
_MAX_MESSAGE = 600


class CallFailed(RuntimeError):
    """One call failed for good (after any retries); `reason` is one of `REASONS`."""

    def __init__(self, message: str, reason: str = "error") -> None:
        super().__init__(message)
        self.reason = reason if reason in REASONS else "error"


class PromptTooLong(CallFailed, ValueError):
    """A prompt does not fit the model's context (a ValueError too, for older callers)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "prompt_too_long")


class PartialFailure(RuntimeError):
    """Some calls of a batch failed for good; the others were answered.

    Attributes:
        results: per prompt, its `Generation`, or None where it failed.
        errors: per prompt, the exception of a failed call, or None where it was answered.
    """

    def __init__(
        self, results: Sequence[Generation | None], errors: Sequence[BaseException | None]
    ) -> None:
        self.results = list(results)
        self.errors = list(errors)
        failed = [e for e in self.errors if e is not None]
        first = one_line(failed[0]) if failed else "no error"
        super().__init__(
            f"{len(failed)} of {len(self.errors)} calls failed for good; first: {first}"
        )

    @property
    def n_failed(self) -> int:
        return sum(e is not None for e in self.errors)


def one_line(error: BaseException | str, limit: int = _MAX_MESSAGE) -> str:
    """An error as one line of at most `limit` characters (no traceback, no newlines)."""
    text = error if isinstance(error, str) else (str(error) or type(error).__name__)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def reason_of(error: BaseException) -> str:
    """The failure reason of an exception raised by an engine."""
    if isinstance(error, CallFailed):
        return error.reason
    return "error"


def failure(error: BaseException | str, reason: str | None = None) -> Generation:
    """A failure marker for one prompt."""
    if reason is None:
        reason = reason_of(error) if isinstance(error, BaseException) else "error"
    return Generation(
        text="", finish_reason=FAILED, extra={"error": one_line(error), "reason": reason}
    )


def is_failure(g: Generation) -> bool:
    return g.finish_reason == FAILED


def check_prompts(
    backend: Backend, prompts: Sequence[str], params: DecodingParams
) -> list[str | None]:
    """Per prompt, why it cannot be sent (a one-line message) or None; asks the engine's own
    `check_prompts` when it has one (HF: tokenizer length vs context), else finds nothing."""
    check = getattr(backend, "check_prompts", None)
    if check is None:
        return [None] * len(prompts)
    return list(check(list(prompts), params))


def generate_isolated(
    backend: Backend,
    prompts: Sequence[str],
    params: DecodingParams,
    sample_indices: Sequence[int] | None = None,
) -> list[Generation]:
    """`backend.generate`, but a failed call becomes a failure marker instead of an exception.

    Over-long prompts (where the engine can tell) are marked before the call and not sent. When
    the batch raises `PartialFailure`, its answers are kept and only the failed calls are marked
    (the engine already retried them). When it raises anything else, each prompt is tried on its
    own, so one bad prompt costs only itself. KeyboardInterrupt and SystemExit still propagate.

    Returns:
        One `Generation` per prompt, in order; failed ones satisfy `is_failure`.
    """
    prompts = list(prompts)
    indices = list(sample_indices) if sample_indices is not None else [0] * len(prompts)
    if len(indices) != len(prompts):
        raise ValueError("sample_indices must have one entry per prompt")
    out: list[Generation | None] = [None] * len(prompts)
    try:
        problems = check_prompts(backend, prompts, params)
    except Exception:  # noqa: BLE001 - a failing pre-check must not stop the calls themselves
        problems = [None] * len(prompts)
    for i, problem in enumerate(problems):
        if problem is not None:
            out[i] = failure(problem, "prompt_too_long")
    todo = [i for i in range(len(prompts)) if out[i] is None]
    for i, g in _call(backend, [prompts[i] for i in todo], params, [indices[i] for i in todo]):
        out[todo[i]] = g
    return [g for g in out if g is not None]


def _call(
    backend: Backend, prompts: list[str], params: DecodingParams, indices: list[int]
) -> list[tuple[int, Generation]]:
    if not prompts:
        return []
    try:
        return list(enumerate(backend.generate(prompts, params, indices)))
    except PartialFailure as e:
        pairs: list[tuple[int, Generation]] = []
        for i, (g, err) in enumerate(zip(e.results, e.errors, strict=True)):
            pairs.append((i, g if g is not None else failure(err or "no answer")))
        return pairs
    except Exception as e:  # noqa: BLE001 - isolated below
        if len(prompts) == 1:
            return [(0, failure(e))]
        pairs = []
        for i, (p, k) in enumerate(zip(prompts, indices, strict=True)):
            pairs.extend((i, g) for _, g in _call(backend, [p], params, [k]))
        return pairs


def failure_counts(generations: Sequence[Generation]) -> dict[str, Any]:
    """{"failed": n, "reasons": {reason: n}} over a list of results."""
    reasons: dict[str, int] = {}
    for g in generations:
        if is_failure(g):
            r = g.extra.get("reason", "error")
            reasons[r] = reasons.get(r, 0) + 1
    return {"failed": sum(reasons.values()), "reasons": reasons}


class FailureBudget:
    """Counts a stage's calls and failures and stops the run when too many fail for good.

    After each batch, `check` raises `TooManyFailures` when more than `max_fraction` of the calls
    so far failed and at least `min_calls` were made; at the end of the stage (`final=True`) a
    smaller stage stops only when every call failed, not all of them for over-long prompts (a
    re-run that asks again only a few poison prompts finishes). `max_fraction=1.0` never stops.

    Args:
        what: the stage and model, for the message ("stage 3 (flan-t5)").
        max_fraction: the largest tolerated fraction of failed calls, in [0, 1].
        min_calls: calls needed before a fraction is judged (a first unlucky call is no trend).
    """

    def __init__(self, what: str, max_fraction: float, min_calls: int = 10) -> None:
        if not 0.0 <= max_fraction <= 1.0:
            raise ValueError(f"max_fraction must be in [0, 1], got {max_fraction}")
        self.what = what
        self.max_fraction = max_fraction
        self.min_calls = min_calls
        self.tried = 0
        self.failed = 0
        self.too_long = 0
        self.last_error = ""

    def add(self, generations: Sequence[Generation]) -> None:
        for g in generations:
            self.tried += 1
            if is_failure(g):
                self.failed += 1
                self.too_long += g.extra.get("reason") == "prompt_too_long"
                self.last_error = str(g.extra.get("error", ""))

    def check(self, *, final: bool = False) -> None:
        from ..errors import TooManyFailures

        if not self.failed or self.max_fraction >= 1.0:
            return
        fraction = self.failed / self.tried
        too_many = fraction > self.max_fraction and self.tried >= self.min_calls
        # a small stage stops when every call failed, unless only prompts were too long (a re-run
        # asking again the few over-long prompts of a run must not stop it)
        all_failed = final and self.failed == self.tried and self.too_long < self.failed
        if too_many or all_failed:
            raise TooManyFailures(
                f"{self.what}: {self.failed} of {self.tried} calls failed for good "
                f"({fraction:.0%}, more than max_failed_fraction={self.max_fraction}); last error: "
                f"{self.last_error}. The run stopped so that a dead or misconfigured server does "
                "not turn into an empty dataset: fix the cause and run the same command again "
                "(answered calls are kept, failed ones are asked again)."
            )
