"""Reading a run folder: its stage files as DataFrames (`load_run`), the counts the manifest
records (per stage, and calls that failed for good), and the summary a finished run prints.

Everything here reads files a run wrote (or records a stage returned); nothing calls a model.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.jsonl import read_jsonl
from ..engines.ledger import format_ledger
from ..errors import ConfigError
from ..method.records import is_failed
from ..method.run_files import (
    DROPPED,
    ENSEMBLED,
    MANIFEST,
    STAGE2,
    stage1_files,
    stage1_group,
    stage3_path,
)
from .config import RunConfig, load_config
from .stage3 import stage3_file_names


def accepted_on_file(out: Path) -> dict[str, list[dict[str, Any]]]:
    """The accepted stage-1 records of every group, as written by an earlier run."""
    return {stage1_group(p): [r for r in read_jsonl(p) if r["accepted"]] for p in stage1_files(out)}


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


def stage1_counts(out: Path) -> dict[str, Any]:
    counts: dict[str, Any] = {}
    for path in stage1_files(out):
        t = stage1_group(path)
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


def stage2_counts(instances: list[dict[str, Any]]) -> dict[str, Any]:
    counts: dict[str, Any] = {}
    for r in instances:
        c = counts.setdefault(r["task_type"], {"instructions": 0, "valid": 0, "invalid": {}})
        c["instructions"] += 1
        if r["valid"]:
            c["valid"] += 1
        else:
            c["invalid"][r["reason"]] = c["invalid"].get(r["reason"], 0) + 1
    return counts


def print_summary(out: Path, manifest: dict[str, Any]) -> None:
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
        instructions=frame(stage1_files(out)),
        instances=frame([out / STAGE2]),
        outputs=frame(stage3_path(out, n) for n in names),
        ensembled=frame([out / ENSEMBLED]),
        dropped=frame([out / DROPPED]),
    )


__all__ = [
    "RunTables",
    "accepted_on_file",
    "failure_counts",
    "load_run",
    "print_summary",
    "stage1_counts",
    "stage2_counts",
]
