"""Figures for the ablations (notebook 04), as pure functions of the grids' tables.

Every figure is a `matplotlib.figure.Figure` built without pyplot (as in `plots.py`, whose
`save_figure` writes them). Inputs are the long summaries of `grid_summary.summarize` (columns
*by, metric, mean, std, sem, n): error bars are one standard deviation over the rows of a group
(subsets x orderings x seeds, or runs x seeds) unless `err="sem"`. Also: the novelty histogram
per method (`run_grids.novelty_frame`) and Self-Instruct's verb-noun rings
(`diversity.top_verb_nouns`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

LABELS = {
    "consensus_kept": "consensus",
    "generator_kept": "generator alone",
    "members_kept": "mean single member",
    "random_kept": "random member",
    "oracle_kept": "oracle (best member)",
    "kept_fraction": "kept fraction",
    "gain_vs_generator": "consensus - generator",
    "gold_eligible": "Rouge-L vs gold (eligible)",
    "gold_kept": "Rouge-L vs gold (kept)",
    "gold_all": "Rouge-L vs gold (all; dropped = 0)",
    "agree_sum": "same decision as sum",
    "stage1_acceptance": "stage 1: accepted / candidates",
    "stage2_valid_rate": "stage 2: valid / instructions",
    "stage4_kept_rate": "stage 4: kept / instances",
    "novelty_mean": "mean max Rouge-L to pool",
    "div_distinct_verbs": "distinct leading verbs",
    "div_distinct_pairs": "distinct verb-noun pairs",
    "div_verbs_per_100": "distinct verbs per 100",
    "instruction_words": "instruction words",
    "output_words": "output words",
    "valid_per_call": "valid instances per generator call",
}
_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _no_data(ax: Any, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what}", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _label(metric: str) -> str:
    return LABELS.get(metric, metric)


def _series(summary: pd.DataFrame, x: str, metric: str) -> pd.DataFrame:
    part = summary[summary["metric"] == metric] if not summary.empty else summary
    return part.sort_values(x) if not part.empty else part


def _lines(
    ax: Any,
    summary: pd.DataFrame,
    x: str,
    metrics: Sequence[str],
    err: str,
    title: str,
    ylabel: str,
) -> None:
    drawn = False
    for k, m in enumerate(metrics):
        part = _series(summary, x, m)
        if part.empty:
            continue
        ax.errorbar(
            part[x],
            part["mean"],
            yerr=part[err],
            label=_label(m),
            marker="o",
            capsize=3,
            color=_COLORS[k % len(_COLORS)],
        )
        drawn = True
    if not drawn:
        _no_data(ax, "data")
    else:
        ax.legend(fontsize=8)
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    ax.set_title(title)


def plot_ensemble_size(summary: pd.DataFrame, err: str = "std") -> Figure:
    """Quality on kept examples (left) and kept fraction (right) against the ensemble size."""
    fig, (a, b) = _figure(11.0, 3.8, 2)
    _lines(
        a,
        summary,
        "size",
        ["consensus_kept", "members_kept", "random_kept", "oracle_kept"],
        err,
        "Quality on the kept examples",
        "Rouge-L vs gold (x100)",
    )
    _lines(b, summary, "size", ["kept_fraction"], err, "Examples kept", "fraction")
    fig.suptitle("Number of ensembled models (recorded GPT-3-family outputs)")
    return fig


def plot_threshold(
    summary: pd.DataFrame, highlight: pd.DataFrame | None = None, err: str = "std"
) -> Figure:
    """Kept fraction (left) and quality (right) against the consensus threshold, mean +- `err`
    band over member sets; `highlight` (threshold_sweep rows of one member list) as a line."""
    fig, (a, b) = _figure(11.0, 3.8, 2)
    for ax, metrics, title, ylabel in (
        (a, ["kept_fraction"], "Examples kept", "fraction"),
        (b, ["consensus_kept", "members_kept"], "Quality on the kept examples", "Rouge-L x100"),
    ):
        drawn = False
        for k, m in enumerate(metrics):
            part = _series(summary, "threshold", m)
            if part.empty:
                continue
            color = _COLORS[k]
            ax.plot(part["threshold"], part["mean"], color=color, label=f"{_label(m)} (mean)")
            ax.fill_between(
                part["threshold"],
                part["mean"] - part[err],
                part["mean"] + part[err],
                color=color,
                alpha=0.2,
            )
            if highlight is not None and not highlight.empty and m in highlight:
                h = highlight.sort_values("threshold")
                ax.plot(
                    h["threshold"],
                    h[m],
                    color=color,
                    linestyle="--",
                    label=f"{_label(m)}: {h['order'].iloc[0]}",
                )
            drawn = True
        if drawn:
            ax.legend(fontsize=7)
        else:
            _no_data(ax, "data")
        ax.set_xlabel("threshold (drop when the lowest pairwise Rouge-L <= it)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    return fig


def _bars(
    ax: Any,
    summary: pd.DataFrame,
    x: str,
    metric: str,
    err: str,
    order: Sequence[str] | None = None,
) -> None:
    part = summary[summary["metric"] == metric] if not summary.empty else summary
    if part.empty:
        _no_data(ax, metric)
        return
    if order is not None:
        part = part.set_index(x).reindex([o for o in order if o in set(part[x])]).reset_index()
    xs = np.arange(len(part))
    ax.bar(xs, part["mean"], yerr=part[err], capsize=4, color=_COLORS[: len(part)])
    ax.set_xticks(xs, [str(v) for v in part[x]], rotation=20, ha="right", fontsize=8)
    ax.set_title(_label(metric), fontsize=9)


def plot_bars(
    summary: pd.DataFrame,
    x: str,
    metrics: Sequence[str],
    *,
    title: str = "",
    order: Sequence[str] | None = None,
    err: str = "std",
) -> Figure:
    """One panel of bars (mean +- `err`) per metric, one bar per value of `x`, 3 per row."""
    ncols = min(len(metrics), 3)
    nrows = -(-len(metrics) // ncols)
    fig = Figure(figsize=(max(3.4 * ncols, 5.0), 3.3 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, m in zip(axes, metrics, strict=False):
        _bars(ax, summary, x, m, err, order)
    for ax in axes[len(metrics) :]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return fig


def plot_rules(summary: pd.DataFrame, err: str = "std") -> Figure:
    """Selection rules: quality of the picked output and kept fraction."""
    return plot_bars(
        summary,
        "rule",
        ["gold_eligible", "kept_fraction"],
        title="Selection rule (same examples: those passing the agreement filter)",
        order=["sum", "best_pair", "random", "first"],
        err=err,
    )


def plot_selectors(summary: pd.DataFrame, err: str = "std") -> Figure:
    """Stage-4 selectors on the recorded answers: kept fraction, Rouge-L vs gold on the kept
    examples and on all (a dropped example scoring 0), and agreement with the sum rule."""
    order = list(dict.fromkeys(summary["selector"])) if not summary.empty else None
    return plot_bars(
        summary,
        "selector",
        ["kept_fraction", "gold_kept", "gold_all", "agree_sum"],
        title="Stage-4 selectors on the recorded answers (error bars: std over member lists)",
        order=order,
        err=err,
    )


def plot_vanilla(summary: pd.DataFrame, err: str = "std") -> Figure:
    """Instruction-tuned vs vanilla members: gain over the generator alone, and kept fraction."""
    return plot_bars(
        summary,
        "role",
        ["gain_vs_generator", "consensus_kept", "kept_fraction"],
        title="Instruction-tuned members only vs a vanilla LM (davinci) in the ensemble",
        order=["tuned_only", "vanilla_extra", "vanilla_generator", "vanilla_generator_and_extra"],
        err=err,
    )


METHOD_METRICS = (
    "stage1_acceptance",
    "stage2_valid_rate",
    "stage4_kept_rate",
    "novelty_mean",
    "div_verbs_per_100",
    "instruction_words",
)


def plot_methods(
    summary: pd.DataFrame, metrics: Sequence[str] = METHOD_METRICS, err: str = "std"
) -> Figure:
    """Prompting methods on the same backend: one panel per metric, a bar per method (in the
    registry's order)."""
    from ..methods import METHODS

    present = [m for m in metrics if not summary.empty and (summary["metric"] == m).any()]
    return plot_bars(
        summary,
        "method",
        present or list(metrics[:1]),
        title="Ensemble-Instruct vs Self-Instruct vs Alpaca prompts (same generator)",
        order=list(METHODS),
        err=err,
    )


def plot_novelty_by_method(novelty: pd.DataFrame, threshold: float = 0.7) -> Figure:
    """Histograms (density) of candidates' highest Rouge-L to the pool, one line per method."""
    fig, (ax,) = _figure(6.5, 3.6)
    if novelty.empty:
        _no_data(ax, "novelty scores")
        return fig
    bins = np.linspace(0, 1, 26)
    for k, (method, part) in enumerate(novelty.groupby("method", sort=True)):
        ax.hist(
            part["max_score"],
            bins=bins,
            density=True,
            histtype="step",
            linewidth=1.8,
            color=_COLORS[k % len(_COLORS)],
            label=f"{method} ({len(part)})",
        )
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:g}")
    ax.set_xlabel("highest Rouge-L F against seeds and accepted instructions")
    ax.set_ylabel("density")
    ax.set_title("Novelty of candidate instructions per method")
    ax.legend(fontsize=8)
    return fig


