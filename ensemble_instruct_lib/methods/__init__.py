"""Baseline prompting methods for stages 1-2 (METHOD.md "Baselines the kit also runs").

`pipeline.method_stages(method)` imports ``methods.<method>`` and calls its
``stage1_instructions(ctx, backend)`` and ``stage2_instances(ctx, backend, instructions)``. The
baselines write the same files with the same record fields as the Ensemble-Instruct stages
(``stage1_instructions_<group>.jsonl``, ``stage2_instances.jsonl``), through the same cached
backend, post-filters and `NoveltyFilter`, so stages 3-4, exports, tables and plots work unchanged.

- `self_instruct`: Self-Instruct (Wang et al. 2023): 8 numbered "Task N:" demos (6 seeds + 2
  generated), many instructions per call, one novelty pool over all seeds, an LM classification
  check, output-first instances for classification tasks and input-first for the rest.
- `alpaca`: Alpaca (Taori et al. 2023): one call asks for ~20 tasks with instruction, input and
  output together, from 3 seed demos; stage 2 only records the instances made in stage 1.

What they share lives here: the group name ("all": the baselines do not split seeds by type), the
method options read from the config, and `batch_stage1`, the round loop of a method whose one
call yields several candidates (deterministic per (seed, method, round), resumable like the
Ensemble-Instruct stage 1, bounded by `instruction.rounds_budget`). Not here: prompt text and
parsing (in each method's module), stages 3-4 (shared with the paper's method in `pipeline`).
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..backends.base import Backend, DecodingParams, Generation
from ..config import sampling_params
from ..data import SeedTask
from ..errors import ConfigError
from ..filters import NoveltyFilter
from ..jsonl import JsonlAppender
from ..pipeline import (
    RunContext,
    candidate_record,
    judge_candidate,
    load_stage1,
    progress_bar,
    stage1_path,
)
from ..prompts import Prompt

log = logging.getLogger("ensemble_instruct")

#: The baselines keep one pool of instructions (Self-Instruct and Alpaca do not split by type).
GROUP = "all"
METHODS = ("self_instruct", "alpaca")


@dataclass
class Candidate:
    """One instruction parsed out of a response that may hold several.

    Attributes:
        instruction: the cleaned instruction ("" when the response held none).
        position: its place in the response (0 = first).
        reason: a rejection found while parsing (e.g. "truncated", "no_output"), or None.
        fields: extra record fields the method keeps (Alpaca: the generated input and output).
    """

    instruction: str
    position: int = 0
    reason: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


def method_options(config: Any, cls: type) -> Any:
    """The method's options dataclass, built from ``config.method_options`` (absent: defaults).

    Raises:
        ConfigError: for unknown keys or bad values, naming the allowed keys.
    """
    given = getattr(config, "method_options", None) or {}
    if not isinstance(given, dict):
        raise ConfigError(f"method_options must be a mapping, got {type(given).__name__}")
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ConfigError(
            f"method_options: unknown key(s) {unknown} for method {config.method!r}; "
            f"allowed: {allowed}"
        )
    try:
        return cls(**given)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"method_options for {config.method!r}: {e}") from None


def check_count(name: str, value: Any, minimum: int) -> None:
    """Raise ValueError unless `value` is an integer >= `minimum` (for option dataclasses)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def seed_pool(ctx: RunContext) -> list[SeedTask]:
    """The seeds a baseline draws from: every seed of the config's task types, in file order."""
    return [s for t in ctx.config.task_types for s in ctx.seeds[t]]


def target_count(ctx: RunContext) -> int:
    """Accepted instructions a baseline aims for: `num_instructions` per task type, in one pool
    (the same total as an Ensemble-Instruct run of the config)."""
    return ctx.config.num_instructions * len(ctx.config.task_types)


def instruction_params(ctx: RunContext, stop: Sequence[str]) -> DecodingParams:
    """Stage-1 sampling parameters from ``config.instruction`` with the method's stop strings."""
    return sampling_params(ctx.config.instruction, stop, ctx.config.seed)


PromptBuilder = Callable[[random.Random, Sequence[SeedTask], Sequence[str]], Prompt]
ResponseParser = Callable[[Generation, Prompt], list[Candidate]]


