"""Steps of notebook 01 (prompt design): seeds, rendered stage-1/2 prompts with their lengths and
drawn demos, and a probe that sends one prompt to a backend and judges the response."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ...data.public import SeedTask, load_seed_tasks, split_by_type
from ...method.prompts import (
    END,
    INSTANCE_DEMOS,
    INSTRUCTION_DEMOS,
    Prompt,
    instance_demos,
    instance_prompt,
    instruction_prompt,
    prompt_token_count,
)
from ...runs.config import InstanceStage, InstructionStage, sampling_params
from ...runs.notebooks import resolve_path
from .configs import (
    PromptDesignConfig,  # noqa: F401 - re-exported for the notebook
    check_task_type,
    config_table,  # noqa: F401 - re-exported for the notebook
)

# --------------------------------------------------------------------------------------------
# notebook 01: prompt design


def load_seeds(config: PromptDesignConfig) -> list[SeedTask]:
    """The seed tasks of `config.seed_file` (relative to the repository root), else the default."""
    return load_seed_tasks(resolve_path(config.seed_file) if config.seed_file else None)


def seed_overview(seeds: Sequence[SeedTask]) -> pd.DataFrame:
    """Per task type: seeds, classification share, mean instruction length in words."""
    rows = []
    for t, group in split_by_type(list(seeds)).items():
        words = [len(s.instruction.split()) for s in group]
        rows.append(
            {
                "task_type": t,
                "seeds": len(group),
                "classification": sum(s.is_classification for s in group),
                "mean_instruction_words": round(sum(words) / len(words), 1) if words else 0.0,
            }
        )
    return pd.DataFrame(rows)


def design_prompt(
    stage: str,
    task_type: str,
    seeds: Sequence[SeedTask],
    *,
    num_seed: int | None = None,
    num_generated: int | None = None,
    num_instance_demos: int | None = None,
    random_seed: int = 0,
    generated: Sequence[str] = (),
    instruction: str = "",
) -> Prompt:
    """One stage-1 ("instruction") or stage-2 ("instance") prompt, as the pipeline builds it.

    The stage-1 draw uses ``random.Random(random_seed)``; stage-2 demos are
    `prompts.instance_demos` for `random_seed`; `instruction` is the new instruction a stage-2
    prompt ends with.
    """
    check_task_type(task_type)
    pool = split_by_type(list(seeds))[task_type]
    if stage == "instruction":
        return instruction_prompt(
            task_type, pool, list(generated), random.Random(random_seed), num_seed, num_generated
        )
    if stage == "instance":
        demos = instance_demos(task_type, pool, num_instance_demos, random_seed)
        return instance_prompt(instruction, task_type, demos)
    raise ValueError(f"stage must be 'instruction' or 'instance', got {stage!r}")


def load_tokenizer(name_or_path: str | None) -> Any:
    """A `transformers` tokenizer for token counts, or None (counts are then whitespace words)."""
    if name_or_path is None:
        return None
    from transformers import AutoTokenizer

    local = resolve_path(name_or_path)
    return AutoTokenizer.from_pretrained(str(local) if local.exists() else name_or_path)


def length_unit(tokenizer: Any) -> str:
    """How `prompts.prompt_token_count` measures with this tokenizer."""
    if tokenizer is None:
        return "words"
    return f"tokens ({Path(str(getattr(tokenizer, 'name_or_path', '') or 'tokenizer')).name})"


def render_prompts(
    seeds: Sequence[SeedTask], config: PromptDesignConfig, tokenizer: Any = None
) -> pd.DataFrame:
    """The stage-1 and stage-2 prompts of both task types for the notebook's settings.

    Returns:
        One row per (stage, task_type): version, demos, seed_ids, tokens, unit, text, and
        asked (the new instruction a stage-2 prompt ends with; "" for stage 1).
    """
    rows = []
    for stage in ("instruction", "instance"):
        for t in ("A", "B"):
            p = design_prompt(
                stage,
                t,
                seeds,
                num_seed=config.num_seed,
                num_generated=config.num_generated,
                num_instance_demos=config.num_instance_demos,
                random_seed=config.random_seed,
                generated=config.generated,
                instruction=config.instance_instructions[t],
            )
            rows.append(
                {
                    "stage": stage,
                    "task_type": t,
                    "version": p.version,
                    "demos": len(p.meta["seed_ids"]) + p.meta.get("num_generated", 0),
                    "seed_ids": list(p.meta["seed_ids"]),
                    "tokens": prompt_token_count(p.text, tokenizer),
                    "unit": length_unit(tokenizer),
                    "text": p.text,
                    "asked": config.instance_instructions[t] if stage == "instance" else "",
                }
            )
    return pd.DataFrame(rows)


def demo_defaults() -> pd.DataFrame:
    """METHOD.md's demonstration counts per task type, for reference next to the settings."""
    return pd.DataFrame(
        [
            {
                "task_type": t,
                "instruction_seed_demos": INSTRUCTION_DEMOS[t][0],
                "instruction_generated_demos": INSTRUCTION_DEMOS[t][1],
                "instance_demos": INSTANCE_DEMOS[t],
            }
            for t in ("A", "B")
        ]
    )


