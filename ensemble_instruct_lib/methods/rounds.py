"""What every prompting method's stages 1-2 share: the run context, run-dir file names, progress
bars, chunking, and the stage-1 candidate record with its verdict (post-filters, then novelty).

Methods (`methods.ensemble_instruct`, `methods.self_instruct`, `methods.alpaca`) write the same
files with the same record fields through these helpers, so stages 3-4 (`runs.pipeline`), exports,
tables and plots work for all of them.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..data.jsonl import JsonlAppender, read_jsonl, write_jsonl
from ..data.public import SeedTask
from ..engines.base import Backend, DecodingParams, Generation, sampling_params
from ..engines.cache import CachedBackend, CallCache
from ..errors import ConfigError
from ..method.filters import NoveltyFilter, instruction_rejection
from ..method.prompts import Prompt

if TYPE_CHECKING:
    from ..runs.config import RunConfig

log = logging.getLogger("ensemble_instruct")

MANIFEST = "manifest.json"
STAGE2 = "stage2_instances.jsonl"
ENSEMBLED = "ensembled.jsonl"
DROPPED = "dropped.jsonl"
SINGLE = "single_output.jsonl"


def stage1_path(out: Path, task_type: str) -> Path:
    return out / f"stage1_instructions_{task_type}.jsonl"


def stage3_path(out: Path, model_name: str) -> Path:
    return out / f"stage3_outputs_{model_name}.jsonl"


def progress_bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True, leave=True)


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


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

    def backend(self, spec) -> CachedBackend:
        """The cached backend for a model spec (an override given to `run` wins)."""
        from ..engines.factory import make_backend

        inner = self.overrides.get(spec.name) or make_backend(
            spec.backend_spec(), where=getattr(spec, "where", "")
        )
        cb = CachedBackend(inner, self.cache)
        self.used.append(cb)
        self.models[spec.name] = {**inner.describe(), "role": None}
        return cb

    def cache_stats(self) -> dict[str, int]:
        return {
            "hits": sum(b.hits for b in self.used),
            "misses": sum(b.misses for b in self.used),
        }


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


def candidate_record(
    candidate: str,
    group: str,
    round_no: int,
    round_size: int | None,
    instruction: str,
    gen: Any,
    prompt: Any,
) -> dict[str, Any]:
    """A stage-1 candidate's record before its verdict (the schema every method writes)."""
    return {
        "candidate": candidate,
        "id": None,
        "task_type": group,
        "round": round_no,
        "round_size": round_size,
        "instruction": instruction,
        "raw": gen.text,
        "accepted": False,
        "reason": None,
        "max_score": None,
        "most_similar": [],
        "mean_similarity": None,
        "prompt_version": prompt.version,
        "demo_seed_ids": prompt.meta.get("seed_ids", []),
        "num_generated_demos": prompt.meta.get("num_generated", 0),
    }


def judge_candidate(
    rec: dict[str, Any],
    accepted: list[dict[str, Any]],
    target: int,
    novelty: NoveltyFilter,
    reason: str | None = None,
) -> dict[str, Any]:
    """Fill in a candidate's verdict: target reached, a post-filter (or the given `reason`), or
    the novelty decision; an accepted one gets its id and joins `accepted` and the novelty pool."""
    group = rec["task_type"]
    if len(accepted) >= target:
        rec["reason"] = "target_reached"
        return rec
    rec["reason"] = reason or instruction_rejection(rec["instruction"])
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
# methods whose one call yields several candidates (the baselines)


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
