"""What a prompting method reads from the run it is part of, as two protocols.

Methods sit below the runs layer (`ensemble_instruct_lib.LAYERS`), so stages 1-2 do not name the
run's classes: they take any object with these fields. `runs.config.RunConfig` is a
`StageConfig` and `runs.context.RunContext` a `StageContext`; tests may pass lighter ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from ..data.public import SeedTask
from ..engines.isolation import FailureBudget
from ..method.prompts import PromptSet


class StageConfig(Protocol):
    """The run config fields stages 1-2 and their hygiene checks read."""

    method: str
    method_options: dict[str, Any]
    prompts: str
    seed: int
    num_instructions: int
    task_types: Sequence[str]
    data_dir: str | None
    retry_failed: bool
    generator: Any  # a model spec: ``.name``
    instruction: Any  # stage-1 settings: sampling, rounds, demos
    instance: Any  # stage-2 settings: sampling, batch size
    decontaminate: Any  # checks against evaluation sets
    degenerate: Any  # dropping looping instances


class StageContext(Protocol):
    """What stages 1-2 read from the run: its config and folder, the seeds by type, the prompt
    set (``config.prompts``, built once per run), whether to show progress, a failure budget per
    stage and the generated tokens so far."""

    config: StageConfig
    out: Path
    seeds: dict[str, list[SeedTask]]
    prompt_set: PromptSet
    progress: bool

    def budget(self, what: str) -> FailureBudget: ...

    def generated_tokens(self) -> int: ...


__all__ = ["StageConfig", "StageContext"]
