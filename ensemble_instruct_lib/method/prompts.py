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

Two named prompt sets (`get_prompt_set`):

- `kit`: the wording above, ours (the module-level builders; the default, for compatibility).
- `reference`: the authors' exact text, read as data from their pinned files (`data.reference`):
  one stage-1 header for both types with their demonstration cleaning, and for stage 2 one fixed
  text per type (its demonstrations are part of the text, not sampled from the seeds), followed by
  a space, the new instruction and a newline; the zero-shot stage-3 prompt keeps the newline after
  an instruction without input. Demonstrations of stage 1 are sampled exactly as in `kit`, so both
  sets show the same demonstration list for the same random state. The authors' files have no
  few-shot stage-3 prompt: the `reference` few-shot prompt is their stage-2 text with the new
  instruction and input filled in (our assembly, versioned as such).

The structure and the numbers are the method's. Every builder returns a `Prompt` whose `version`
(one per set and stage) is stored with what the prompt produced. Change a template, bump its
version. Demonstrations come from the seed-task data, never from text in this file.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.public import REFERENCE_COMMIT, SeedTask
from ..data.reference import ReferenceTemplates, load_reference, render
from ..errors import ConfigError

END = "|EoS|"

#: the `kit` set's versions (the module-level builders)
VERSIONS = {
    "instruction": "ei-instruction-v1",
    "instance": "ei-instance-v1",
    "output_zero_shot": "ei-output-zs-v1",
    "output_few_shot": "ei-output-fs-v1",
}
_REF = f"ref-{REFERENCE_COMMIT[:7]}"
#: the prompt versions of each named set, per stage
SET_VERSIONS: dict[str, dict[str, str]] = {
    "kit": VERSIONS,
    "reference": {
        "instruction": f"{_REF}-instruction-v1",
        "instance": f"{_REF}-instance-v1",
        "output_zero_shot": f"{_REF}-output-zs-v1",
        "output_few_shot": f"{_REF}-output-fs-v1",
    },
}
PROMPT_SETS = tuple(SET_VERSIONS)

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


