"""The run: stages 1-2 through the method registry (`methods`), stage 3 (`runs.stage3`), stage 4
(`runs.stage4`) and the manifest (`runs.manifest`), all as resumable functions over JSONL files in
one run directory. This module orchestrates them (`run`): it opens the call cache, loads one model
at a time (keeping an engine loaded when the next member shares it) and times every stage.

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

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ..data.jsonl import read_jsonl
from ..data.public import load_seed_tasks, seed_tasks_path, split_by_type
from ..engines.base import Backend
from ..engines.cache import CallCache
from ..engines.ledger import LEDGER, CallLedger
from ..errors import ConfigError, TooManyFailures
from ..method.prompts import PromptSet, get_prompt_set
from ..method.run_files import STAGE2
from ..methods import get_method
from .config import RunConfig
from .context import RunContext
from .manifest import Manifest, check_resume
from .run_folder import accepted_on_file, print_summary, stage1_counts, stage2_counts
from .stage3 import candidate_names, stage3_models, stage3_outputs
from .stage4 import run_settings, stage4_consensus


@dataclass
class RunResult:
    """What `run` produced: the run dir and its manifest."""

    out_dir: Path
    manifest: dict[str, Any]

    @property
    def counts(self) -> dict[str, Any]:
        return self.manifest["counts"]


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
    previous = check_resume(out, config)
    seed_path, seeds, prompt_set = _run_inputs(config)
    cache = CallCache(Path(config.cache) if config.cache else out / "cache.sqlite")
    ctx = RunContext(config, out, seeds, cache, dict(backends or {}), progress)
    ctx.prompt_set = prompt_set  # the one prompt set of the run (stages 1-3)
    ctx.ledger = CallLedger(out / LEDGER)
    manifest = Manifest.start(out, config, seed_path, previous)
    method = get_method(config.method)
    ensemble = 4 in stages and len(candidate_names(config)) > 1
    try:
        instances = _generator_stages(ctx, method, manifest, stages)
        if 3 in stages:
            _extra_outputs(ctx, manifest, instances)
        if ensemble:
            _ensemble(ctx, manifest)
        manifest.close(ctx, "done")
        if export and ensemble:
            from .export import export_run

            export_run(out)
    except TooManyFailures as e:
        manifest.data["stopped_because"] = str(e)
        manifest.close(ctx, "stopped")
        raise
    except BaseException:
        manifest.close(ctx, "interrupted")
        raise
    finally:
        ctx.release_held()
        cache.close()
        ctx.ledger.close()
    print_summary(out, manifest.data)
    return RunResult(out, manifest.data)


def load_seeds(config: RunConfig) -> tuple[Path, dict[str, list[Any]]]:
    """The seed file and its tasks by type; every type of the config must have seeds."""
    seed_path, seeds, _ = _run_inputs(config)
    return seed_path, seeds


def _run_inputs(config: RunConfig) -> tuple[Path, dict[str, list[Any]], PromptSet]:
    """`load_seeds`, and the run's prompt set, built here so that missing template files fail
    before any model loads."""
    seed_path = Path(config.seed_file) if config.seed_file else seed_tasks_path(config.data_dir)
    seeds = split_by_type(load_seed_tasks(seed_path))
    prompt_set = get_prompt_set(config.prompts, config.data_dir)
    for t in config.task_types:
        if not seeds[t]:
            raise ConfigError(f"{seed_path} has no seed tasks of type {t}; drop it from task_types")
    return seed_path, seeds, prompt_set


@contextmanager
def _timed(ctx: RunContext, manifest: Manifest, stage: str) -> Iterator[None]:
    """Record a stage's wall time in the manifest and save it when the stage ends; the
    ledger counts the stage's calls under its name."""
    if ctx.ledger is not None:
        ctx.ledger.stage = stage
    t0 = time.perf_counter()
    yield
    manifest.data["timings_s"][stage] = round(time.perf_counter() - t0, 3)
    manifest.save()


def _generator_stages(
    ctx: RunContext, method: ModuleType, manifest: Manifest, stages: Sequence[int]
) -> list[dict[str, Any]]:
    """Stages 1-2 with the generator, through the method's entry; returns the stage-2 records
    (empty when stage 2 did not run)."""
    if 1 not in stages and 2 not in stages:
        return []
    spec = ctx.config.generator
    gen = ctx.backend(spec)
    ctx.models[spec.name]["role"] = "generator"
    manifest.data["models"].update(ctx.models)  # its weights digest, for a later resume's check
    manifest.save()
    try:
        if 1 in stages:
            with _timed(ctx, manifest, "stage1"):
                accepted = method.stage1_instructions(ctx, gen)
                manifest.data["counts"]["stage1"] = stage1_counts(ctx.out)
        else:
            accepted = accepted_on_file(ctx.out)
        if 2 not in stages:
            return []
        with _timed(ctx, manifest, "stage2"):
            ordered = [r for g in sorted(accepted) for r in accepted[g]]
            instances = method.stage2_instances(ctx, gen, ordered)
            manifest.data["counts"]["stage2"] = stage2_counts(instances)
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


def _extra_outputs(ctx: RunContext, manifest: Manifest, instances: list[dict[str, Any]]) -> None:
    """Stage 3 for every extra model, one model loaded at a time."""
    if not instances and (ctx.out / STAGE2).exists():
        instances = read_jsonl(ctx.out / STAGE2)
    with _timed(ctx, manifest, "stage3"):
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
            manifest.data["counts"].setdefault("stage3", {})[spec.name] = len(outs)


def _ensemble(ctx: RunContext, manifest: Manifest) -> None:
    """Stage 4 with the config's selector (the manifest is written when the run closes)."""
    cfg = ctx.config
    if ctx.ledger is not None:
        ctx.ledger.stage = "stage4"
    t0 = time.perf_counter()
    manifest.data["counts"]["stage4"] = stage4_consensus(
        ctx.out, candidate_names(cfg), backend_for=ctx.backend, **run_settings(cfg)
    )
    manifest.data["timings_s"]["stage4"] = round(time.perf_counter() - t0, 3)


__all__ = ["RunResult", "load_seeds", "run"]
