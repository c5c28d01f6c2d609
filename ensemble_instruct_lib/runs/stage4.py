"""Stage 4: the consensus over every valid instance's candidates (the stage-2 output and the
stage-3 outputs), written as ``ensembled.jsonl``, ``dropped.jsonl`` and ``single_output.jsonl``;
and re-running it on a finished run folder with other settings (`run_stage4`).

The rule itself is `method.selectors.select` (a function of the candidates); model-backed
selectors (LM judges, reward models, embeddings) come from `runs.selector_models`. Not here: the
stage-3 outputs (`runs.stage3`), the export that follows (`runs.export`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..data.jsonl import read_jsonl, write_jsonl
from ..engines.base import Backend
from ..errors import ConfigError
from ..method.degenerate import is_degenerate
from ..method.records import consensus_record, is_failed, single_output_record
from ..method.run_files import DROPPED, ENSEMBLED, SINGLE, STAGE2, stage3_path
from ..method.selectors import select
from .config import ConsensusStage, Degenerate, ModelSpec, RunConfig, load_config
from .manifest import Manifest
from .stage3 import candidate_names


def run_settings(config: RunConfig) -> dict[str, Any]:
    """The keyword arguments a run config gives `stage4_consensus` and `stage4_decisions`: its
    consensus settings, seed and degenerate check, and whether the stage-2 output is the first
    candidate (not when the run self-ensembles, whose candidates are all stage-3 samples)."""
    return {
        "consensus": config.consensus,
        "first_from_stage2": config.output.self_ensemble is None,
        "seed": config.seed,
        "degenerate": config.degenerate,
    }


def stage4_consensus(out: Path, model_names: Sequence[str], **options: Any) -> dict[str, int]:
    """Stage 4 over every valid instance's candidates (`stage4_decisions`, whose keyword
    arguments `options` are); writes ``ensembled.jsonl``, ``dropped.jsonl`` and the single-output
    records and returns the counts: instances, kept, dropped, per reason, and ``with_missing``
    (ensembled with a member missing)."""
    kept, dropped, instances = stage4_decisions(out, model_names, **options)
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
    """Stage 4's records without writing them (`stage4_consensus` writes them): (kept records,
    dropped records, the valid stage-2 instances in id order).

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

    Records (kept / dropped, as ``ensembled.jsonl`` / ``dropped.jsonl`` hold them): id,
    task_type, instruction, input, output, reason, chosen_index, chosen_model, min_score, scores,
    candidates, models, rule, threshold, missing_models, then the selector's fields: selector,
    utility, candidate_scores (what the pick maximized, per candidate), score_details (e.g. each
    judge's scores), why (one sentence).
    """
    from .selector_models import JudgeItem, candidate_scorer, embedder_for

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
    out = Path(out_dir)
    manifest = Manifest.read(out)
    saved = dict(manifest.data["config"])
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
        counts = stage4_consensus(out, names, backend_for=backend_for, **run_settings(config))
    finally:
        backend_for.close()
    manifest.record_stage4(config, counts)
    from .export import export_run

    export_run(out)
    return counts


__all__ = ["SelectorBackends", "run_settings", "run_stage4", "stage4_consensus", "stage4_decisions"]
