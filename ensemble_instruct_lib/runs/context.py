"""The run context: what a run's stages share while it runs (config, run dir, seeds, the prompt
set, the call cache, backends built or given, engines held for reuse, the token ledger and a
failure budget per stage).

`runs.pipeline.run` builds one per invocation; prompting methods read it through
`methods.context.StageContext`, stages 3-4 and the manifest use it whole. Not here: the files it
writes to (`method.run_files`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ..data.public import SeedTask
from ..engines.base import Backend, require_chat_template
from ..engines.cache import CachedBackend, CallCache
from ..engines.isolation import FailureBudget
from ..engines.ledger import CallLedger
from ..method.prompts import PromptSet, get_prompt_set
from .config import RunConfig


@dataclass
class RunContext:
    """What the stages share: config, run dir, seeds, the call cache and the backends."""

    config: RunConfig
    out: Path
    seeds: dict[str, list[SeedTask]]
    cache: CallCache
    overrides: dict[str, Backend] = field(default_factory=dict)
    progress: bool = True
    used: list[CachedBackend] = field(default_factory=list)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    ledger: CallLedger | None = None
    #: loaded engines kept open for a later spec with the same `backend_spec()` (the generator's
    #: weights answering again as a stage-3 member: no second load, its KV cache still warm)
    held: dict[str, Backend] = field(default_factory=dict)

    @staticmethod
    def engine_key(spec) -> str:
        """What makes two specs load the same engine: kind, model and options."""
        return json.dumps(spec.backend_spec(), sort_keys=True, default=str)

    def hold(self, spec, backend: CachedBackend) -> None:
        """Keep `backend`'s engine open for the next `backend()` of a spec with the same engine."""
        self.held[self.engine_key(spec)] = backend.inner

    def release_held(self) -> None:
        """Close engines held for reuse that nobody took."""
        while self.held:
            self.held.popitem()[1].close()

    def backend(self, spec) -> CachedBackend:
        """The cached backend for a model spec (an override given to `run` wins)."""
        from ..engines.factory import make_backend

        where = getattr(spec, "where", "")
        inner = (
            self.overrides.get(spec.name)
            or self.held.pop(self.engine_key(spec), None)
            or make_backend(spec.backend_spec(), where=where)
        )
        if getattr(spec, "chat", False):
            field_at = where[: -len(".model")] if where.endswith(".model") else where
            require_chat_template(inner, f"{field_at}.chat" if field_at else "")
        cb = CachedBackend(inner, self.cache, ledger=self.ledger, ledger_name=spec.name)
        self.used.append(cb)
        self.models[spec.name] = {**inner.describe(), "role": None}
        return cb

    @cached_property
    def prompt_set(self) -> PromptSet:
        """The run's prompt set (``config.prompts``), built on first use and kept, so stages 1-3
        share one; `runs.pipeline.run` sets the one it checked before loading any model."""
        return get_prompt_set(self.config.prompts, self.config.data_dir)

    def cache_stats(self) -> dict[str, int]:
        return {
            "hits": sum(b.hits for b in self.used),
            "misses": sum(b.misses for b in self.used),
        }

    def generated_tokens(self) -> int:
        """Completion tokens of the model calls this process made (progress bars' tok/s)."""
        return self.ledger.live_completion_tokens if self.ledger is not None else 0

    def budget(self, what: str) -> FailureBudget:
        """The failure budget of one stage and model (`config.max_failed_fraction`)."""
        return FailureBudget(what, getattr(self.config, "max_failed_fraction", 1.0))


__all__ = ["RunContext"]
