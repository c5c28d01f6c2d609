"""Ensemble-Instruct's own stages 1-2 (METHOD.md): per task type, numbered instruction prompts
(stage 1) and `instruction/input/output` instance prompts (stage 2), with the same LM.

Stage 1 runs in the shared round loop (`rounds.run_rounds`) with one group per task type: each
response's numbered instructions are judged in order (all of them, as the authors' code does, or
only the first with ``instruction.first_item_only``). Stage 2 asks for one instance per accepted
instruction, skipping ids already written; an answer that opens with a different instruction than
the one asked is rejected ("different_instruction"). Blocks an LM invents after its answer are
harvested as extra instances when ``instance.harvest_extra_blocks`` is on, if they pass every
stage-1 filter.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

from ..data.public import SeedTask
from ..engines.base import Backend, Generation, sampling_params
from ..engines.isolation import is_failure
from ..engines.resumable import generate_checked, load_records
from ..method.filters import NoveltyFilter, instruction_rejection
from ..method.parsing import parse_instance_verbose, parse_instructions
from ..method.prompts import END, SET_VERSIONS, Prompt, PromptSet, instance_demos
from ..method.prompts import VERSIONS as _PROMPT_VERSIONS
from ..method.records import harvested_instance, instance_record
from ..method.run_files import STAGE2
from .context import StageContext
from .hygiene import hygiene
from .rounds import Candidate, Group, PromptBuilder, failed_instance, run_rounds, stage2_batches

#: the prompt versions of this method's stages 1-2
VERSIONS = {k: _PROMPT_VERSIONS[k] for k in ("instruction", "instance")}


def stage1_instructions(ctx: StageContext, backend: Backend) -> dict[str, list[dict[str, Any]]]:
    """Generate instructions per task type until the target or the rounds budget is reached.

    Returns:
        Per type, the accepted instruction records in acceptance order.
    """
    cfg, st = ctx.config, ctx.config.instruction
    groups = [
        Group(
            name=t,
            target=cfg.num_instructions,
            seeds=ctx.seeds[t],
            rng_key=f"{cfg.seed}-stage1-{t}",
            build_prompt=_instruction_builder(
                ctx.prompt_set, t, st.num_seed_demos.get(t), st.num_generated_demos.get(t)
            ),
        )
        for t in cfg.task_types
    ]
    parse = _first_item if st.first_item_only else _every_item
    return run_rounds(
        ctx, backend, groups, parse=parse, params=sampling_params(st, (END,), cfg.seed)
    )


def _instruction_builder(
    prompt_set: PromptSet, task_type: str, num_seed: int | None, num_generated: int | None
) -> PromptBuilder:
    """The stage-1 prompt builder of one task type (the one call of `instruction_prompt`)."""

    def build(rng: random.Random, seeds: Sequence[SeedTask], generated: Sequence[str]) -> Prompt:
        return prompt_set.instruction_prompt(
            task_type, seeds, generated, rng, num_seed, num_generated
        )

    return build


def _every_item(gen: Generation, prompt: Prompt) -> list[Candidate]:
    """Every numbered instruction of a response, in order (the authors' code)."""
    return [Candidate(text, k) for k, text in enumerate(parse_instructions(gen.text))]


def _first_item(gen: Generation, prompt: Prompt) -> list[Candidate]:
    """Only the first numbered instruction of a response (`instruction.first_item_only`)."""
    return _every_item(gen, prompt)[:1]


def stage2_instances(
    ctx: StageContext, backend: Backend, instructions: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Generate and parse one instance per accepted instruction; returns every stage-2 record."""
    cfg, st = ctx.config, ctx.config.instance
    done = load_records(ctx.out / STAGE2, cfg.retry_failed)
    budget = ctx.budget(f"stage 2 ({cfg.generator.name})")
    demos = {
        t: instance_demos(t, ctx.seeds[t], st.num_demos.get(t), cfg.seed) for t in cfg.task_types
    }
    stops = (END, "\n\n") if st.stop_at_blank_line else (END,)
    params = sampling_params(st, stops, cfg.seed)
    harvest = _Harvester(ctx, instructions, done) if st.harvest_extra_blocks else None
    screen = hygiene(cfg).screen_instance
    valid = [sum(r["valid"] for r in done)]

    def step(chunk: Sequence[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        prompts = [
            ctx.prompt_set.instance_prompt(r["instruction"], r["task_type"], demos[r["task_type"]])
            for r in chunk
        ]
        gens = generate_checked(backend, [p.text for p in prompts], params, budget)
        for r, p, g in zip(chunk, prompts, gens, strict=True):
            records = [screen(x) for x in _instance_records(r, p, g, harvest)]
            done.extend(records)
            valid[0] += sum(x["valid"] for x in records)
            yield records

    stage2_batches(
        ctx,
        instructions,
        done,
        step,
        budget,
        "stage 2: instances",
        lambda: {"valid": valid[0], "invalid": len(done) - valid[0]},
    )
    return done


def _instance_records(
    asked: dict[str, Any], prompt: Prompt, gen: Generation, harvest: _Harvester | None
) -> list[dict[str, Any]]:
    """The stage-2 record of one answer, then the instances harvested from it (if asked to)."""
    if is_failure(gen):
        return [failed_instance(asked, prompt, gen)]
    inst, reason = parse_instance_verbose(gen.text, asked["task_type"], asked["instruction"])
    rec = instance_record(
        id=asked["id"],
        task_type=asked["task_type"],
        instruction=asked["instruction"],
        valid=inst is not None,
        reason=reason,
        input=inst.input if inst else None,
        output=inst.output if inst else None,
        raw=gen.text,
        finish_reason=gen.finish_reason,
        prompt_version=prompt.version,
    )
    if harvest is None or inst is None:
        return [rec]
    return [rec, *harvest.take(asked["id"], inst.extra_blocks)]


class _Harvester:
    """Turns blocks an LM invented into extra examples, if they pass every stage-1 filter."""

    def __init__(
        self, ctx: StageContext, instructions: list[dict[str, Any]], done: list[dict[str, Any]]
    ) -> None:
        st = ctx.config.instruction
        types = ctx.config.task_types
        self.types = set(types)
        self.version = SET_VERSIONS[ctx.config.prompts]["instance"]
        self.novelty = NoveltyFilter(
            {t: [s.instruction for s in ctx.seeds[t]] for t in types},
            threshold=st.novelty_threshold,
            keep_top=st.keep_top,
            with_mean=False,
        )
        for r in instructions:
            self.novelty.add(r["instruction"], r["task_type"])
        for r in done:
            if r.get("harvested_from"):
                self.novelty.add(r["instruction"], r["task_type"])

    def take(self, parent: str, blocks: Sequence[dict[str, str]]) -> list[dict[str, Any]]:
        out = []
        for k, b in enumerate(blocks):
            t = "A" if b.get("input") else "B"
            text = b["instruction"]
            if t not in self.types or not b.get("output"):
                continue
            if instruction_rejection(text) is not None:
                continue
            if not self.novelty.check(text, t).accepted:
                continue
            self.novelty.add(text, t)
            out.append(
                harvested_instance(
                    parent=parent,
                    index=k,
                    task_type=t,
                    instruction=text,
                    input=b.get("input", ""),
                    output=b["output"],
                    prompt_version=self.version,
                )
            )
        return out
