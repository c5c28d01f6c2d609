"""The record of each stage file, built in one place (pure functions: no files, no models).

Every prompting method and the pipeline write their JSONL lines through these builders, so a
stage's records have the same fields, in the same order, whoever wrote them:

- `stage1_candidate`: one candidate instruction of stage 1 before its verdict
  (``stage1_instructions_<group>.jsonl``; the verdict fields are filled in by the novelty step).
- `instance_record` / `harvested_instance`: one stage-2 instance (``stage2_instances.jsonl``), the
  latter for a block an LM invented and the run harvested.
- `output_record`: one extra LM's stage-3 output (``stage3_outputs_<model>.jsonl``).
- `consensus_record`: one stage-4 decision (``ensembled.jsonl`` / ``dropped.jsonl``).
- `single_output_record`: the stage-2 output alone (``single_output.jsonl``, the paper's
  no-ensemble baseline).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def candidate_id(group: str, round_no: int, prompt_index: int, position: int) -> str:
    """The id of a stage-1 candidate: its group, round, prompt (response) in the round and
    position in that response, e.g. ``"A-r0003-p2-c01"``."""
    return f"{group}-r{round_no:04d}-p{prompt_index}-c{position:02d}"


def stage1_candidate(
    *,
    candidate: str,
    group: str,
    round_no: int,
    instruction: str,
    raw: str,
    prompt_version: str,
    demo_seed_ids: Sequence[str],
    num_generated_demos: int,
    position: int,
    finish_reason: str | None,
    round_size: int | None = None,
    fields: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A stage-1 candidate's record before its verdict.

    Args:
        candidate: its id (`candidate_id`).
        group: the task type ("A", "B") or the baselines' one pool ("all").
        round_no, round_size: its round and the number of candidates the round wrote (set when
            the round is complete; a shorter last round is cut on resume).
        instruction: the cleaned instruction ("" when the response held none).
        raw: the whole response it was parsed from.
        prompt_version, demo_seed_ids, num_generated_demos: the prompt that produced it.
        position: its place in the response (0 = first item).
        finish_reason: why generation of the response ended ("stop", "length").
        fields: extra fields a method keeps (Alpaca: the generated input, output and block).

    Returns:
        The record with an undecided verdict: ``accepted`` False, ``reason`` and scores None.
    """
    return {
        "candidate": candidate,
        "id": None,
        "task_type": group,
        "round": round_no,
        "round_size": round_size,
        "instruction": instruction,
        "raw": raw,
        "accepted": False,
        "reason": None,
        "max_score": None,
        "most_similar": [],
        "mean_similarity": None,
        "prompt_version": prompt_version,
        "demo_seed_ids": list(demo_seed_ids),
        "num_generated_demos": num_generated_demos,
        "position": position,
        "finish_reason": finish_reason,
        **(fields or {}),
    }


def instance_record(
    *,
    id: str,  # noqa: A002
    task_type: str,
    instruction: str,
    valid: bool,
    reason: str,
    input: str | None,  # noqa: A002
    output: str | None,
    raw: str | None,
    finish_reason: str | None,
    prompt_version: str,
    harvested_from: str | None = None,
    extra: Mapping[str, Any] | None = None,
    status: str = "ok",
    error: str | None = None,
) -> dict[str, Any]:
    """A stage-2 instance: the instruction with its parsed input/output, or why it is invalid.

    `extra` holds a method's own fields, after the shared ones (Self-Instruct: the
    classification answer and the instance format). A call that failed for good has
    ``status="failed"``, its failure reason in `reason` and the one-line `error`.
    """
    return {
        "id": id,
        "task_type": task_type,
        "instruction": instruction,
        "valid": valid,
        "reason": reason,
        "input": input,
        "output": output,
        "raw": raw,
        "finish_reason": finish_reason,
        "prompt_version": prompt_version,
        "harvested_from": harvested_from,
        "status": status,
        "error": error,
        **(extra or {}),
    }


def harvested_instance(
    *,
    parent: str,
    index: int,
    task_type: str,
    instruction: str,
    input: str,  # noqa: A002
    output: str,
    prompt_version: str,
) -> dict[str, Any]:
    """A valid stage-2 instance made of a block the LM invented after `parent`'s answer (its
    `index`-th block); it has no response of its own."""
    return instance_record(
        id=f"{parent}-h{index}",
        task_type=task_type,
        instruction=instruction,
        valid=True,
        reason="ok",
        input=input,
        output=output,
        raw=None,
        finish_reason=None,
        prompt_version=prompt_version,
        harvested_from=parent,
    )


def output_record(
    *,
    id: str,  # noqa: A002
    model: str,
    output: str,
    raw: str,
    finish_reason: str | None,
    prompt_version: str,
    status: str = "ok",
    reason: str | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """One extra LM's stage-3 output for an instance (`output` is `raw` cut and stripped); a
    call that failed for good has ``status="failed"``, ``output=None``, the failure `reason` and
    the one-line `error`."""
    return {
        "id": id,
        "model": model,
        "output": output,
        "raw": raw,
        "finish_reason": finish_reason,
        "prompt_version": prompt_version,
        "status": status,
        "reason": reason,
        "error": error,
    }


def consensus_record(
    instance: Mapping[str, Any],
    *,
    output: str | None,
    reason: str,
    chosen_index: int | None,
    min_score: float | None,
    scores: list[list[float]],
    candidates: Sequence[str],
    models: Sequence[str],
    rule: str | None,
    threshold: float,
    missing_models: Sequence[str] = (),
    missing_reasons: Mapping[str, str] | None = None,
    **selection: Any,
) -> dict[str, Any]:
    """One stage-4 decision over an instance's candidate outputs.

    Args:
        instance: its stage-2 record (id, task_type, instruction, input are copied).
        output, reason, chosen_index, min_score, scores: the consensus result.
        candidates: the outputs compared, in `models` order (the generator's first).
        rule, threshold: the selection rule and the threshold it applied.
        missing_models: extra models whose stage-3 call failed for good for this instance (not
            among `models`; empty when every member answered, the paper's case).
        missing_reasons: why each missing member is missing: "failed" (its call failed for
            good) or "degenerate" (its output was mostly repetition, `method.degenerate`).
        selection: the selector's own fields, after these (selector, utility, candidate_scores,
            score_details, why).
    """
    return {
        "id": instance["id"],
        "task_type": instance["task_type"],
        "instruction": instance["instruction"],
        "input": instance["input"],
        "output": output,
        "reason": reason,
        "chosen_index": chosen_index,
        "chosen_model": None if chosen_index is None else models[chosen_index],
        "min_score": min_score,
        "scores": scores,
        "candidates": list(candidates),
        "models": list(models),
        "rule": rule,
        "threshold": threshold,
        "missing_models": list(missing_models),
        "missing_reasons": {m: (missing_reasons or {}).get(m, "failed") for m in missing_models},
        **selection,
    }


def single_output_record(instance: Mapping[str, Any]) -> dict[str, Any]:
    """A valid stage-2 instance as an example on its own (the no-ensemble baseline)."""
    return {k: instance[k] for k in ("id", "task_type", "instruction", "input", "output")}


def is_failed(record: Mapping[str, Any]) -> bool:
    """True for a stage-2/3 record whose call failed for good."""
    return record.get("status") == "failed"


__all__ = [
    "is_failed",
    "candidate_id",
    "consensus_record",
    "harvested_instance",
    "instance_record",
    "output_record",
    "single_output_record",
    "stage1_candidate",
]
