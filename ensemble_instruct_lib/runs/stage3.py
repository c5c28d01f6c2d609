"""Stage 3: every extra model's greedy output for each valid stage-2 instance (or, with
``output.self_ensemble``, one model's samples), one resumable file per model or sample.

Which models stage 3 runs and what stage 4's candidates are called (`stage3_models`,
`candidate_names`, `stage3_file_names`) live here too, since stage 4, the run folder's reader and
the estimate follow the same list. Not here: loading models and holding engines between members
(`runs.pipeline`), the consensus (`runs.stage4`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ..engines.base import Backend, DecodingParams, greedy_params
from ..engines.isolation import is_failure
from ..engines.resumable import generate_checked, load_records, run_batches
from ..method.parsing import parse_output
from ..method.prompts import instance_demos
from ..method.records import is_failed, output_record
from ..method.run_files import stage3_path
from .config import ModelSpec, RunConfig
from .context import RunContext


def stage3_models(config: RunConfig) -> list[ModelSpec]:
    """The models stage 3 runs: the extra models, or, with ``output.self_ensemble``, the one
    model that samples."""
    se = config.output.self_ensemble
    if se is None:
        return list(config.extra_models)
    return [m for m in [config.generator, *config.extra_models] if m.name == se.model]


def candidate_names(config: RunConfig) -> list[str]:
    """The stage-4 candidates' names, in order: the generator then the extra models, or, with
    ``output.self_ensemble``, the samples ``<model>-s0``, ``<model>-s1``, ..."""
    se = config.output.self_ensemble
    if se is not None:
        return se.sample_names()
    return [config.generator.name] + [m.name for m in config.extra_models]


def stage3_file_names(config: RunConfig) -> list[str]:
    """The names of the run's stage-3 files: the extra models, or every sample of a self-ensemble
    (the generator's own output is in the stage-2 file)."""
    names = candidate_names(config)
    return names if config.output.self_ensemble is not None else names[1:]


def stage3_outputs(
    ctx: RunContext, spec, backend: Backend, instances: list[dict[str, Any]]
) -> dict[str, str]:
    """One extra LM's greedy output for every valid instance; returns {id: output} of the
    answered ones. A call that fails for good is written with ``status: failed`` and the error,
    and the stage goes on (`config.max_failed_fraction` bounds how many may fail); a re-run asks
    failed ones again when `config.retry_failed`.

    With ``output.self_ensemble`` naming this model, it writes one file per sample instead
    (``stage3_outputs_<model>-s<k>.jsonl``, sampled with the run's seed and sample index k,
    both recorded) and returns the first sample's outputs.
    """
    cfg, st = ctx.config, ctx.config.output
    se = st.self_ensemble
    if se is not None and se.model == spec.name:
        runs = [
            (
                name,
                DecodingParams(
                    do_sample=True,
                    temperature=se.temperature,
                    top_k=se.top_k,
                    top_p=se.top_p,
                    max_new_tokens=st.max_new_tokens,
                    stop=tuple(st.stop),
                    seed=cfg.seed,
                    chat=bool(spec.chat),
                ),
                k,
            )
            for k, name in enumerate(se.sample_names())
        ]
    else:
        greedy = greedy_params(st, cfg.seed, spec.chat)
        runs = [(spec.name, greedy, None)]
    demos = {}
    if spec.prompt_style == "few_shot":
        demos = {
            t: instance_demos(t, ctx.seeds[t], st.few_shot_demos, cfg.seed) for t in cfg.task_types
        }
    results = [
        _stage3_file(ctx, spec, backend, instances, name, params, k, demos)
        for name, params, k in runs
    ]
    return results[0]


def _stage3_file(
    ctx: RunContext,
    spec,
    backend: Backend,
    instances: list[dict[str, Any]],
    name: str,
    params: DecodingParams,
    sample_index: int | None,
    demos: dict[str, Any],
) -> dict[str, str]:
    """Stage 3 into one file (one model, or one sample of a self-ensemble); resumes by id."""
    st = ctx.config.output
    path = stage3_path(ctx.out, name)
    done = load_records(path, ctx.config.retry_failed)
    outputs = {r["id"]: r["output"] for r in done if not is_failed(r)}
    budget = ctx.budget(f"stage 3 ({name})")

    def step(chunk: Sequence[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        prompts = [
            ctx.prompt_set.output_prompt(
                r["instruction"],
                r["input"],
                style=spec.prompt_style,
                task_type=r["task_type"],
                demos=demos.get(r["task_type"], ()),
            )
            for r in chunk
        ]
        indices = None if sample_index is None else [sample_index] * len(prompts)
        gens = generate_checked(backend, [p.text for p in prompts], params, budget, indices)
        for r, p, g in zip(chunk, prompts, gens, strict=True):
            if is_failure(g):
                yield [
                    output_record(
                        id=r["id"],
                        model=spec.name,
                        output=None,
                        raw="",
                        finish_reason=g.finish_reason,
                        prompt_version=p.version,
                        status="failed",
                        reason=str(g.extra.get("reason", "error")),
                        error=str(g.extra.get("error", "")),
                    )
                ]
                continue
            text = parse_output(g.text, st.stop)
            rec = output_record(
                id=r["id"],
                model=spec.name,
                output=text,
                raw=g.text,
                finish_reason=g.finish_reason,
                prompt_version=p.version,
            )
            if sample_index is not None:
                rec.update(
                    sample=name,
                    sample_index=sample_index,
                    seed=params.seed,
                    temperature=params.temperature,
                    top_k=params.top_k,
                    top_p=params.top_p,
                )
            outputs[r["id"]] = text
            yield [rec]

    run_batches(
        [r for r in instances if r["valid"]],
        step,
        asked={r["id"] for r in done},
        batch_size=st.batch_size,
        path=path,
        budget=budget,
        desc=f"stage 3: {name}",
        progress=ctx.progress,
        tokens=ctx.generated_tokens,
    )
    return outputs


__all__ = ["candidate_names", "stage3_file_names", "stage3_models", "stage3_outputs"]