PROBE_COLUMNS = [
    "stage",
    "task_type",
    "prompt_version",
    "raw",
    "parsed",
    "verdict",
    "detail",
    "finish_reason",
]


def judge_instruction(raw: str, pool: Sequence[str], task_type: str) -> tuple[str, str, str]:
    """What stage 1 makes of one LM answer: (the instruction kept, verdict, detail).

    As the pipeline: the first instruction parsed, then the post-filters, then novelty against
    `pool` (the type's seeds and accepted instructions). The verdict is "accepted" or the reason.
    """
    from ...method.filters import NoveltyFilter, instruction_rejection
    from ...method.parsing import parse_instructions

    parsed = parse_instructions(raw)
    text = parsed[0] if parsed else ""
    detail = f"{len(parsed)} instruction(s) parsed; the first is judged here"
    verdict = instruction_rejection(text)
    if verdict is None:
        threshold = InstructionStage().novelty_threshold
        d = NoveltyFilter({task_type: list(pool)}, threshold=threshold).check(text, task_type)
        verdict = "accepted" if d.accepted else "not_novel"
        nearest = d.most_similar[0][0] if d.most_similar else ""
        detail += f"; highest Rouge-L {d.max_score:.2f} vs {nearest!r}"
    return text, verdict, detail


def judge_instance(raw: str, task_type: str, asked: str) -> tuple[str, str, str]:
    """What stage 2 makes of one LM answer to the instruction `asked`: (the parsed block,
    verdict, detail); the verdict is "valid" or the parser's reason."""
    from ...method.parsing import parse_instance_verbose

    inst, reason = parse_instance_verbose(raw, task_type, asked)
    if inst is None:
        return "", reason, "no valid first block"
    block = (f"input: {inst.input}\n" if task_type == "A" else "") + f"output: {inst.output}"
    return block, "valid", "first block parsed"


def probe_backend(
    backend: Any,
    prompts: pd.DataFrame,
    seeds: Sequence[SeedTask],
    task_type: str,
    *,
    generated: Sequence[str] = (),
    max_new_tokens: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Send the stage-1 and stage-2 prompts of `task_type` to an LM and judge the answers.

    Decoding is the pipeline's (the defaults of `config.InstructionStage`/`InstanceStage`); the
    answers are judged by `judge_instruction` (novelty against the type's seeds plus `generated`)
    and `judge_instance`.

    Args:
        backend: a `Backend` or a spec dict for `backends.make_backend` (built, used, closed);
            None returns an empty frame (no LM configured).
        prompts: `render_prompts` rows.
        max_new_tokens: cap on generated tokens (None: the stage defaults).

    Returns:
        One row per stage: stage, task_type, prompt_version, raw, parsed, verdict (accepted /
        valid, or the reason for rejection), detail, finish_reason.
    """
    from ...engines import make_backend

    if backend is None:
        return pd.DataFrame(columns=PROBE_COLUMNS)
    check_task_type(task_type)
    by_stage = {r.stage: r for r in prompts[prompts["task_type"] == task_type].itertuples()}
    pool = [s.instruction for s in split_by_type(list(seeds))[task_type]] + list(generated)
    lm = make_backend(backend) if isinstance(backend, Mapping) else backend
    rows = []
    try:
        for stage, settings in (("instruction", InstructionStage()), ("instance", InstanceStage())):
            p = by_stage[stage]
            g = lm.generate([p.text], sampling_params(settings, (END,), seed, max_new_tokens))[0]
            if stage == "instruction":
                parsed, verdict, detail = judge_instruction(g.text, pool, task_type)
            else:
                parsed, verdict, detail = judge_instance(g.text, task_type, p.asked)
            rows.append(
                {
                    "stage": stage,
                    "task_type": task_type,
                    "prompt_version": p.version,
                    "raw": g.text,
                    "parsed": parsed,
                    "verdict": verdict,
                    "detail": detail,
                    "finish_reason": g.finish_reason,
                }
            )
    finally:
        if lm is not backend:
            lm.close()
    return pd.DataFrame(rows, columns=PROBE_COLUMNS)
