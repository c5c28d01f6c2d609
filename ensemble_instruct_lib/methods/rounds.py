"""What every prompting method's stages 1-2 share: stage 1's one round loop (`run_rounds`) with
its candidate verdict (post-filters, then novelty), and the record of a stage-2 call that failed.
Stage 2 runs in the resumable per-item loop of `engines.resumable` (`run_batches`), which stage 3
and evaluation share. The run itself reaches a method as a `methods.context.StageContext`; the
run folder's file names are `method.run_files`.

A method (`methods.ensemble_instruct`, `methods.self_instruct`, `methods.alpaca`) supplies only its
groups (`Group`: a pool of instructions with its target, seeds and prompt builder), its response
parser and its decoding params; the loop owns the rounds, their determinism, resuming, the
rounds budget, the progress bar and the end-of-stage message. Records are built by
`method.records`, so stages 3-4 (`runs.stage3`, `runs.stage4`), exports, tables and plots work
for every method.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.jsonl import JsonlAppender, read_jsonl, write_jsonl
from ..data.public import SeedTask
from ..engines.base import Backend, DecodingParams, Generation, sampling_params
from ..engines.isolation import FailureBudget
from ..engines.resumable import progress_bar, run_batches
from ..errors import ConfigError
from ..method.filters import NoveltyFilter, instruction_rejection
from ..method.prompts import Prompt
from ..method.records import candidate_id, instance_record, stage1_candidate
from ..method.run_files import STAGE2, stage1_path
from .context import StageContext
from .hygiene import hygiene

log = logging.getLogger("ensemble_instruct")


# ------------------------------------------------------------------------------------------
# stages 2-3: calls that may fail one by one


def failed_instance(
    asked: dict[str, Any],
    prompt: Prompt,
    gen: Generation,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The stage-2 record of an instruction whose call failed for good (a failure marker)."""
    return instance_record(
        id=asked["id"],
        task_type=asked["task_type"],
        instruction=asked["instruction"],
        valid=False,
        reason=str(gen.extra.get("reason", "error")),
        input=None,
        output=None,
        raw="",
        finish_reason=gen.finish_reason,
        prompt_version=prompt.version,
        extra=extra,
        status="failed",
        error=str(gen.extra.get("error", "")),
    )


def stage2_batches(
    ctx: StageContext,
    instructions: Sequence[dict[str, Any]],
    done: Sequence[dict[str, Any]],
    step: Callable[[Sequence[dict[str, Any]]], Iterable[Sequence[dict[str, Any]]]],
    budget: FailureBudget,
    desc: str,
    postfix: Callable[[], dict[str, Any]] | None = None,
) -> None:
    """A method's stage 2 in `engines.resumable.run_batches`: the instructions whose ids are not
    in `done` (the records on file), in batches of ``instance.batch_size``, into the stage-2 file,
    under the run's progress bar."""
    run_batches(
        instructions,
        step,
        asked={r["id"] for r in done},
        batch_size=ctx.config.instance.batch_size,
        path=ctx.out / STAGE2,
        budget=budget,
        desc=desc,
        progress=ctx.progress,
        tokens=ctx.generated_tokens,
        postfix=postfix,
    )


# ------------------------------------------------------------------------------------------
# stage 1


def load_stage1(path: Path) -> list[dict[str, Any]]:
    """Records of complete rounds; a torn or partly written last round is cut off the file."""
    if not path.exists():
        return []
    records = read_jsonl(path)
    if not records:
        return []
    last = records[-1]["round"]
    in_last = [r for r in records if r["round"] == last]
    if len(in_last) < in_last[0]["round_size"]:
        kept = [r for r in records if r["round"] != last]
        write_jsonl(path, kept)
        log.info("%s: discarded a partly written round %d; it is redone from the cache", path, last)
        return kept
    return records


def judge_candidate(
    rec: dict[str, Any],
    accepted: list[dict[str, Any]],
    target: int,
    novelty: NoveltyFilter,
    reason: str | None = None,
    screen: Callable[[dict[str, Any]], str | None] | None = None,
) -> dict[str, Any]:
    """Fill in a candidate's verdict: target reached, a post-filter (or the given `reason`), the
    `screen` (decontamination, `hygiene.Hygiene.stage1_reason`), or the novelty decision; an
    accepted one gets its id and joins `accepted` and the novelty pool."""
    group = rec["task_type"]
    if len(accepted) >= target:
        rec["reason"] = "target_reached"
        return rec
    rec["reason"] = reason or instruction_rejection(rec["instruction"])
    if rec["reason"] is None and screen is not None:
        rec["reason"] = screen(rec)
    if rec["reason"] is not None:
        return rec
    d = novelty.check(rec["instruction"], group)
    rec.update(
        max_score=d.max_score,
        most_similar=[[s, sc] for s, sc in d.most_similar],
        mean_similarity=d.mean_similarity,
        reason=d.reason,
    )
    if d.accepted:
        novelty.add(rec["instruction"], group)
        rec["accepted"] = True
        rec["id"] = f"{group}-{len(accepted):05d}"
        accepted.append(rec)
    return rec


