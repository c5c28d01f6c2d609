"""Ensemble-Instruct's own stages 1-2 (METHOD.md): per task type, numbered instruction prompts
(stage 1) and `instruction/input/output` instance prompts (stage 2), with the same LM.

Stage 1 works in rounds; a round whose records were only partly written is discarded and redone
from the call cache (its prompts are rebuilt identically from the seed and the round number), so no
line is duplicated or lost and no model call is repeated. Stage 2 skips ids already written.
Bounded: stage 1 stops a type after `instruction.rounds_budget(...)` rounds even when the target
was not reached, with a message, keeping what was accepted.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from ..data.jsonl import JsonlAppender, read_jsonl
from ..engines.base import Backend, sampling_params
from ..method.filters import NoveltyFilter, instruction_rejection
from ..method.parsing import parse_instance_verbose, parse_instructions
from ..method.prompts import END, SET_VERSIONS, get_prompt_set, instance_demos
from ..method.prompts import VERSIONS as _PROMPT_VERSIONS
from .rounds import (
    STAGE2,
    RunContext,
    candidate_record,
    chunks,
    judge_candidate,
    load_stage1,
    log,
    progress_bar,
    stage1_path,
)

#: the prompt versions of this method's stages 1-2
VERSIONS = {k: _PROMPT_VERSIONS[k] for k in ("instruction", "instance")}


def stage1_instructions(ctx: RunContext, backend: Backend) -> dict[str, list[dict[str, Any]]]:
    """Generate instructions per type until the target or the rounds budget is reached.

    Returns:
        Per type, the accepted instruction records in acceptance order.
    """
    cfg, st = ctx.config, ctx.config.instruction
    types = list(cfg.task_types)
    target = cfg.num_instructions
    records = {t: load_stage1(stage1_path(ctx.out, t)) for t in types}
    accepted = {t: [r for r in records[t] if r["accepted"]] for t in types}
    novelty = NoveltyFilter(
        {t: [s.instruction for s in ctx.seeds[t]] for t in types},
        threshold=st.novelty_threshold,
        keep_top=st.keep_top,
        with_mean=st.with_mean_similarity,
    )
    for t in types:
        for r in accepted[t]:
            novelty.add(r["instruction"], t)
    next_round = {t: (records[t][-1]["round"] + 1 if records[t] else 0) for t in types}
    budget = st.rounds_budget(target)
    params = sampling_params(st, (END,), cfg.seed)
    prompt_set = get_prompt_set(cfg.prompts, cfg.data_dir)
    writers = {t: JsonlAppender(stage1_path(ctx.out, t)) for t in types}
    bar = progress_bar(target * len(types), "stage 1: instructions", ctx.progress)
    bar.update(sum(min(len(a), target) for a in accepted.values()))
    rejected = sum(len(records[t]) - len(accepted[t]) for t in types)
    try:
        while True:
            active = [t for t in types if len(accepted[t]) < target and next_round[t] < budget]
            if not active:
                break
            prompts, metas = [], []
            for t in active:
                r = next_round[t]
                rng = random.Random(f"{cfg.seed}-stage1-{t}-{r}")
                gen_texts = [a["instruction"] for a in accepted[t]]
                for j in range(st.prompts_per_round):
                    p = prompt_set.instruction_prompt(
                        t,
                        ctx.seeds[t],
                        gen_texts,
                        rng,
                        st.num_seed_demos.get(t),
                        st.num_generated_demos.get(t),
                    )
                    prompts.append(p.text)
                    metas.append((t, r, j, p))
            samples = [r * st.prompts_per_round + j for _, r, j, _ in metas]
            gens = backend.generate(prompts, params, samples)
            for (t, r, j, p), g in zip(metas, gens, strict=True):
                parsed = parse_instructions(g.text)
                text = parsed[0] if parsed else ""
                rec = candidate_record(f"{t}-r{r:04d}-p{j}", t, r, st.prompts_per_round, text, g, p)
                judge_candidate(rec, accepted[t], target, novelty)
                if rec["accepted"]:
                    bar.update(1)
                if not rec["accepted"]:
                    rejected += 1
                writers[t].append(rec)
            for t in active:
                next_round[t] += 1
            bar.set_postfix(
                {t: len(accepted[t]) for t in types} | {"rejected": rejected}, refresh=False
            )
    finally:
        bar.close()
        for w in writers.values():
            w.close()
    for t in types:
        if len(accepted[t]) < target:
            msg = (
                f"stage 1, type {t}: stopped after {next_round[t]} rounds (the budget) with "
                f"{len(accepted[t])} of {target} instructions accepted; the run continues with "
                "them. Raise instruction.max_rounds or use a stronger generator."
            )
            log.warning(msg)
            print(msg)
    return accepted


def stage2_instances(
    ctx: RunContext, backend: Backend, instructions: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Generate and parse one instance per accepted instruction; returns every stage-2 record."""
    cfg, st = ctx.config, ctx.config.instance
    path = ctx.out / STAGE2
    done = read_jsonl(path) if path.exists() else []
    done_ids = {r["id"] for r in done}
    demos = {
        t: instance_demos(t, ctx.seeds[t], st.num_demos.get(t), cfg.seed) for t in cfg.task_types
    }
    stops = (END, "\n\n") if st.stop_at_blank_line else (END,)
    params = sampling_params(st, stops, cfg.seed)
    prompt_set = get_prompt_set(cfg.prompts, cfg.data_dir)
    todo = [r for r in instructions if r["id"] not in done_ids]
    harvest = _Harvester(ctx, instructions, done) if st.harvest_extra_blocks else None
    bar = progress_bar(len(instructions), "stage 2: instances", ctx.progress)
    bar.update(len(instructions) - len(todo))
    valid = sum(r["valid"] for r in done)
    with JsonlAppender(path) as out:
        for chunk in chunks(todo, st.batch_size):
            prompts = [
                prompt_set.instance_prompt(r["instruction"], r["task_type"], demos[r["task_type"]])
                for r in chunk
            ]
            gens = backend.generate([p.text for p in prompts], params)
            for r, p, g in zip(chunk, prompts, gens, strict=True):
                inst, reason = parse_instance_verbose(g.text, r["task_type"])
                rec = {
                    "id": r["id"],
                    "task_type": r["task_type"],
                    "instruction": r["instruction"],
                    "valid": inst is not None,
                    "reason": reason,
                    "input": inst.input if inst else None,
                    "output": inst.output if inst else None,
                    "raw": g.text,
                    "finish_reason": g.finish_reason,
                    "prompt_version": p.version,
                    "harvested_from": None,
                }
                out.append(rec)
                done.append(rec)
                valid += rec["valid"]
                if harvest is not None and inst is not None:
                    for h in harvest.take(r["id"], inst.extra_blocks):
                        out.append(h)
                        done.append(h)
                        valid += h["valid"]
                bar.update(1)
            bar.set_postfix({"valid": valid, "invalid": len(done) - valid}, refresh=False)
    bar.close()
    return done


class _Harvester:
    """Turns blocks an LM invented into extra examples, if they pass every stage-1 filter."""

    def __init__(
        self, ctx: RunContext, instructions: list[dict[str, Any]], done: list[dict[str, Any]]
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
                {
                    "id": f"{parent}-h{k}",
                    "task_type": t,
                    "instruction": text,
                    "valid": True,
                    "reason": "ok",
                    "input": b.get("input", ""),
                    "output": b["output"],
                    "raw": None,
                    "finish_reason": None,
                    "prompt_version": self.version,
                    "harvested_from": parent,
                }
            )
        return out
