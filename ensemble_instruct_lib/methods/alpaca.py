"""The Alpaca baseline for stages 1-2 (Taori et al. 2023; METHOD.md "Baselines").

Stage 1: one prompt states the requirements for a batch of `tasks_per_call` (~20) diverse tasks
and shows 3 seed tasks as complete numbered examples (instruction, input or ``<noinput>``,
output, separated by ``###``); the LM continues with the next number, writing further tasks with
their input and output together. Each block is parsed into an (instruction, input, output) triple;
a block without an output is rejected as malformed, the last block of a response cut by the token
limit as truncated (as the original did); the rest go through the post-filters and the novelty
filter (Rouge-L > 0.7 rejects) against one pool: all seeds of the config's task types plus every
accepted instruction.

Stage 2 makes no LM call: it records each accepted task's input and output in the stage-2 format
(task type "A" when the input is non-empty, else "B"), so stages 3-4 run unchanged.

The prompt wording is this kit's; the structure and numbers are Alpaca's. Options come from
``config.method_options`` (`AlpacaOptions`), decoding from ``config.instruction`` (the original
sampled at temperature 1.0 with a 3072-token budget: set them there for a faithful run).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..data.public import SeedTask
from ..engines.base import Backend, Generation
from ..engines.resumable import load_records, run_batches
from ..method.prompts import Prompt, clean_instruction
from ..method.records import instance_record
from ..method.run_files import STAGE2
from .context import StageContext
from .hygiene import hygiene
from .rounds import (
    Candidate,
    baseline_group,
    check_count,
    instruction_params,
    method_options,
    run_rounds,
)

VERSIONS = {"batch": "alpaca-batch-v1"}
NO_INPUT = "<noinput>"
SEPARATOR = "###"

_FIELD = re.compile(r"(?im)^[ \t]*(?:\d{1,4}[ \t]*\.[ \t]*)?(instruction|input|output)[ \t]*:")


@dataclass
class AlpacaOptions:
    """``method_options`` of the Alpaca baseline.

    Attributes:
        num_seed_demos: seed tasks shown as complete examples (3).
        tasks_per_call: tasks the prompt asks for, demos included (20); the call stops at the
            number after it.
    """

    num_seed_demos: int = 3
    tasks_per_call: int = 20

    def __post_init__(self) -> None:
        check_count("num_seed_demos", self.num_seed_demos, 1)
        check_count("tasks_per_call", self.tasks_per_call, self.num_seed_demos + 1)


def _header(n: int) -> str:
    return (
        f"Write {n} varied tasks for teaching a language model to follow instructions. Rules:\n"
        "1. Use a different main verb in each instruction, and vary how they are phrased.\n"
        "2. Mix kinds of tasks: questions, classification, rewriting, brainstorming, reasoning, "
        "coding, writing and more.\n"
        "3. An instruction is one or two sentences of English: a request or a question.\n"
        f"4. When a task needs an input, give a concrete one of at most about 100 words; "
        f"otherwise write {NO_INPUT}.\n"
        "5. The output answers the instruction for that input correctly and not too long.\n"
        "6. A language model cannot see, hear or act, so no task asks for pictures, sound or "
        "actions.\n\n"
        f"List of {n} tasks:"
    )


def _task_block(k: int, instruction: str, inp: str, output: str) -> str:
    return (
        f"{SEPARATOR}\n{k}. Instruction: {instruction}\n{k}. Input:\n{inp or NO_INPUT}\n"
        f"{k}. Output:\n{output}"
    )


def batch_prompt(
    seeds: Sequence[SeedTask], rng: random.Random, num_seed: int = 3, num_tasks: int = 20
) -> Prompt:
    """The stage-1 prompt: requirements, `num_seed` seed tasks as examples, the next number."""
    picked = rng.sample(list(seeds), min(num_seed, len(seeds)))
    blocks = [
        _task_block(
            k,
            clean_instruction(s.instruction),
            s.instances[0].input.strip(),
            s.instances[0].output.strip(),
        )
        for k, s in enumerate(picked, start=1)
    ]
    text = "\n".join([_header(num_tasks), *blocks, f"{SEPARATOR}\n{len(picked) + 1}. Instruction:"])
    return Prompt(
        text,
        VERSIONS["batch"],
        {
            "seed_ids": [s.id for s in picked],
            "num_seed": len(picked),
            "num_generated": 0,
            "first_number": len(picked) + 1,
        },
    )


def batch_stops(num_tasks: int) -> tuple[str, ...]:
    """Stop once the LM starts the task numbered past the batch."""
    return (f"{num_tasks + 1}. Instruction:",)


def parse_tasks(raw: str, first_number: int, finish_reason: str = "stop") -> list[Candidate]:
    """The (instruction, input, output) blocks of a continued task list.

    `raw` is the text after the prompt's last ``N. Instruction:``. Blocks are split at ``###``;
    in each the first ``Instruction:``, ``Input:`` and ``Output:`` fields count (an optional
    number before each). ``<noinput>`` and a missing input mean "". Reasons: "malformed" (no
    instruction), "no_output", "empty_output", "truncated" (the last block of a response cut by
    the token limit).

    Returns:
        One `Candidate` per non-blank block, with `fields` input, output and block (its text).
    """
    text = f"{first_number}. Instruction:{raw}"
    blocks = [b.strip() for b in text.split(SEPARATOR)]
    blocks = [b for b in blocks if b]
    out = []
    for k, block in enumerate(blocks):
        matches = list(_FIELD.finditer(block))
        fields: dict[str, str] = {}
        for n, m in enumerate(matches):
            name = m.group(1).lower()
            end = matches[n + 1].start() if n + 1 < len(matches) else len(block)
            fields.setdefault(name, block[m.end() : end].strip())
        inp = fields.get("input", "")
        inp = "" if inp.lower() == NO_INPUT else inp
        output = fields.get("output")
        reason = None
        if "instruction" not in fields:
            reason = "malformed"
        elif output is None:
            reason = "no_output"
        elif not output:
            reason = "empty_output"
        c = Candidate(
            clean_instruction(fields.get("instruction", "")),
            k,
            reason,
            {"input": inp, "output": output, "block": block},
        )
        out.append(c)
    if out and finish_reason == "length":
        out[-1].reason = "truncated"
    return out


# ------------------------------------------------------------------------------------------
# the stages


def stage1_instructions(ctx: StageContext, backend: Backend) -> dict[str, list[dict[str, Any]]]:
    """Alpaca batch generation of whole tasks; returns {"all": accepted records}."""
    opts = method_options(ctx.config, AlpacaOptions)

    def build(rng: random.Random, seeds: Sequence[SeedTask], generated: Sequence[str]) -> Prompt:
        return batch_prompt(seeds, rng, opts.num_seed_demos, opts.tasks_per_call)

    def parse(g: Generation, p: Prompt) -> list[Candidate]:
        return parse_tasks(g.text, p.meta["first_number"], g.finish_reason)

    return run_rounds(
        ctx,
        backend,
        [baseline_group(ctx, build)],
        parse=parse,
        params=instruction_params(ctx, batch_stops(opts.tasks_per_call)),
    )


def stage2_instances(
    ctx: StageContext, backend: Backend, instructions: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Record the instances made in stage 1 in the stage-2 format (no LM call)."""
    path = ctx.out / STAGE2
    done = load_records(path, retry_failed=False)
    screen = hygiene(ctx.config).screen_instance

    def step(batch: Sequence[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        for r in batch:
            output = r.get("output") or ""
            inp = r.get("input") or ""
            rec = instance_record(
                id=r["id"],
                task_type="A" if inp else "B",
                instruction=r["instruction"],
                valid=bool(output.strip()),
                reason="ok" if output.strip() else "empty_output",
                input=inp,
                output=output or None,
                raw=r.get("block", ""),
                finish_reason=r.get("finish_reason"),
                prompt_version=r.get("prompt_version", VERSIONS["batch"]),
            )
            done.append(screen(rec))
            yield [rec]

    # one batch and no bar: nothing is asked of an LM
    run_batches(instructions, step, asked={r["id"] for r in done}, batch_size=None, path=path)
    return done


__all__ = [
    "NO_INPUT",
    "VERSIONS",
    "AlpacaOptions",
    "batch_prompt",
    "batch_stops",
    "parse_tasks",
    "stage1_instructions",
    "stage2_instances",
]