# ------------------------------------------------------------------------------------------
# method options and the baselines' one pool


#: The baselines keep one pool of instructions (Self-Instruct and Alpaca do not split by type).
GROUP = "all"


@dataclass
class Candidate:
    """One instruction parsed out of a response (a response may hold several).

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


def seed_pool(ctx: StageContext) -> list[SeedTask]:
    """The seeds a baseline draws from: every seed of the config's task types, in file order."""
    return [s for t in ctx.config.task_types for s in ctx.seeds[t]]


def target_count(ctx: StageContext) -> int:
    """Accepted instructions a baseline aims for: `num_instructions` per task type, in one pool
    (the same total as an Ensemble-Instruct run of the config)."""
    return ctx.config.num_instructions * len(ctx.config.task_types)


def instruction_params(ctx: StageContext, stop: Sequence[str]) -> DecodingParams:
    """Stage-1 sampling parameters from ``config.instruction`` with the method's stop strings."""
    return sampling_params(ctx.config.instruction, stop, ctx.config.seed)


# ------------------------------------------------------------------------------------------
# the stage-1 round loop (every method)


PromptBuilder = Callable[[random.Random, Sequence[SeedTask], Sequence[str]], Prompt]
ResponseParser = Callable[[Generation, Prompt], list[Candidate]]


@dataclass
class Group:
    """One pool of stage-1 instructions: its own file, target, novelty pool and rounds.

    Attributes:
        name: "A"/"B" (Ensemble-Instruct's task types) or "all" (the baselines' one pool); the
            file is ``stage1_instructions_<name>.jsonl`` and accepted ids are ``<name>-00000``...
        target: accepted instructions to reach.
        seeds: the seeds its prompts draw from; they also open its novelty pool.
        rng_key: round ``r`` builds its prompts with ``random.Random(f"{rng_key}-{r}")``, so a
            round's prompts depend only on (seed, method, group, round) and the accepted ones.
        build_prompt: ``(rng, seeds, accepted instruction texts) -> Prompt``.
    """

    name: str
    target: int
    seeds: Sequence[SeedTask]
    rng_key: str
    build_prompt: PromptBuilder


@dataclass
class _Pool:
    """A group's progress: its accepted records, the next round and the file it appends to."""

    group: Group
    accepted: list[dict[str, Any]]
    rejected: int
    next_round: int
    budget: int
    writer: JsonlAppender

    @property
    def active(self) -> bool:
        return len(self.accepted) < self.group.target and self.next_round < self.budget


def run_rounds(
    ctx: StageContext,
    backend: Backend,
    groups: Sequence[Group],
    *,
    parse: ResponseParser,
    params: DecodingParams,
) -> dict[str, list[dict[str, Any]]]:
    """Stage 1 of any method: rounds of prompts until each group's target or rounds budget.

    Each round sends, for every group still short of its target, ``instruction.prompts_per_round``
    prompts (one batch for all groups; sample index ``round * prompts_per_round + j``). Every
    candidate `parse` finds in a response goes, in order, through its parse-time reason, the
    post-filters and the novelty filter (the group's seeds plus everything accepted before it,
    candidates of the same response included). A response with no candidate yields one empty
    candidate (rejected as "empty"). A round's records are written when it is complete, with
    ``round_size`` = its candidates, so a partly written round is cut on resume and redone from
    the call cache. A group stops after ``instruction.rounds_budget(target)`` rounds, with a
    message, keeping what was accepted.

    Returns:
        Per group name, the accepted records in acceptance order.
    """
    st = ctx.config.instruction
    pools = [_open_pool(ctx, g) for g in groups]
    novelty = _novelty_pool(ctx, pools)
    screen = hygiene(ctx.config).stage1_reason
    bar = progress_bar(
        sum(g.target for g in groups),
        f"stage 1: instructions ({ctx.config.method})",
        ctx.progress,
        ctx.generated_tokens,
    )
    bar.update(sum(min(len(p.accepted), p.group.target) for p in pools))
    rejected = sum(p.rejected for p in pools)
    try:
        while active := [p for p in pools if p.active]:
            prompts = [
                (pool, j, prompt)
                for pool in active
                for j, prompt in enumerate(_round_prompts(pool, st.prompts_per_round))
            ]
            samples = [p.next_round * st.prompts_per_round + j for p, j, _ in prompts]
            gens = backend.generate([pr.text for _, _, pr in prompts], params, samples)
            for pool in active:
                mine = [
                    (j, pr, g) for (p, j, pr), g in zip(prompts, gens, strict=True) if p is pool
                ]
                records = _judge_round(pool, mine, parse, novelty, screen)
                pool.writer.extend(records)
                pool.next_round += 1
                rejected += sum(not r["accepted"] for r in records)
                bar.update(sum(r["accepted"] for r in records))
            bar.set_postfix(
                {p.group.name: len(p.accepted) for p in pools} | {"rejected": rejected},
                refresh=False,
            )
    finally:
        bar.close()
        for pool in pools:
            pool.writer.close()
    _report_shortfall(ctx.config.method, pools)
    return {p.group.name: p.accepted for p in pools}