def pick_instruction_demos(
    task_type: str,
    seeds: Sequence[SeedTask],
    generated: Sequence[str],
    rng: random.Random,
    num_seed: int | None = None,
    num_generated: int | None = None,
) -> list[tuple[str | None, str]]:
    """Stage-1 demonstrations, shuffled: (seed id or None for a generated one, raw text).

    Args:
        task_type: "A" or "B"; `seeds` must all be of this type.
        seeds: the seed tasks of this type.
        generated: instructions of this type accepted so far.
        rng: the random source (same state, same demos).
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
    demos: list[tuple[str | None, str]] = [(s.id, s.instruction) for s in picked_seeds]
    demos += [(None, g) for g in picked_gen]
    rng.shuffle(demos)
    return demos


def _instruction_meta(task_type: str, demos: Sequence[tuple[str | None, str]]) -> dict[str, Any]:
    seed_ids = [sid for sid, _ in demos if sid is not None]
    return {
        "task_type": task_type,
        "seed_ids": seed_ids,
        "num_seed": len(seed_ids),
        "num_generated": len(demos) - len(seed_ids),
    }


def instruction_text(task_type: str, demos: Sequence[str]) -> str:
    """The `kit` stage-1 prompt for a given demonstration list (raw texts, in order)."""
    _check_type(task_type)
    lines = [_INSTRUCTION_HEADER[task_type]]
    lines += [f"{i}. {clean_instruction(text)} {END}" for i, text in enumerate(demos, start=1)]
    lines.append(f"{len(demos) + 1}.")
    return "\n".join(lines)


def instruction_prompt(
    task_type: str,
    seeds: Sequence[SeedTask],
    generated: Sequence[str],
    rng: random.Random,
    num_seed: int | None = None,
    num_generated: int | None = None,
) -> Prompt:
    """Stage-1 prompt (`kit` set): shuffled numbered demos, then the next number.

    Args: as `pick_instruction_demos`.
    """
    demos = pick_instruction_demos(task_type, seeds, generated, rng, num_seed, num_generated)
    return Prompt(
        text=instruction_text(task_type, [t for _, t in demos]),
        version=VERSIONS["instruction"],
        meta=_instruction_meta(task_type, demos),
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


# --------------------------------------------------------------------------------------------
# named prompt sets


class PromptSet:
    """One named prompt set: the builders of stages 1-3 and their versions.

    The `kit` set is this module's builders; `ReferencePromptSet` overrides the text.
    """

    name = "kit"

    @property
    def versions(self) -> dict[str, str]:
        return dict(SET_VERSIONS[self.name])

    def instruction_text(self, task_type: str, demos: Sequence[str]) -> str:
        """The stage-1 prompt for a given demonstration list (raw texts, in order)."""
        return instruction_text(task_type, demos)

    def instruction_prompt(
        self,
        task_type: str,
        seeds: Sequence[SeedTask],
        generated: Sequence[str],
        rng: random.Random,
        num_seed: int | None = None,
        num_generated: int | None = None,
    ) -> Prompt:
        """Stage-1 prompt; the demonstrations are picked by `pick_instruction_demos`."""
        demos = pick_instruction_demos(task_type, seeds, generated, rng, num_seed, num_generated)
        return Prompt(
            text=self.instruction_text(task_type, [t for _, t in demos]),
            version=self.versions["instruction"],
            meta=_instruction_meta(task_type, demos),
        )

    def instance_prompt(
        self, instruction: str, task_type: str, demos: Sequence[SeedTask]
    ) -> Prompt:
        """Stage-2 prompt (`demos`: from `instance_demos`; unused by a fixed-text set)."""
        return instance_prompt(instruction, task_type, demos)

    def output_prompt(
        self,
        instruction: str,
        input: str,  # noqa: A002
        *,
        style: str = "zero_shot",
        task_type: str | None = None,
        demos: Sequence[SeedTask] = (),
    ) -> Prompt:
        """Stage-3 prompt (see `output_prompt`)."""
        return output_prompt(instruction, input, style=style, task_type=task_type, demos=demos)


class ReferencePromptSet(PromptSet):
    """The authors' exact prompts, from the templates read by `data.reference.load_reference`."""

    name = "reference"

    def __init__(self, templates: ReferenceTemplates) -> None:
        self.templates = templates

    def instruction_text(self, task_type: str, demos: Sequence[str]) -> str:
        _check_type(task_type)
        t = self.templates
        lines = [
            render(t.instruction_line, number=i, instruction=d) for i, d in enumerate(demos, 1)
        ]
        return (
            t.instruction_header
            + "".join(lines)
            + render(t.instruction_next, number=len(demos) + 1)
        )

    def instance_prefix(self, task_type: str) -> str:
        """The fixed text every stage-2 prompt of `task_type` starts with."""
        _check_type(task_type)
        return self.templates.instance[task_type]

    def instance_prompt(
        self, instruction: str, task_type: str, demos: Sequence[SeedTask] = ()
    ) -> Prompt:
        """The type's fixed text, a space, the instruction (whitespace collapsed), a newline."""
        text = f"{self.instance_prefix(task_type)} {' '.join(instruction.split())}\n"
        return Prompt(
            text=text,
            version=self.versions["instance"],
            meta={"task_type": task_type, "seed_ids": []},
        )

    def output_prompt(
        self,
        instruction: str,
        input: str,  # noqa: A002
        *,
        style: str = "zero_shot",
        task_type: str | None = None,
        demos: Sequence[SeedTask] = (),
    ) -> Prompt:
        """Zero-shot: the authors' expression. Few-shot: their stage-2 text, filled in."""
        if style == "zero_shot":
            text = render(self.templates.zero_shot, instruction=instruction, input=input)
            return Prompt(text, self.versions["output_zero_shot"])
        if style != "few_shot":
            raise ValueError(f"style must be 'zero_shot' or 'few_shot', got {style!r}")
        task_type = task_type or ("A" if input.strip() else "B")
        inp = f"\ninput: {input.strip()}" if task_type == "A" else ""
        text = f"{self.instance_prefix(task_type)} {' '.join(instruction.split())}{inp}\noutput:"
        return Prompt(
            text=text,
            version=self.versions["output_few_shot"],
            meta={"task_type": task_type, "seed_ids": []},
        )


KIT = PromptSet()


def get_prompt_set(
    name: str = "kit", data_dir: str | Path | None = None, folder: str | Path | None = None
) -> PromptSet:
    """The named prompt set.

    Args:
        name: "kit" or "reference".
        data_dir: the data folder holding `ensemble_instruct/` (default: `EI_DATA_DIR`, else the
            fetched copy); for `reference` only.
        folder: a checkout of the authors' repository to read instead; for `reference` only.

    Raises:
        ConfigError: an unknown name. DataError: the authors' files are missing or differ.
    """
    if name == "kit":
        return KIT
    if name == "reference":
        return ReferencePromptSet(load_reference(folder, data_dir))
    raise ConfigError(f"prompts must be one of {list(PROMPT_SETS)}, got {name!r}")


def prompt_token_count(text: str, tokenizer: Any = None) -> int:
    """Length of a prompt in tokens for `tokenizer` (a HF tokenizer), else in whitespace words."""
    if tokenizer is None:
        return len(text.split())
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])
