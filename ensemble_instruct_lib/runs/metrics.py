"""What one pipeline run dir made, as one flat row of metrics (any prompting method).

Per-stage acceptance, novelty, diversity (distinct leading verbs and verb-noun pairs, as
Self-Instruct plotted; see `method.diversity`), lengths and generator calls, counted from the stage
files, so a resumed run counts once. Sweeps (`runs.sweep`) record it per grid point; the run grids
of `analysis.run_grids` compare runs with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

#: the metrics `run_metrics` returns (besides labels), the columns the grids summarize
RUN_METRICS = (
    "stage1_acceptance",
    "stage1_rejected_parse",
    "stage1_rejected_filters",
    "stage1_rejected_novelty",
    "novelty_mean",
    "stage2_valid_rate",
    "stage4_kept_rate",
    "div_distinct_verbs",
    "div_distinct_pairs",
    "div_verbs_per_100",
    "div_distinct_2",
    "instruction_words",
    "input_words",
    "output_words",
    "valid_per_call",
)


_PARSE_REASONS = ("truncated", "malformed", "no_output", "empty_output", "empty")


def _words(series: pd.Series) -> pd.Series:
    return series.fillna("").astype(str).str.split().str.len()


def run_metrics(run_dir: str | Path) -> dict[str, Any]:
    """What a run made, as one flat row: method, per-stage acceptance, novelty, diversity,
    lengths and generator calls (counted from the stage files, so resumed runs count once).

    Stage 1 counts candidates judged (the "target_reached" ones of a finishing round are not);
    rejections are split into parse ("truncated", "no_output", ...), post-filter and novelty.
    """
    from ..method.diversity import diversity_summary
    from .run_folder import load_run

    t = load_run(run_dir)
    cfg = t.manifest["config"]
    ins = t.instructions
    out: dict[str, Any] = {
        "method": cfg["method"],
        "run_seed": cfg["seed"],
        "generator": cfg["generator"]["name"],
    }
    judged = ins[ins["reason"] != "target_reached"] if not ins.empty else ins
    n = len(judged)
    acc = judged[judged["accepted"].astype(bool)] if n else judged
    reasons = judged["reason"].fillna("") if n else pd.Series(dtype=str)
    parse = reasons.isin(_PARSE_REASONS)
    novel = reasons == "not_novel"
    out.update(
        stage1_candidates=n,
        stage1_accepted=len(acc),
        stage1_acceptance=len(acc) / n if n else float("nan"),
        stage1_rejected_parse=float(parse.mean()) if n else float("nan"),
        stage1_rejected_filters=float((~parse & ~novel & (reasons != "")).mean())
        if n
        else float("nan"),
        stage1_rejected_novelty=float(novel.mean()) if n else float("nan"),
    )
    scored = judged["max_score"].dropna().astype(float) if n else pd.Series(dtype=float)
    out.update(
        novelty_mean=float(scored.mean()) if len(scored) else float("nan"),
        novelty_median=float(scored.median()) if len(scored) else float("nan"),
        novelty_p90=float(scored.quantile(0.9)) if len(scored) else float("nan"),
        accepted_novelty_mean=float(acc["max_score"].astype(float).mean())
        if len(acc)
        else float("nan"),
    )
    inst = t.instances
    valid = inst[inst["valid"].astype(bool)] if not inst.empty else inst
    out.update(
        stage2_instances=len(inst),
        stage2_valid=len(valid),
        stage2_valid_rate=len(valid) / len(inst) if len(inst) else float("nan"),
        input_fraction=float((valid["input"].fillna("").str.strip() != "").mean())
        if len(valid)
        else float("nan"),
    )
    s4 = t.manifest.get("counts", {}).get("stage4")
    if s4:
        out.update(
            stage4_examples=s4["instances"],
            stage4_kept=s4["kept"],
            stage4_kept_rate=s4["kept"] / s4["instances"] if s4["instances"] else float("nan"),
        )
    div = diversity_summary(acc["instruction"].tolist() if len(acc) else [])
    out.update({f"div_{k}": v for k, v in div.items() if k != "instructions"})
    with_input = valid[valid["input"].fillna("").str.strip() != ""] if len(valid) else valid
    out.update(
        instruction_words=float(_words(acc["instruction"]).mean()) if len(acc) else float("nan"),
        input_words=float(_words(with_input["input"]).mean()) if len(with_input) else float("nan"),
        output_words=float(_words(valid["output"]).mean()) if len(valid) else float("nan"),
    )
    calls = _generator_calls(ins, inst, cfg)
    out.update(
        generator_calls=calls,
        valid_per_call=len(valid) / calls if calls else float("nan"),
    )
    return out


def _generator_calls(ins: pd.DataFrame, inst: pd.DataFrame, cfg: Mapping[str, Any]) -> int:
    """Stage-1 prompts (distinct (group, round, prompt) of the candidates) + stage-2 calls."""
    calls = 0
    if not ins.empty:
        prompts = ins["candidate"].astype(str).str.replace(r"-c\d+$", "", regex=True)
        calls += prompts.nunique()
    if not inst.empty and cfg["method"] != "alpaca":
        own = inst[inst["harvested_from"].isna()] if "harvested_from" in inst else inst
        calls += len(own)
        if "classification_raw" in own:
            calls += int(own["classification_raw"].notna().sum())
    return calls


__all__ = ["RUN_METRICS", "run_metrics"]
