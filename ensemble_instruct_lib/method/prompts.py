"""Versioned prompt builders for METHOD.md stages 1-3, per task type.

- Stage 1, instruction generation: a one-line request, a shuffled numbered list of demonstration
  instructions (type A: 20 seeds + up to 4 generated; type B: 8 + 2, the paper's numbers; both
  configurable; seeds fill in while fewer generated ones exist), each ending in the end marker,
  then the next number so the LM writes exactly one new instruction.
- Stage 2, instance generation: a one-line statement of the job, `instruction:` / `input:` /
  `output:` blocks (type A, 18 of them) or `instruction:` / `output:` blocks (type B, 15) built from
  the seed tasks of that type, each ending in the end marker, then the new `instruction:` line.
- Stage 3, output generation: a zero-shot prompt for instruction-tuned LMs (the instruction, a
  newline, the input) and a few-shot prompt in the stage-2 format for vanilla LMs.

The wording is ours; the structure and the numbers are the method's. Every builder returns a
`Prompt` whose `version` is stored with what the prompt produced. Change a template, bump its
version. Demonstrations come from the seed-task data, never from text in this file.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..data.public import SeedTask

END = "|EoS|"

VERSIONS = {
    "instruction": "ei-instruction-v1",
    "instance": "ei-instance-v1",
    "output_zero_shot": "ei-output-zs-v1",
    "output_few_shot": "ei-output-fs-v1",
}

#: METHOD.md defaults: (seed demos, generated demos) for instruction generation, per type.
INSTRUCTION_DEMOS = {"A": (20, 4), "B": (8, 2)}
#: METHOD.md defaults: demonstrations for instance generation, per type.
INSTANCE_DEMOS = {"A": 18, "B": 15}

_INSTRUCTION_HEADER = {
    "A": "Come up with a series of tasks, each one needing an input to work on:",
    "B": "Come up with a series of tasks, each one answerable without any further input:",
}
_INSTANCE_HEADER = {
    "A": "For each task instruction, write an input for it and then the correct output.",
    "B": "For each task instruction, write the correct output.",
}


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt and where it came from.

    Attributes:
        text: the prompt sent to the LM.
        version: the builder's version string.
        meta: provenance (task type, demo seed ids, demo counts).
    """

    text: str
    version: str
    meta: dict[str, Any] = field(default_factory=dict)


def clean_instruction(text: str) -> str:
    """Collapse whitespace and drop a trailing colon (how demos and parsed instructions look)."""
    text = " ".join(text.split())
    if text.endswith(":"):
        text = text[:-1].rstrip()
    return text


def _check_type(task_type: str) -> None:
    if task_type not in ("A", "B"):
        raise ValueError(f"task_type must be 'A' or 'B', got {task_type!r}")


def instruction_prompt(
    task_type: str,
    seeds: Sequence[SeedTask],
    generated: Sequence[str],
    rng: random.Random,
    num_seed: int | None = None,
    num_generated: int | None = None,
) -> Prompt:
    """Stage-1 prompt: shuffled numbered demos, then the next number.

    Args:
        task_type: "A" or "B"; `seeds` must all be of this type.
        seeds: the seed tasks of this type.
        generated: instructions of this type accepted so far.
        rng: the random source (same state, same prompt).
        num_seed, num_generated: demo counts (defaults: METHOD.md's per type). While fewer than
            `num_generated` generated instructions exist, extra seeds take their places.
    """
    _check_type(task_type)
    d_seed, d_gen = INSTRUCTION_DEMOS[task_type]
    num_seed = d_seed if num_seed is None else num_seed
    num_generated = d_gen if num_generated is None else num_generated
    if num_seed < 0 or num_generated < 0 or num_seed + num_generated < 1:
        raise ValueError("demo counts must be >= 0 and add up to at least 1")
    wrong = [s.id for s in seeds if s.task_type != task_type]
    if wrong:
        raise ValueError(f"seeds of another type given for type {task_type}: {wrong[:3]}")
    n_gen = min(num_generated, len(generated))
    n_seed = min(num_seed + (num_generated - n_gen), len(seeds))
    picked_seeds = rng.sample(list(seeds), n_seed)
    picked_gen = rng.sample(list(generated), n_gen)
    demos = [(s.id, clean_instruction(s.instruction)) for s in picked_seeds]
    demos += [(None, clean_instruction(g)) for g in picked_gen]
    rng.shuffle(demos)
    lines = [_INSTRUCTION_HEADER[task_type]]
    lines += [f"{i}. {text} {END}" for i, (_, text) in enumerate(demos, start=1)]
    lines.append(f"{len(demos) + 1}.")
    return Prompt(
        text="\n".join(lines),
        version=VERSIONS["instruction"],
        meta={
            "task_type": task_type,
            "seed_ids": [sid for sid, _ in demos if sid is not None],
            "num_seed": n_seed,
            "num_generated": n_gen,
        },
    )