def plot_verb_noun(tops: Mapping[str, pd.DataFrame] | pd.DataFrame, title: str = "") -> Figure:
    """Self-Instruct's verb-noun rings: inner ring the top verbs, outer ring each verb's top
    nouns (`diversity.top_verb_nouns`), one panel per entry of `tops` (e.g. per method)."""
    if isinstance(tops, pd.DataFrame):
        tops = {title or "instructions": tops}
    fig, axes = _figure(5.0 * max(len(tops), 1), 5.2, max(len(tops), 1))
    for ax, (name, top) in zip(axes, tops.items(), strict=False):
        ax.set_title(name)
        if top.empty:
            _no_data(ax, "verb-noun pairs")
            continue
        inner = top.groupby("verb", sort=False)["count"].sum()  # aligned with the outer ring
        colors = [_COLORS[k % len(_COLORS)] for k in range(len(inner))]
        ax.pie(
            inner.to_numpy(),
            labels=list(inner.index),
            colors=colors,
            radius=0.7,
            labeldistance=0.45,
            textprops={"fontsize": 7},
            wedgeprops={"width": 0.45, "edgecolor": "white"},
        )
        outer_colors = [colors[list(inner.index).index(v)] for v in top["verb"]]
        ax.pie(
            top["count"],
            labels=top["noun"],
            colors=outer_colors,
            radius=1.0,
            labeldistance=1.05,
            textprops={"fontsize": 6},
            wedgeprops={"width": 0.3, "edgecolor": "white", "alpha": 0.6},
        )
        ax.set_aspect("equal")
    if title and len(tops) > 1:
        fig.suptitle(title)
    return fig


