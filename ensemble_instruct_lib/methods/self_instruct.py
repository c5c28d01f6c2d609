"""The Self-Instruct baseline for stages 1-2 (Wang et al. 2023; METHOD.md "Baselines").

Stage 1: a prompt of 8 numbered demonstrations in a "Task N: ..." list (6 seeds + 2 accepted
instructions, seeds filling in while fewer exist, shuffled) ends with the next "Task N:"; the LM
continues the list, so one call yields several instructions. Every one is parsed, post-filtered
and judged for novelty (Rouge-L > 0.7 rejects) against one pool: all seeds of the config's task
types plus every instruction accepted so far. A response cut by the token limit loses its last
(likely unfinished) instruction, as in the original. Generation stops at a blank line or at
"Task <8 + tasks_per_call + 1>:".

Stage 2: the LM is asked, with a few-shot prompt built from the seeds' `is_classification` labels,
whether each accepted instruction is a classification task; classification tasks get an
output-first prompt (a class label, then an input of that class), the rest an input-first prompt
(an input, then the output; the output only when the task needs none). Both prompts' demonstrations
are seed tasks (deterministic for the run's seed). The first example of the response is kept, as
the Ensemble-Instruct stage 2 keeps one instance per instruction (the original kept several); its
task type is "A" when it has an input, else "B".

The prompt wording is this kit's; the structure and numbers are Self-Instruct's. Options come from
``config.method_options`` (`SelfInstructOptions`); decoding from ``config.instruction`` and
``config.instance``. Not reproduced: the original's 1024-token budget for stage 1 (set
``instruction.max_new_tokens``), its frequency/presence penalties, and several instances per task.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..data.public import SeedTask
from ..engines.base import Backend, DecodingParams, Generation, sampling_params
from ..engines.isolation import FailureBudget, is_failure
from ..engines.resumable import generate_checked, load_records
from ..method.prompts import Prompt, clean_instruction
from ..method.records import instance_record
from ..method.run_files import STAGE2
from .context import StageContext
from .hygiene import hygiene
from .rounds import (
    Candidate,
    baseline_group,
    check_count,
    failed_instance,
    instruction_params,
    method_options,
    run_rounds,
    seed_pool,
    stage2_batches,
)

VERSIONS = {
    "instruction": "si-instruction-v1",
    "classification": "si-classification-v1",
    "instance_input_first": "si-instance-input-first-v1",
    "instance_output_first": "si-instance-output-first-v1",
}
CLASSIFICATION_MODES = ("lm", "none")

_INSTRUCTION_HEADER = (
    "Here is a list of varied tasks. Continue it with new tasks, each one different from every "
    "task above."
)
_CLASSIFY_HEADER = (
    "For each task, say whether its answer is one label out of a small, fixed set of labels "
    "(Yes) or not (No)."
)
_INPUT_FIRST_HEADER = (
    "Write an example for each task: an input first, then the correct output. When a task needs "
    "no input, write the output only."
)
_OUTPUT_FIRST_HEADER = (
    "Each task below sorts inputs into classes. For each task, write a class label first, then an "
    "input that belongs to that class. When a task needs no input, write the label only."
)
_TASK_LINE = re.compile(r"(?m)^[ \t]*Task[ \t]*\d{1,4}[ \t]*[:.][ \t]*")
_FIELD = re.compile(r"(?im)^[ \t]*(input|output|class label)[ \t]*:")


@dataclass
class SelfInstructOptions:
    """``method_options`` of the Self-Instruct baseline (defaults: the paper's numbers).

    Attributes:
        num_seed_demos, num_generated_demos: stage-1 demonstrations (6 + 2).
        tasks_per_call: new tasks one call may write (the original stopped at "Task 16": 7).
        classification: "lm" asks the LM whether a task is classification; "none" treats every
            task as non-classification (all input-first: an ablation).
        classification_demos: demonstrations of the classification prompt (half of each label).
        instance_demos: demonstrations of each stage-2 prompt.
        classification_max_tokens: token budget of the Yes/No answer.
    """

    num_seed_demos: int = 6
    num_generated_demos: int = 2
    tasks_per_call: int = 7
    classification: str = "lm"
    classification_demos: int = 12
    instance_demos: int = 8
    classification_max_tokens: int = 4

    def __post_init__(self) -> None:
        check_count("num_seed_demos", self.num_seed_demos, 0)
        check_count("num_generated_demos", self.num_generated_demos, 0)
        if self.num_seed_demos + self.num_generated_demos < 1:
            raise ValueError("num_seed_demos + num_generated_demos must be >= 1")
        check_count("tasks_per_call", self.tasks_per_call, 1)
        if self.classification not in CLASSIFICATION_MODES:
            raise ValueError(
                f"classification must be one of {CLASSIFICATION_MODES}, got {self.classification!r}"
            )
        check_count("classification_demos", self.classification_demos, 2)
        check_count("instance_demos", self.instance_demos, 1)
        check_count("classification_max_tokens", self.classification_max_tokens, 1)


# ------------------------------------------------------------------------------------------
# prompts and parsers (pure functions)


def instruction_prompt(
    seeds: Sequence[SeedTask],
    generated: Sequence[str],
    rng: random.Random,
    num_seed: int = 6,
    num_generated: int = 2,
) -> Prompt:
    """Stage-1 prompt: a header, shuffled "Task N: ..." demos, then the next "Task N:".

    While fewer than `num_generated` accepted instructions exist, seeds take their places.
    """
    n_gen = min(num_generated, len(generated))
    n_seed = min(num_seed + num_generated - n_gen, len(seeds))
    demos = [(s.id, clean_instruction(s.instruction)) for s in rng.sample(list(seeds), n_seed)]
    demos += [(None, clean_instruction(g)) for g in rng.sample(list(generated), n_gen)]
    rng.shuffle(demos)
    lines = [_INSTRUCTION_HEADER]
    lines += [f"Task {i}: {text}" for i, (_, text) in enumerate(demos, start=1)]
    lines.append(f"Task {len(demos) + 1}:")
    return Prompt(
        text="\n".join(lines),
        version=VERSIONS["instruction"],
        meta={
            "seed_ids": [sid for sid, _ in demos if sid is not None],
            "num_seed": n_seed,
            "num_generated": n_gen,
            "num_demos": len(demos),
        },
    )


def instruction_stops(num_demos: int, tasks_per_call: int) -> tuple[str, ...]:
    """Stage-1 stop strings: a blank line, or the task number past the call's allowance."""
    return ("\n\n", f"Task {num_demos + tasks_per_call + 1}:")


def parse_task_list(raw: str, finish_reason: str = "stop") -> list[Candidate]:
    """The instructions of a continued "Task N:" list (the text after the prompt's last "Task N:").

    Empty items are skipped; when the response was cut by the token limit, the last item is
    kept with reason "truncated" (it is likely unfinished) instead of being judged.
    """
    items = [clean_instruction(p) for p in _TASK_LINE.split(raw)]
    items = [t for t in items if t]
    out = [Candidate(t, k) for k, t in enumerate(items)]
    if out and finish_reason == "length":
        out[-1].reason = "truncated"
    return out


def classification_demos(seeds: Sequence[SeedTask], n: int, seed: int) -> list[SeedTask]:
    """`n` seeds for the classification prompt, half labelled classification, shuffled."""
    rng = random.Random(f"{seed}-self_instruct-classification-demos")
    yes = [s for s in seeds if s.is_classification]
    no = [s for s in seeds if not s.is_classification]
    n_yes = min(n // 2, len(yes))
    picked = rng.sample(yes, n_yes) + rng.sample(no, min(n - n_yes, len(no)))
    rng.shuffle(picked)
    return picked


def classification_prompt(instruction: str, demos: Sequence[SeedTask]) -> Prompt:
    """Few-shot Yes/No prompt: is `instruction` a classification task?"""
    blocks = [
        f"Task: {clean_instruction(s.instruction)}\n"
        f"Classification: {'Yes' if s.is_classification else 'No'}"
        for s in demos
    ]
    text = (
        f"{_CLASSIFY_HEADER}\n\n" + "\n\n".join(blocks) + "\n\n"
        f"Task: {clean_instruction(instruction)}\nClassification:"
    )
    return Prompt(text, VERSIONS["classification"], {"seed_ids": [s.id for s in demos]})


def parse_classification(raw: str) -> bool | None:
    """True for an answer starting with "yes", False for "no", None otherwise."""
    words = re.findall(r"[a-z]+", raw.lower())
    if not words:
        return None
    return {"yes": True, "no": False}.get(words[0])


def instance_demos(
    seeds: Sequence[SeedTask], classification: bool, n: int, seed: int
) -> list[SeedTask]:
    """Stage-2 demonstrations: `n` classification seeds (output-first) or other seeds
    (input-first), deterministic for `seed`."""
    pool = [s for s in seeds if s.is_classification == classification]
    kind = "output-first" if classification else "input-first"
    return random.Random(f"{seed}-self_instruct-{kind}-demos").sample(pool, min(n, len(pool)))


def _demo_block(s: SeedTask, output_first: bool) -> str:
    inst = s.instances[0]
    lines = [f"Task: {clean_instruction(s.instruction)}"]
    inp, out = inst.input.strip(), inst.output.strip()
    if output_first:
        lines.append(f"Class label: {out}")
        if inp:
            lines.append(f"Input: {inp}")
    else:
        if inp:
            lines.append(f"Input: {inp}")
        lines.append(f"Output: {out}")
    return "\n".join(lines)


def instance_prompt(instruction: str, demos: Sequence[SeedTask], output_first: bool) -> Prompt:
    """Stage-2 prompt: header, "Task:" example blocks, then ``Task: <new>`` and a newline."""
    header = _OUTPUT_FIRST_HEADER if output_first else _INPUT_FIRST_HEADER
    body = "\n\n".join(_demo_block(s, output_first) for s in demos)
    text = f"{header}\n\n{body}\n\nTask: {clean_instruction(instruction)}\n"
    key = "instance_output_first" if output_first else "instance_input_first"
    return Prompt(text, VERSIONS[key], {"seed_ids": [s.id for s in demos]})


def parse_example(raw: str, output_first: bool) -> tuple[str | None, str | None, str]:
    """The first example of a stage-2 response.

    Fields are read in order until one repeats or, input-first, until the output has been read
    (either starts a second example); a value runs to the next field line. Input-first needs a non-empty ``Output:``; output-first a non-empty
    ``Class label:`` (the output). ``Input:`` is optional in both.

    Returns:
        (input, output, reason): input "" when absent; None, None and the reason
        ("no_output", "empty_output", "no_label", "empty_label") when invalid, else "ok".
    """
    matches = list(_FIELD.finditer(raw))
    fields: dict[str, str] = {}
    for k, m in enumerate(matches):
        name = " ".join(m.group(1).lower().split())
        if name in fields or (not output_first and "output" in fields):
            break
        end = matches[k + 1].start() if k + 1 < len(matches) else len(raw)
        fields[name] = raw[m.end() : end].strip()
    key, missing, empty = (
        ("class label", "no_label", "empty_label")
        if output_first
        else ("output", "no_output", "empty_output")
    )
    if key not in fields:
        return None, None, missing
    if not fields[key]:
        return None, None, empty
    return fields.get("input", ""), fields[key], "ok"


# ------------------------------------------------------------------------------------------
# the stages


def stage1_instructions(ctx: StageContext, backend: Backend) -> dict[str, list[dict[str, Any]]]:
    """Self-Instruct instruction generation; returns {"all": accepted records}."""
    opts = method_options(ctx.config, SelfInstructOptions)
    n_demos = opts.num_seed_demos + opts.num_generated_demos

    def build(rng: random.Random, seeds: Sequence[SeedTask], generated: Sequence[str]) -> Prompt:
        return instruction_prompt(
            seeds, generated, rng, opts.num_seed_demos, opts.num_generated_demos
        )

    def parse(g: Generation, p: Prompt) -> list[Candidate]:
        return parse_task_list(g.text, g.finish_reason)

    return run_rounds(
        ctx,
        backend,
        [baseline_group(ctx, build)],
        parse=parse,
        params=instruction_params(ctx, instruction_stops(n_demos, opts.tasks_per_call)),
    )


def stage2_instances(
    ctx: StageContext, backend: Backend, instructions: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Classify each accepted instruction, then generate one instance output- or input-first."""
    cfg, st = ctx.config, ctx.config.instance
    opts = method_options(cfg, SelfInstructOptions)
    done = load_records(ctx.out / STAGE2, cfg.retry_failed)
    budget = ctx.budget(f"stage 2 ({cfg.generator.name})")
    seeds = seed_pool(ctx)
    classify = _classifier(backend, opts, seeds, cfg.seed, budget)
    demos = {
        flag: instance_demos(seeds, flag, opts.instance_demos, cfg.seed) for flag in (True, False)
    }
    params = sampling_params(
        st, ("\nTask:", "\n\n") if st.stop_at_blank_line else ("\nTask:",), cfg.seed
    )
    screen = hygiene(cfg).screen_instance
    cls_version = VERSIONS["classification"] if opts.classification == "lm" else None

    def step(chunk: Sequence[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        answers = classify(chunk)
        texts = [None if a is None or is_failure(a) else a.text for a in answers]
        flags = [bool(t is not None and parse_classification(t)) for t in texts]
        # output-first needs classification seeds to show; without any, input-first it is
        firsts = [f and bool(demos[True]) for f in flags]
        prompts = [
            instance_prompt(r["instruction"], demos[o], o)
            for r, o in zip(chunk, firsts, strict=True)
        ]
        # an instruction whose classification call failed for good is not asked further
        ask = [k for k, a in enumerate(answers) if a is None or not is_failure(a)]
        got = generate_checked(backend, [prompts[k].text for k in ask], params, budget)
        gens: dict[int, Generation] = dict(zip(ask, got, strict=True))
        for k, (r, t, f, o, p) in enumerate(zip(chunk, texts, flags, firsts, prompts, strict=True)):
            extra = {
                "is_classification": f,
                "classification_raw": t,
                "classification_version": cls_version,
                "instance_format": "output_first" if o else "input_first",
            }
            g = gens.get(k) or answers[k]
            if g is None or is_failure(g):
                rec = failed_instance(r, p, g, extra)  # type: ignore[arg-type]
            else:
                inp, output, reason = parse_example(g.text, o)
                rec = instance_record(
                    id=r["id"],
                    task_type="A" if inp else "B",
                    instruction=r["instruction"],
                    valid=output is not None,
                    reason=reason,
                    input=inp,
                    output=output,
                    raw=g.text,
                    finish_reason=g.finish_reason,
                    prompt_version=p.version,
                    extra=extra,
                )
            done.append(screen(rec))
            yield [rec]

    stage2_batches(ctx, instructions, done, step, budget, "stage 2: instances (self_instruct)")
    return done


def _classifier(
    backend: Backend,
    opts: SelfInstructOptions,
    seeds: Sequence[SeedTask],
    seed: int,
    budget: FailureBudget,
) -> Callable[[Sequence[dict[str, Any]]], list[Generation | None]]:
    """The LM's Yes/No answers for a batch of instruction records (failure markers where the
    call failed for good; all None when ``classification`` is "none": no question is asked)."""
    demos = classification_demos(seeds, opts.classification_demos, seed)
    params = DecodingParams(
        do_sample=False, max_new_tokens=opts.classification_max_tokens, stop=("\n",), seed=seed
    )

    def classify(chunk: Sequence[dict[str, Any]]) -> list[Generation | None]:
        if opts.classification != "lm":
            return [None] * len(chunk)
        prompts = [classification_prompt(r["instruction"], demos).text for r in chunk]
        return list(generate_checked(backend, prompts, params, budget))

    return classify


__all__ = [
    "VERSIONS",
    "SelfInstructOptions",
    "classification_demos",
    "classification_prompt",
    "instance_demos",
    "instance_prompt",
    "instruction_prompt",
    "instruction_stops",
    "parse_classification",
    "parse_example",
    "parse_task_list",
    "stage1_instructions",
    "stage2_instances",
]