def batch_stage1(
    ctx: RunContext,
    backend: Backend,
    *,
    build_prompt: PromptBuilder,
    parse: ResponseParser,
    params: DecodingParams,
) -> dict[str, list[dict[str, Any]]]:
    """Stage 1 of a method whose one call yields several candidate instructions.

    Each round sends `instruction.prompts_per_round` prompts built by `build_prompt(rng, seeds,
    accepted_texts)` with ``rng = Random(f"{seed}-{method}-stage1-{round}")``; every candidate
    `parse` finds goes, in order, through its parse-time reason, the post-filters and the novelty
    filter (one pool: all seeds of the config's types plus every accepted instruction). Records
    carry the Ensemble-Instruct stage-1 fields; `round_size` is the number of candidates of the
    round, so a partly written round is cut and redone from the call cache on resume.

    Returns:
        {"all": accepted records in acceptance order}.
    """
    cfg, st = ctx.config, ctx.config.instruction
    method = cfg.method
    target = target_count(ctx)
    path = stage1_path(ctx.out, GROUP)
    records = load_stage1(path)
    accepted = [r for r in records if r["accepted"]]
    seeds = seed_pool(ctx)
    novelty = NoveltyFilter(
        {GROUP: [s.instruction for s in seeds]},
        threshold=st.novelty_threshold,
        keep_top=st.keep_top,
        with_mean=st.with_mean_similarity,
    )
    for r in accepted:
        novelty.add(r["instruction"], GROUP)
    next_round = records[-1]["round"] + 1 if records else 0
    budget = st.rounds_budget(target)
    rejected = len(records) - len(accepted)
    bar = progress_bar(target, f"stage 1: instructions ({method})", ctx.progress)
    bar.update(min(len(accepted), target))
    try:
        with JsonlAppender(path) as out:
            while len(accepted) < target and next_round < budget:
                r = next_round
                rng = random.Random(f"{cfg.seed}-{method}-stage1-{r}")
                texts = [a["instruction"] for a in accepted]
                prompts = [build_prompt(rng, seeds, texts) for _ in range(st.prompts_per_round)]
                samples = [r * st.prompts_per_round + j for j in range(len(prompts))]
                gens = backend.generate([p.text for p in prompts], params, samples)
                round_records = []
                for j, (p, g) in enumerate(zip(prompts, gens, strict=True)):
                    for c in parse(g, p) or [Candidate("", 0, None)]:
                        rec = _judge(c, p, g, r, j, accepted, target, novelty)
                        round_records.append(rec)
                        rejected += not rec["accepted"]
                        bar.update(int(rec["accepted"]))
                for rec in round_records:
                    rec["round_size"] = len(round_records)
                    out.append(rec)
                next_round += 1
                bar.set_postfix({"accepted": len(accepted), "rejected": rejected}, refresh=False)
    finally:
        bar.close()
    if len(accepted) < target:
        msg = (
            f"stage 1 ({method}): stopped after {next_round} rounds (the budget) with "
            f"{len(accepted)} of {target} instructions accepted; the run continues with them. "
            "Raise instruction.max_rounds or use a stronger generator."
        )
        log.warning(msg)
        print(msg)
    return {GROUP: accepted}


def _judge(
    c: Candidate,
    p: Prompt,
    g: Generation,
    r: int,
    j: int,
    accepted: list[dict[str, Any]],
    target: int,
    novelty: NoveltyFilter,
) -> dict[str, Any]:
    rec = candidate_record(
        f"{GROUP}-r{r:04d}-p{j}-c{c.position:02d}", GROUP, r, None, c.instruction, g, p
    )
    rec.update(position=c.position, finish_reason=g.finish_reason, **c.fields)
    return judge_candidate(rec, accepted, target, novelty, c.reason)


def fake_backends(config: Any, agreement: float = 0.7) -> dict[str, Backend]:
    """Deterministic fake LMs for a config of any method (tests, offline demos; not a model).

    The generator speaks the config's method's formats (`fake.fake_generator` for
    Ensemble-Instruct, `self_instruct.fake_generator`, `alpaca.fake_generator`); the extra models
    are `fake.fake_answerer`s, which agree with the fake generators' outputs most of the time.
    """
    from .. import fake

    backends: dict[str, Backend] = dict(fake.fake_backends(config, agreement))
    if config.method in METHODS:
        import importlib

        mod = importlib.import_module(f".{config.method}", __package__)
        backends[config.generator.name] = mod.fake_generator(config.generator.model)
    return backends


__all__ = [
    "GROUP",
    "METHODS",
    "Candidate",
    "batch_stage1",
    "check_count",
    "fake_backends",
    "instruction_params",
    "method_options",
    "seed_pool",
    "target_count",
]