def _block(instruction: str, inp: str | None, output: str | None) -> str:
    parts = [f"instruction: {instruction}"]
    if inp is not None:
        parts.append(f"input: {inp}")
    parts.append("output:" if output is None else f"output: {output}")
    return "\n".join(parts)


def instance_demos(
    task_type: str, seeds: Sequence[SeedTask], num_demos: int | None, seed: int
) -> list[SeedTask]:
    """The seed tasks used as stage-2 demonstrations: deterministic for a given `seed`."""
    _check_type(task_type)
    pool = [s for s in seeds if s.task_type == task_type]
    n = INSTANCE_DEMOS[task_type] if num_demos is None else num_demos
    if n < 1:
        raise ValueError(f"num_demos must be >= 1, got {n}")
    return random.Random(f"instance-demos-{task_type}-{seed}").sample(pool, min(n, len(pool)))


def _demo_text(task_type: str, demos: Sequence[SeedTask]) -> str:
    blocks = []
    for s in demos:
        inst = s.instances[0]
        inp = inst.input.strip() if task_type == "A" else None
        blocks.append(
            _block(clean_instruction(s.instruction), inp, inst.output.strip()) + f"\n{END}"
        )
    return "\n\n".join(blocks)


def instance_prompt(instruction: str, task_type: str, demos: Sequence[SeedTask]) -> Prompt:
    """Stage-2 prompt: header, demo blocks, then `instruction: <new>` and a newline."""
    _check_type(task_type)
    text = (
        f"{_INSTANCE_HEADER[task_type]}\n\n{_demo_text(task_type, demos)}\n\n"
        f"instruction: {clean_instruction(instruction)}\n"
    )
    return Prompt(
        text=text,
        version=VERSIONS["instance"],
        meta={"task_type": task_type, "seed_ids": [s.id for s in demos]},
    )


def zero_shot_output_prompt(instruction: str, input: str = "") -> str:  # noqa: A002
    """Stage-3 prompt for instruction-tuned LMs: the instruction, a newline, the input."""
    instruction, input = instruction.strip(), input.strip()  # noqa: A001
    return f"{instruction}\n{input}" if input else instruction


def output_prompt(
    instruction: str,
    input: str,  # noqa: A002
    *,
    style: str = "zero_shot",
    task_type: str | None = None,
    demos: Sequence[SeedTask] = (),
) -> Prompt:
    """Stage-3 prompt.

    Args:
        style: "zero_shot" (instruction-tuned LMs) or "few_shot" (vanilla LMs: stage-2 demos of
            the example's type, then the instruction and input filled in, ending at `output:`).
        task_type: needed for few-shot; defaults to "A" when `input` is non-empty, else "B".
    """
    if style == "zero_shot":
        return Prompt(zero_shot_output_prompt(instruction, input), VERSIONS["output_zero_shot"])
    if style != "few_shot":
        raise ValueError(f"style must be 'zero_shot' or 'few_shot', got {style!r}")
    task_type = task_type or ("A" if input.strip() else "B")
    _check_type(task_type)
    if not demos:
        raise ValueError("few-shot output prompts need demonstrations (instance_demos(...))")
    inp = input.strip() if task_type == "A" else None
    text = f"{_INSTANCE_HEADER[task_type]}\n\n{_demo_text(task_type, demos)}\n\n" + _block(
        clean_instruction(instruction), inp, None
    )
    return Prompt(
        text=text,
        version=VERSIONS["output_few_shot"],
        meta={"task_type": task_type, "seed_ids": [s.id for s in demos]},
    )


def prompt_token_count(text: str, tokenizer: Any = None) -> int:
    """Length of a prompt in tokens for `tokenizer` (a HF tokenizer), else in whitespace words."""
    if tokenizer is None:
        return len(text.split())
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])
