"""Stage 3: every extra model's greedy output for each valid stage-2 instance (or, with
``output.self_ensemble``, one model's samples), one resumable file per model or sample.

Which models stage 3 runs and what stage 4's candidates are called (`stage3_models`,
`candidate_names`, `stage3_file_names`) live here too, since stage 4, the run folder's reader and
the estimate follow the same list. Not here: loading models and holding engines between members
(`runs.pipeline`), the consensus (`runs.stage4`).
"""

from __future__ import annotations

from typing import Any

from ..data.jsonl import JsonlAppender
from ..engines.base import Backend, DecodingParams, greedy_params
from ..engines.isolation import is_failure
from ..method.parsing import parse_output
from ..method.prompts import get_prompt_set, instance_demos
from ..method.records import is_failed, output_record
from ..method.run_files import stage3_path
from ..methods.rounds import chunks, generate_checked, load_records, progress_bar
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
    prompt_set = get_prompt_set(ctx.config.prompts, ctx.config.data_dir)
    path = stage3_path(ctx.out, name)
    done = load_records(path, ctx.config.retry_failed)
    outputs = {r["id"]: r["output"] for r in done if not is_failed(r)}
    asked = {r["id"] for r in done}
    todo = [r for r in instances if r["valid"] and r["id"] not in asked]
    budget = ctx.budget(f"stage 3 ({name})")
    n_valid = sum(r["valid"] for r in instances)
    bar = progress_bar(n_valid, f"stage 3: {name}", ctx.progress, ctx.generated_tokens)
    bar.update(n_valid - len(todo))
    with JsonlAppender(path) as out:
        for chunk in chunks(todo, st.batch_size):
            prompts = [
                prompt_set.output_prompt(
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
                    out.append(
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
                    )
                    bar.update(1)
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
                out.append(rec)
                outputs[r["id"]] = text
                bar.update(1)
            budget.check()
    bar.close()
    budget.check(final=True)
    return outputs


__all__ = ["candidate_names", "stage3_file_names", "stage3_models", "stage3_outputs"]
