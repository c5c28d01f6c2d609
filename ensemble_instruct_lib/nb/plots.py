"""Figures for the notebooks, as pure functions of DataFrames.

Every figure is a `matplotlib.figure.Figure` built without pyplot (no global state; a notebook
shows it as its last expression and `save_figure` writes it as PNG). Inputs are the tables of
`tables.py` (stage counts, reasons, lengths, the stage-4 frame's pairwise agreement, chosen
members, kept sources, the threshold curve), the frames of `run_folder.load_run`, and the result
tables of notebook 05.

Its length (over 400 lines) is one function per figure of notebooks 01, 02, 03 and 05, sharing a
few axis helpers.

Not here: the tables (`tables.py`), the ablation figures (`grid_plots.py`), anything interactive
(`widgets.py`) and anything that runs models (`steps/`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .tables import GENERATOR_ROLE, pair_matrix

TYPE_COLORS = {"A": "#1f77b4", "B": "#ff7f0e"}
REASON_COLORS = {
    "exact_match": "#2ca02c",
    "consensus": "#98df8a",
    "below_threshold": "#d62728",
    "empty": "#7f7f7f",
}


# --------------------------------------------------------------------------------------------
# writing


def save_figure(fig: Figure, out_dir: str | Path, name: str, *, dpi: int = 110) -> Path:
    """Write `fig` as ``<out_dir>/<name>.png`` (folder created) and return the path."""
    path = Path(out_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def _figure(
    width: float = 7.0, height: float = 3.6, *, ncols: int = 1, nrows: int = 1
) -> tuple[Figure, Any]:
    """A figure with one axes, or an array of them when `ncols`/`nrows` > 1."""
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(nrows, ncols)


def _no_data(ax: Any, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what}", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _stacked_hist(ax: Any, frame: pd.DataFrame, column: str, bins: np.ndarray) -> None:
    """A histogram of `column` stacked by task type, with integer counts on the y axis."""
    groups = [(str(t), g[column].astype(float).to_numpy()) for t, g in frame.groupby("task_type")]
    ax.hist(
        [v for _, v in groups],
        bins=bins,
        stacked=True,
        label=[f"type {t}" for t, _ in groups],
        color=[TYPE_COLORS.get(t, "#999999") for t, _ in groups],
    )
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


# --------------------------------------------------------------------------------------------
# notebook 01: prompts


def plot_prompt_lengths(prompts: pd.DataFrame) -> Figure:
    """Bars of prompt length per stage and task type.

    Args:
        prompts: one row per prompt with columns stage, task_type, tokens and unit (the name of
            the length unit, e.g. "words" or "tokens (gpt2)").
    """
    fig, ax = _figure(6.0, 3.2)
    if prompts.empty:
        _no_data(ax, "prompts")
        return fig
    table = prompts.pivot_table(index="stage", columns="task_type", values="tokens", aggfunc="sum")
    table.plot.barh(ax=ax, color=[TYPE_COLORS.get(c, "#999999") for c in table.columns])
    ax.set_xlabel(f"prompt length ({prompts['unit'].iloc[0]})")
    ax.set_ylabel("")
    ax.set_title("Prompt length per stage and task type")
    ax.legend(title="type")
    return fig


# --------------------------------------------------------------------------------------------
# notebook 02: stages 1-3


def plot_reason_bars(counts: pd.DataFrame, title: str) -> Figure:
    """Horizontal bars of `reason_counts`, one colour per task type."""
    fig, ax = _figure(6.5, 1.2 + 0.35 * max(len(counts), 2))
    types = [c for c in counts.columns if c != "total"]
    if counts.empty or not types:
        _no_data(ax, "rejections")
        ax.set_title(title)
        return fig
    counts[types].iloc[::-1].plot.barh(
        ax=ax, stacked=True, color=[TYPE_COLORS.get(t, "#999999") for t in types]
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("records")
    ax.set_ylabel("")
    ax.set_title(title)
    ax.legend(title="type", loc="center left", bbox_to_anchor=(1.0, 0.5))
    return fig


def plot_novelty(instructions: pd.DataFrame, threshold: float = 0.7) -> Figure:
    """Histogram of each candidate's highest Rouge-L against its pool, with the threshold line.

    Only candidates that passed the post-filters have a score; those above `threshold` were
    rejected as not novel.
    """
    fig, ax = _figure(6.5, 3.4)
    scored = instructions.dropna(subset=["max_score"]) if not instructions.empty else instructions
    if scored.empty:
        _no_data(ax, "novelty scores")
        return fig
    _stacked_hist(ax, scored, "max_score", np.linspace(0, 1, 41))
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:g}")
    ax.set_xlabel("highest Rouge-L F against seeds and accepted instructions")
    ax.set_ylabel("candidates")
    ax.set_title("Novelty of candidate instructions")
    ax.legend()
    return fig


def plot_lengths(lengths: pd.DataFrame) -> Figure:
    """Histograms of instruction, input and output lengths in words, per task type."""
    fields = ["instruction", "input", "output"]
    fig, axes = _figure(10.0, 3.2, ncols=len(fields))
    for ax, name in zip(axes, fields, strict=True):
        part = lengths[lengths["field"] == name] if not lengths.empty else lengths
        if part.empty:
            _no_data(ax, f"{name}s")
            ax.set_title(name)
            continue
        top = max(int(part["words"].max()), 1)
        bins = np.arange(top + 2) - 0.5 if top <= 40 else np.linspace(0, top + 1, 31)
        _stacked_hist(ax, part, "words", bins)
        ax.set_title(name)
        ax.set_xlabel("words")
        ax.legend()
    axes[0].set_ylabel("records")
    return fig


# --------------------------------------------------------------------------------------------
# notebook 03: stage 4


def plot_consensus_reasons(reasons: pd.DataFrame) -> Figure:
    """Bars of `consensus_reasons`: kept (green) and dropped (red/grey) examples."""
    fig, ax = _figure(6.0, 2.8)
    total = int(reasons["examples"].sum())
    if total == 0:
        _no_data(ax, "examples")
        return fig
    ax.barh(
        reasons["reason"][::-1],
        reasons["examples"][::-1],
        color=[REASON_COLORS.get(r, "#999999") for r in reasons["reason"][::-1]],
    )
    kept = int(reasons.loc[reasons["kept"], "examples"].sum())
    ax.set_title(f"Stage 4: {kept} of {total} examples kept ({kept / total:.0%})")
    ax.set_xlabel("examples")
    return fig


def plot_pairwise(pairs: pd.DataFrame, threshold: float | None = None) -> Figure:
    """Histogram of pairwise Rouge-L per model pair, with the consensus threshold line."""
    fig, ax = _figure(6.5, 3.4)
    if pairs.empty:
        _no_data(ax, "candidate pairs")
        return fig
    bins = np.linspace(0, 1, 26)
    for pair, part in pairs.groupby("pair", sort=False):
        ax.hist(part["score"], bins=bins, histtype="step", linewidth=1.8, label=str(pair))
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:g}")
    ax.set_xlabel("Rouge-L F between two candidates (normalized, stemmed)")
    ax.set_ylabel("examples")
    ax.set_title("Pairwise agreement of the ensemble members")
    ax.legend(fontsize="small")
    return fig


def plot_agreement_matrix(
    agreement: pd.DataFrame,
    share: pd.DataFrame | None = None,
    threshold: float | None = None,
) -> Figure:
    """Heatmap of the mean pairwise agreement (`mean_agreement`, or `pair_matrix` of
    `pair_agreement`), rows and columns labelled with the member names, each cell labelled with
    its mean; with `share` (``pair_matrix(pairs, "share_above")``) also the share of examples
    where the pair scored above `threshold`."""
    fig, ax = _figure(
        4.8 + 0.6 * max(len(agreement) - 3, 0), 4.0 + 0.5 * max(len(agreement) - 3, 0)
    )
    if agreement.empty:
        _no_data(ax, "examples")
        return fig
    m = agreement.to_numpy(dtype=float)
    im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(m)), [str(c) for c in agreement.columns], rotation=30, ha="right")
    ax.set_yticks(range(len(m)), [str(i) for i in agreement.index])
    for i in range(len(m)):
        for j in range(len(m)):
            if i == j or np.isnan(m[i, j]):
                continue
            text = f"{m[i, j]:.2f}"
            if share is not None:
                text += f"\n{share.loc[agreement.index[i], agreement.columns[j]]:.0%}"
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                color="white" if m[i, j] < 0.5 else "black",
            )
    fig.colorbar(im, ax=ax, shrink=0.8, label="mean Rouge-L F")
    title = "Mean pairwise agreement"
    if share is not None:
        above = "" if threshold is None else f" {threshold:g}"
        title += f"\n(below each mean: share of examples above{above})"
    ax.set_title(title)
    return fig


def plot_pair_agreement(pairs: pd.DataFrame, threshold: float | None = None) -> Figure:
    """`plot_agreement_matrix` of a `pair_agreement` table: the by-pair mean, and under it the
    share of examples above `threshold`."""
    if pairs.empty:
        return plot_agreement_matrix(pd.DataFrame())
    return plot_agreement_matrix(
        pair_matrix(pairs, "mean"), pair_matrix(pairs, "share_above"), threshold
    )


def plot_chosen(chosen: pd.DataFrame) -> Figure:
    """Bars of `chosen_counts`."""
    fig, ax = _figure(6.0, 2.8)
    if chosen.empty or chosen["chosen"].sum() == 0:
        _no_data(ax, "kept examples")
        return fig
    ax.barh(chosen["model"][::-1], chosen["chosen"][::-1], color="#9467bd")
    for y, (n, share) in enumerate(zip(chosen["chosen"][::-1], chosen["share"][::-1], strict=True)):
        ax.text(n, y, f" {share:.0%}", va="center")
    ax.set_xlabel("kept examples whose output is this member's")
    ax.set_title("Which member's output is kept")
    return fig


def plot_kept_sources(sources: pd.DataFrame) -> Figure:
    """Bars of `kept_sources`: kept examples per member, stacked by the reason that kept them,
    each bar labelled with its share of all kept examples."""
    fig, ax = _figure(6.5, 1.2 + 0.45 * max(len(sources), 2))
    if sources.empty or sources["kept"].sum() == 0:
        _no_data(ax, "kept examples")
        return fig
    reasons = list(sources.columns[2 : list(sources.columns).index("kept")])
    labels = [
        f"{m}\n{'generator' if r == GENERATOR_ROLE else 'extra'}"
        for m, r in zip(sources["model"], sources["role"], strict=True)
    ][::-1]
    left = np.zeros(len(sources))
    for r in reasons:
        n = sources[r].to_numpy(dtype=float)[::-1]
        ax.barh(labels, n, left=left, color=REASON_COLORS.get(r, "#9467bd"), label=r)
        left += n
    for y, (n, share) in enumerate(zip(left, sources["share"][::-1], strict=True)):
        ax.text(n, y, f" {share:.0%}", va="center")
    ax.set_xlim(0, left.max() * 1.15)  # room for the share labels
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("kept examples whose output is this member's")
    ax.set_title("Which member each kept output came from")
    ax.legend(title="kept by", loc="center left", bbox_to_anchor=(1.0, 0.5))
    return fig


def plot_threshold_curve(curve: pd.DataFrame, current: float | None = None) -> Figure:
    """Kept fraction against the consensus threshold, with the threshold in use marked."""
    fig, ax = _figure(6.5, 3.4)
    if curve.empty or not curve["examples"].iloc[0]:
        _no_data(ax, "examples")
        return fig
    ax.plot(curve["threshold"], curve["kept_fraction"], marker=".", color="#2ca02c")
    if current is not None:
        ax.axvline(current, color="black", linestyle="--", label=f"threshold in use {current:g}")
        ax.legend()
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("threshold on the lowest pairwise Rouge-L")
    ax.set_ylabel("kept fraction")
    ax.set_title(f"Kept fraction vs threshold ({int(curve['examples'].iloc[0])} examples)")
    return fig


def plot_gold_summary(summary: pd.DataFrame) -> Figure:
    """Mean Rouge-L against gold per system (members, consensus, random pick, oracle).

    Args:
        summary: `recorded_ensemble.RecordedEnsemble.summary` (system, kept_mean, all_mean).
    """
    fig, ax = _figure(7.0, 3.4)
    if summary.empty:
        _no_data(ax, "gold scores")
        return fig
    x = np.arange(len(summary))
    ax.bar(x - 0.2, summary["kept_mean"], width=0.4, label="kept examples", color="#2ca02c")
    ax.bar(x + 0.2, summary["all_mean"], width=0.4, label="all examples", color="#1f77b4")
    ax.set_xticks(x, summary["system"], rotation=25, ha="right")
    ax.set_ylabel("mean Rouge-L vs gold (x100)")
    ax.set_title("Quality against gold: members, consensus, random pick, oracle")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


# --------------------------------------------------------------------------------------------
# notebook 05: fine-tuning and evaluation


def plot_benchmark_scores(comparison: pd.DataFrame, metric: str = "rougeL") -> Figure:
    """One panel per benchmark: `metric` per system, tuned models and recorded references apart.

    Args:
        comparison: columns system, kind ("tuned", "base" or "recorded"), benchmark and `metric`.
    """
    benches = list(dict.fromkeys(comparison["benchmark"])) if not comparison.empty else []
    fig, axes = _figure(
        6.5 * max(len(benches), 1), 0.9 + 0.32 * max(len(comparison), 4), ncols=max(len(benches), 1)
    )
    axes = np.atleast_1d(axes)
    if not benches:
        _no_data(axes[0], "scores")
        return fig
    for ax, bench in zip(axes, benches, strict=True):
        part = comparison[comparison["benchmark"] == bench].iloc[::-1]
        palette = {"tuned": "#d62728", "base": "#1f77b4"}
        colors = [palette.get(k, "#7f7f7f") for k in part["kind"]]
        ax.barh(part["system"], part[metric], color=colors)
        for y, v in enumerate(part[metric]):
            ax.text(v, y, f" {v:.1f}", va="center", fontsize="small")
        ax.set_title(f"{bench}: {metric} (red: tuned here, blue: base, grey: recorded)")
        ax.set_xlabel(metric)
    return fig


def plot_category_scores(
    per_category: pd.DataFrame,
    metric: str = "rougeL",
    *,
    kinds: Sequence[str] = ("tuned",),
    top: int = 12,
) -> Figure:
    """One panel per benchmark: grouped bars of `metric` per category and system.

    Args:
        per_category: columns system, kind, benchmark, category, n and `metric`.
        kinds: which systems to show ("tuned", "recorded").
        top: the largest categories (by instances) shown per benchmark.
    """
    part = per_category[per_category["kind"].isin(list(kinds))] if not per_category.empty else None
    benches = list(dict.fromkeys(part["benchmark"])) if part is not None else []
    fig, axes = _figure(9.0, 3.8 * max(len(benches), 1), nrows=max(len(benches), 1))
    axes = np.atleast_1d(axes)
    if not benches:
        _no_data(axes[0], "categories")
        return fig
    for ax, bench in zip(axes, benches, strict=True):
        sub = part[part["benchmark"] == bench]
        sizes = sub.groupby("category")["n"].max().sort_values(ascending=False)
        cats = list(sizes.index[:top])
        table = sub[sub["category"].isin(cats)].pivot_table(
            index="category", columns="system", values=metric, sort=False
        )
        table.loc[cats].plot.bar(ax=ax, width=0.8)
        ax.set_ylim(0, max(float(np.nanmax(table.to_numpy())) * 1.1, 1.0))
        ax.set_ylabel(metric)
        ax.set_xlabel("")
        ax.set_title(f"{bench}: {metric} per category (largest {len(cats)})")
        ax.tick_params(axis="x", labelrotation=35)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def plot_loss_curves(losses: pd.DataFrame) -> Figure:
    """Training (solid) and held-out (dashed) loss per step for each fine-tuned system.

    Args:
        losses: columns system, step, loss, eval_loss (`finetune.loss_log_frame` rows, stacked).
    """
    fig, ax = _figure(6.5, 3.4)
    if losses.empty:
        _no_data(ax, "loss logs")
        return fig
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    for k, (system, part) in enumerate(losses.groupby("system", sort=False)):
        color = palette[k % len(palette)]
        train = part.dropna(subset=["loss"])
        held = part.dropna(subset=["eval_loss"])
        ax.plot(train["step"], train["loss"], color=color, label=f"{system} train")
        if not held.empty:
            ax.plot(
                held["step"],
                held["eval_loss"],
                color=color,
                linestyle="--",
                marker="o",
                label=f"{system} held-out",
            )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Fine-tuning loss")
    ax.legend(fontsize="small")
    return fig