def baseline_group(ctx: StageContext, build_prompt: PromptBuilder) -> Group:
    """The baselines' one pool: every seed of the config's types, `target_count` instructions,
    prompts drawn with ``Random(f"{seed}-{method}-stage1-{round}")``."""
    cfg = ctx.config
    return Group(
        name=GROUP,
        target=target_count(ctx),
        seeds=seed_pool(ctx),
        rng_key=f"{cfg.seed}-{cfg.method}-stage1",
        build_prompt=build_prompt,
    )


def _open_pool(ctx: StageContext, group: Group) -> _Pool:
    """A group's state from its file (a partly written last round is cut off first)."""
    path = stage1_path(ctx.out, group.name)
    records = load_stage1(path)
    accepted = [r for r in records if r["accepted"]]
    return _Pool(
        group=group,
        accepted=accepted,
        rejected=len(records) - len(accepted),
        next_round=records[-1]["round"] + 1 if records else 0,
        budget=ctx.config.instruction.rounds_budget(group.target),
        writer=JsonlAppender(path),
    )


def _novelty_pool(ctx: StageContext, pools: Sequence[_Pool]) -> NoveltyFilter:
    """The novelty filter of every group: its seeds, then what it accepted in earlier runs."""
    st = ctx.config.instruction
    novelty = NoveltyFilter(
        {p.group.name: [s.instruction for s in p.group.seeds] for p in pools},
        threshold=st.novelty_threshold,
        keep_top=st.keep_top,
        with_mean=st.with_mean_similarity,
    )
    for p in pools:
        for r in p.accepted:
            novelty.add(r["instruction"], p.group.name)
    return novelty


def _round_prompts(pool: _Pool, n: int) -> list[Prompt]:
    """The `n` prompts of a group's next round (a pure function of its rng key, the round and
    the accepted instructions)."""
    g = pool.group
    rng = random.Random(f"{g.rng_key}-{pool.next_round}")
    texts = [a["instruction"] for a in pool.accepted]
    return [g.build_prompt(rng, g.seeds, texts) for _ in range(n)]


def _judge_round(
    pool: _Pool,
    responses: Sequence[tuple[int, Prompt, Generation]],
    parse: ResponseParser,
    novelty: NoveltyFilter,
    screen: Callable[[dict[str, Any]], str | None] | None = None,
) -> list[dict[str, Any]]:
    """Every candidate of a group's round, in order (response, then position), with its verdict."""
    g, r = pool.group, pool.next_round
    records = []
    for j, prompt, gen in responses:
        for c in parse(gen, prompt) or [Candidate("", 0, None)]:
            rec = stage1_candidate(
                candidate=candidate_id(g.name, r, j, c.position),
                group=g.name,
                round_no=r,
                instruction=c.instruction,
                raw=gen.text,
                prompt_version=prompt.version,
                demo_seed_ids=prompt.meta.get("seed_ids", []),
                num_generated_demos=prompt.meta.get("num_generated", 0),
                position=c.position,
                finish_reason=gen.finish_reason,
                fields=c.fields,
            )
            records.append(judge_candidate(rec, pool.accepted, g.target, novelty, c.reason, screen))
    for rec in records:
        rec["round_size"] = len(records)
    return records


def _report_shortfall(method: str, pools: Sequence[_Pool]) -> None:
    """The end-of-stage message for every group that stopped short of its target."""
    for p in pools:
        if len(p.accepted) >= p.group.target:
            continue
        where = method if p.group.name == GROUP else f"{method}, type {p.group.name}"
        msg = (
            f"stage 1 ({where}): stopped after {p.next_round} rounds (the budget) with "
            f"{len(p.accepted)} of {p.group.target} instructions accepted; the run continues "
            "with them. Raise instruction.max_rounds or use a stronger generator."
        )
        log.warning(msg)
        print(msg)
