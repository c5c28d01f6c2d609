"""Summaries of a grid's rows: mean, std, sem and n of each metric per group, and a table of them.

Every grid of notebook 04 gives one row per (seed, member list or run, setting); `summarize`
turns the rows into error bars: over subsets x orderings x seeds for the recorded grids
(`recorded_grids`, `selectors_on_recorded`: the spread of what one picked ensemble of that kind
gives), over runs x seeds for the pipeline grids (`run_grids`); with ``over="seed"`` rows are
averaged within each seed first, so the spread is over seeds only. `format_summary` writes a
summary as "mean ± std" cells for reading.

Not here: the grids themselves, the figures (`nb/grid_plots.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def summarize(
    rows: pd.DataFrame,
    by: Sequence[str],
    metrics: Sequence[str] | None = None,
    *,
    over: str | None = None,
) -> pd.DataFrame:
    """Mean, std, sem and n of each metric per group, as a long table.

    Args:
        rows: a grid's table (`recorded_grids`, `selectors_on_recorded`, `run_grids`).
        by: the grouping columns (e.g. ["size"], ["threshold"], ["rule"]).
        metrics: the numeric columns to aggregate (default: every numeric column not in `by`
            and not "seed", "size" or "examples"); names not in `rows` are left out (e.g. the
            metrics of a sweep whose points all failed).
        over: None: spread over all rows of a group; "seed": average within each seed first,
            so the spread is over seeds.

    Returns:
        Columns *by, metric, mean, std (ddof=1; 0 for one row), sem, n.
    """
    by = list(by)
    if metrics is None:
        metrics = [
            c
            for c in rows.select_dtypes("number").columns
            if c not in by and c not in ("seed", "size", "examples")
        ]
    metrics = [m for m in metrics if m in rows]
    cols = [*by, "metric", "mean", "std", "sem", "n"]
    if rows.empty or not metrics:
        return pd.DataFrame(columns=cols)
    data = rows
    if over is not None:
        data = rows.groupby([*by, over], as_index=False, dropna=False)[metrics].mean()
    long = data.melt(id_vars=by, value_vars=metrics, var_name="metric")
    long["value"] = pd.to_numeric(long["value"], errors="coerce")
    g = long.groupby([*by, "metric"], sort=False, dropna=False)["value"]
    out = g.agg(["mean", "std", "count"]).reset_index().rename(columns={"count": "n"})
    out["std"] = out["std"].fillna(0.0)
    out["sem"] = out["std"] / np.sqrt(out["n"].clip(lower=1))
    return out[cols]


def format_summary(summary: pd.DataFrame, by: Sequence[str], digits: int = 3) -> pd.DataFrame:
    """A `summarize` table for reading: one row per group, one "mean ± std" column per metric."""
    by = list(by)
    if summary.empty:
        return pd.DataFrame(columns=by)
    text = summary.assign(
        value=[
            f"{round(m, 9) + 0.0:.{digits}g} ± {round(s, 9) + 0.0:.{digits}g}"
            if np.isfinite(m)
            else "-"
            for m, s in zip(summary["mean"], summary["std"], strict=True)
        ]
    )
    wide = text.pivot(index=by, columns="metric", values="value")
    metrics = list(dict.fromkeys(summary["metric"]))
    return wide[metrics].reset_index().rename_axis(columns=None)