def plot_demo_counts(summary: pd.DataFrame, err: str = "std") -> Figure:
    """Acceptance and novelty against the generated demos, one line per seed-demo count."""
    fig, axes = _figure(11.0, 3.8, 2)
    for ax, metric in zip(axes, ("stage1_acceptance", "novelty_mean"), strict=True):
        part = summary[summary["metric"] == metric] if not summary.empty else summary
        if part.empty:
            _no_data(ax, metric)
            continue
        for k, (n_seed, g) in enumerate(part.groupby("seed_demos")):
            g = g.sort_values("generated_demos")
            ax.errorbar(
                g["generated_demos"],
                g["mean"],
                yerr=g[err],
                marker="o",
                capsize=3,
                color=_COLORS[k % len(_COLORS)],
                label=f"{n_seed} seed demos",
            )
        ax.set_xlabel("generated demos per prompt")
        ax.set_ylabel(_label(metric))
        ax.set_title(_label(metric))
        ax.legend(fontsize=8)
    fig.suptitle("Demonstrations in instruction generation (Ensemble-Instruct stage 1)")
    return fig


__all__ = [
    "METHOD_METRICS",
    "plot_bars",
    "plot_demo_counts",
    "plot_selectors",
    "plot_ensemble_size",
    "plot_methods",
    "plot_novelty_by_method",
    "plot_rules",
    "plot_threshold",
    "plot_vanilla",
    "plot_verb_noun",
]
