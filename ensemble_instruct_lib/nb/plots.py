"""Figures for the notebooks, and the small tables they draw, as pure functions of DataFrames.

Every figure is a `matplotlib.figure.Figure` built without pyplot (no global state; a notebook
shows it as its last expression and `save_figure` writes it as PNG). Inputs are the frames of
`run_folder.load_run` (stages 1-4, columns as documented there), the stage-4 frame of
`ensemble_frame` (one row per example, kept or dropped, with its score matrix), and the result
tables of notebook 05. Stage-4 statistics that depend on the threshold are recomputed from the
stored score matrices (`threshold_curve`), so a threshold sweep needs no Rouge-L call.

Not here: anything interactive (`widgets.py`) and anything that runs models (`notebooks.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..method.consensus import (
    CONSENSUS,
    EXACT,
    REASONS,
    RULES,
    decide,
    empty_mask,
    equal_matrix,
    normalize,
)

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


def save_table(df: pd.DataFrame, out_dir: str | Path, name: str, *, index: bool = False) -> Path:
    """Write `df` as ``<out_dir>/<name>.csv`` (folder created) and return the path."""
    path = Path(out_dir) / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=index)
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


def _words(texts: pd.Series) -> pd.Series:
    return texts.fillna("").astype(str).str.split().str.len()


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


def stage_counts(
    instructions: pd.DataFrame, instances: pd.DataFrame, outputs: pd.DataFrame
) -> pd.DataFrame:
    """How many records survive each of stages 1-3, per task type.

    Args:
        instructions: stage-1 candidates (task_type, accepted).
        instances: stage-2 records (id, task_type, valid).
        outputs: stage-3 outputs, one row per (id, model).

    Returns:
        Index: step ("1 candidate instructions", "1 accepted instructions", "2 valid instances",
        "3 outputs <model>" per extra model); columns: the task types and "total".
    """
    rows: dict[str, pd.Series] = {}
    if not instructions.empty:
        rows["1 candidate instructions"] = instructions.groupby("task_type").size()
        acc = instructions[instructions["accepted"].astype(bool)]
        rows["1 accepted instructions"] = acc.groupby("task_type").size()
    if not instances.empty:
        rows["2 instances generated"] = instances.groupby("task_type").size()
        valid = instances[instances["valid"].astype(bool)]
        rows["2 valid instances"] = valid.groupby("task_type").size()
    if not outputs.empty and not instances.empty:
        typed = outputs.merge(instances[["id", "task_type"]].drop_duplicates("id"), on="id")
        for model, part in typed.groupby("model", sort=False):
            rows[f"3 outputs {model}"] = part.groupby("task_type").size()
    table = pd.DataFrame(rows).T.fillna(0).astype(int)
    table.index.name = "step"
    table["total"] = table.sum(axis=1)
    return table


def reason_counts(
    frame: pd.DataFrame,
    *,
    ok_column: str,
    reason_column: str = "reason",
    ignore: Sequence[str] = ("target_reached",),
) -> pd.DataFrame:
    """Why records were rejected: counts per reason (rows) and task type (columns), plus "total".

    Args:
        frame: stage-1 instructions (`ok_column="accepted"`) or stage-2 instances
            (`ok_column="valid"`).
        ok_column: the boolean column that marks a record as kept; those are not counted.
        ignore: reasons left out (by default the pipeline's "target_reached": candidates of a
            round that finished after its type had enough, never judged).
    """
    if frame.empty:
        return pd.DataFrame(columns=["total"]).rename_axis("reason")
    bad = frame[~frame[ok_column].astype(bool)]
    reasons = bad[reason_column].fillna("unknown").astype(str)
    keep = ~reasons.isin(list(ignore))
    bad, reasons = bad[keep], reasons[keep]
    if bad.empty:
        return pd.DataFrame(columns=["total"]).rename_axis("reason")
    table = pd.crosstab(reasons, bad["task_type"]).rename_axis(index="reason", columns=None)
    table["total"] = table.sum(axis=1)
    return table.sort_values("total", ascending=False)


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


def text_lengths(instructions: pd.DataFrame, instances: pd.DataFrame) -> pd.DataFrame:
    """Word counts of accepted instructions and of valid instances' inputs and outputs.

    Returns:
        Long table with columns field ("instruction", "input", "output"), task_type, words.
        Type-B inputs (always empty) are left out.
    """
    parts = []
    if not instructions.empty:
        acc = instructions[instructions["accepted"].astype(bool)]
        parts.append(
            pd.DataFrame(
                {
                    "field": "instruction",
                    "task_type": acc["task_type"],
                    "words": _words(acc["instruction"]),
                }
            )
        )
    if not instances.empty:
        ok = instances[instances["valid"].astype(bool)]
        with_input = ok[ok["task_type"] == "A"]
        parts.append(
            pd.DataFrame(
                {
                    "field": "input",
                    "task_type": with_input["task_type"],
                    "words": _words(with_input["input"]),
                }
            )
        )
        parts.append(
            pd.DataFrame(
                {"field": "output", "task_type": ok["task_type"], "words": _words(ok["output"])}
            )
        )
    if not parts:
        return pd.DataFrame(columns=["field", "task_type", "words"])
    return pd.concat(parts, ignore_index=True)


def length_summary(lengths: pd.DataFrame) -> pd.DataFrame:
    """count/mean/median/max of `text_lengths` per field and task type."""
    if lengths.empty:
        return pd.DataFrame(columns=["field", "task_type", "count", "mean", "median", "max"])
    return (
        lengths.groupby(["field", "task_type"])["words"]
        .agg(["count", "mean", "median", "max"])
        .round(1)
        .reset_index()
    )


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


def sample_rows(instances: pd.DataFrame, n: int = 10, seed: int = 0) -> pd.DataFrame:
    """Up to `n` valid instances, drawn with `seed`, balanced over task types where possible."""
    cols = ["id", "task_type", "instruction", "input", "output"]
    if instances.empty:
        return pd.DataFrame(columns=cols)
    ok = instances[instances["valid"].astype(bool)]
    groups = [g for _, g in ok.groupby("task_type")]
    if not groups:
        return pd.DataFrame(columns=cols)
    per = max(1, n // len(groups))
    picked = pd.concat([g.sample(min(per, len(g)), random_state=seed) for g in groups])
    rest = ok.drop(picked.index)
    if len(picked) < n and not rest.empty:
        picked = pd.concat(
            [picked, rest.sample(min(n - len(picked), len(rest)), random_state=seed)]
        )
    return picked[cols].head(n).reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# notebook 03: stage 4


def ensemble_frame(ensembled: pd.DataFrame, dropped: pd.DataFrame) -> pd.DataFrame:
    """Kept and dropped stage-4 records in one frame, with a boolean `kept` column.

    Args:
        ensembled, dropped: `run_folder.load_run(...).ensembled` / `.dropped` (or frames with the
            same columns: id, instruction, input, output, reason, chosen_index, chosen_model,
            min_score, scores, candidates, models).
    """
    parts = []
    for frame, kept in ((ensembled, True), (dropped, False)):
        if not frame.empty:
            parts.append(frame.assign(kept=kept))
    if not parts:
        return pd.DataFrame(columns=["id", "reason", "kept", "scores", "candidates", "models"])
    out = pd.concat(parts, ignore_index=True)
    if "id" in out.columns:
        out = out.sort_values("id", kind="stable").reset_index(drop=True)
    return out


def consensus_reasons(frame: pd.DataFrame) -> pd.DataFrame:
    """Examples per stage-4 reason (exact_match, consensus, below_threshold, empty).

    Returns:
        Columns reason, kept (whether that reason keeps the example), examples, share.
    """
    counts = frame["reason"].value_counts() if not frame.empty else pd.Series(dtype=int)
    n = max(len(frame), 1)
    rows = [
        {
            "reason": r,
            "kept": r in ("exact_match", "consensus"),
            "examples": int(counts.get(r, 0)),
            "share": counts.get(r, 0) / n,
        }
        for r in REASONS
    ]
    return pd.DataFrame(rows)


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


def pairwise_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """Every off-diagonal pair of candidates of every example, with its Rouge-L F.

    Returns:
        Columns id (or the row position), pair ("<model a> / <model b>"), model_a, model_b, score.
    """
    rows = []
    ids = frame["id"] if "id" in frame.columns else pd.Series(range(len(frame)), index=frame.index)
    for ex_id, scores, models in zip(ids, frame["scores"], frame["models"], strict=True):
        m = np.asarray(scores, dtype=float)
        for i, j in zip(*np.triu_indices(len(m), k=1), strict=True):
            rows.append(
                {
                    "id": ex_id,
                    "pair": f"{models[i]} / {models[j]}",
                    "model_a": models[i],
                    "model_b": models[j],
                    "score": float(m[i, j]),
                }
            )
    return pd.DataFrame(rows, columns=["id", "pair", "model_a", "model_b", "score"])


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


def _member_order(frame: pd.DataFrame, models: Sequence[str] | None = None) -> list[str]:
    """The members in candidate order: `models` when given, then any other name the records
    carry; else the longest ``models`` list of a record (one where every member answered), then
    the other names in the order they first appear (``missing_models`` included)."""
    names: list[str] = list(models or [])
    lists = [list(m) for m in frame["models"]] if "models" in frame.columns else []
    if not names and lists:
        names = list(max(lists, key=len))
    missing = frame["missing_models"] if "missing_models" in frame.columns else []
    for members in [*lists, *(m for m in missing if isinstance(m, list | tuple))]:
        names += [m for m in members if m not in names]
    return names


def _named_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """Every ordered off-diagonal cell of every stored score matrix, by member name: columns
    row (position in `frame`), model_a, model_b, score. A record without some member (its
    stage-3 call failed) has a smaller matrix over the members it has, so cells are matched by
    name, never by position."""
    rows = []
    for k, (scores, members) in enumerate(zip(frame["scores"], frame["models"], strict=True)):
        m = np.asarray(scores, dtype=float)
        for i, a in enumerate(members):
            for j, b in enumerate(members):
                if i != j:
                    rows.append((k, a, b, float(m[i, j])))
    return pd.DataFrame(rows, columns=["row", "model_a", "model_b", "score"])


def mean_agreement(frame: pd.DataFrame, models: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean pairwise Rouge-L between members (a models x models table; the diagonal, a
    candidate against itself, is NaN), each cell over the examples where both members have a
    candidate. Members are in `models` order (default: `_member_order`)."""
    if frame.empty:
        return pd.DataFrame()
    names = _member_order(frame, models)
    cells = _named_scores(frame)
    mean = cells.groupby(["model_a", "model_b"])["score"].mean().unstack()
    m = mean.reindex(index=names, columns=names).to_numpy(dtype=float, copy=True)
    np.fill_diagonal(m, np.nan)
    return pd.DataFrame(m, index=names, columns=names)


PAIR_COLUMNS = ["pair", "model_a", "model_b", "examples", "mean", "above", "share_above"]


def pair_agreement(
    frame: pd.DataFrame, threshold: float, models: Sequence[str] | None = None
) -> pd.DataFrame:
    """Agreement of every pair of members, from the stored stage-4 score matrices of kept and
    dropped examples alike.

    Args:
        frame: `ensemble_frame` rows (scores, models; a record lacking a member has a smaller
            matrix over the members it has).
        threshold: the stage-4 threshold; a pair "agrees" on an example when its score is above
            it (stage 4 drops an example whose lowest pairwise score is at or below it).
        models: the members in candidate order (default: `_member_order`).

    Returns:
        One row per unordered pair (a before b in member order): pair ("<a> / <b>"), model_a,
        model_b, examples (where both have a candidate), mean (their mean Rouge-L there; NaN
        when none), above (examples scoring above `threshold`), share_above (of `examples`).
    """
    if frame.empty:
        return pd.DataFrame(columns=PAIR_COLUMNS)
    names = _member_order(frame, models)
    rank = {m: k for k, m in enumerate(names)}
    cells = _named_scores(frame)
    cells = cells[cells["model_a"].map(rank) < cells["model_b"].map(rank)]
    by_pair = dict(list(cells.groupby(["model_a", "model_b"])["score"]))
    empty = pd.Series(dtype=float)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            s = by_pair.get((a, b), empty)
            above = int((s > threshold).sum())
            rows.append(
                {
                    "pair": f"{a} / {b}",
                    "model_a": a,
                    "model_b": b,
                    "examples": len(s),
                    "mean": float(s.mean()) if len(s) else float("nan"),
                    "above": above,
                    "share_above": above / len(s) if len(s) else float("nan"),
                }
            )
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def pair_matrix(pairs: pd.DataFrame, value: str = "mean") -> pd.DataFrame:
    """A column of `pair_agreement` as a symmetric members x members table (diagonal NaN), in
    the pairs' member order: what `plot_agreement_matrix` draws."""
    if pairs.empty:
        return pd.DataFrame()
    names = list(dict.fromkeys([*pairs["model_a"], *pairs["model_b"]]))
    m = pd.DataFrame(np.nan, index=names, columns=names)
    for a, b, v in zip(pairs["model_a"], pairs["model_b"], pairs[value], strict=True):
        m.loc[a, b] = m.loc[b, a] = float(v)
    return m


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


def chosen_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """How often each member's output is the one kept.

    Returns:
        Columns model, chosen (kept examples whose output is that member's), share (of kept).
    """
    if frame.empty:
        return pd.DataFrame(columns=["model", "chosen", "share"])
    models = _member_order(frame)
    kept = frame[frame["kept"].astype(bool)]
    counts = kept["chosen_model"].value_counts()
    n = max(len(kept), 1)
    return pd.DataFrame(
        [
            {"model": m, "chosen": int(counts.get(m, 0)), "share": counts.get(m, 0) / n}
            for m in models
        ]
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


KEPT_REASONS = ("exact_match", "consensus")
GENERATOR_ROLE = "generator (stage 2)"
EXTRA_ROLE = "extra model (stage 3)"


def kept_sources(
    frame: pd.DataFrame,
    models: Sequence[str] | None = None,
    *,
    generator_first: bool = True,
) -> pd.DataFrame:
    """Which member each kept output came from, split by the reason that kept it.

    The source of a kept example is its stored ``chosen_model``. On an exact match the
    candidates agree and stage 4 keeps the first of the equal ones, so the exact_match column
    says whose copy was stored, not who "won".

    Args:
        frame: `ensemble_frame` rows (kept, reason, chosen_model, models, and
            missing_models where the run has it).
        models: the members in candidate order (default: `_member_order`).
        generator_first: whether the first member is the generator's stage-2 output (the
            pipeline's order; False for a self-ensemble, whose candidates are all stage-3
            samples).

    Returns:
        One row per member: model, role (`GENERATOR_ROLE` or `EXTRA_ROLE`), one count column
        per kept reason (exact_match, consensus, then any other reason that kept an example),
        kept (their sum), share (of all kept examples), answered (examples where the member
        had a candidate) and missing (examples where its call failed for good).
    """
    reasons = list(KEPT_REASONS)
    columns = ["model", "role", *reasons, "kept", "share", "answered", "missing"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    names = _member_order(frame, models)
    kept = frame[frame["kept"].astype(bool)]
    reasons += sorted(set(kept["reason"].astype(str)) - set(reasons))
    columns = ["model", "role", *reasons, "kept", "share", "answered", "missing"]
    counts = pd.crosstab(kept["chosen_model"], kept["reason"]) if not kept.empty else None
    answered = pd.Series([m for ms in frame["models"] for m in ms]).value_counts()
    lacking = frame["missing_models"] if "missing_models" in frame.columns else []
    missing = pd.Series(
        [m for ms in lacking if isinstance(ms, list | tuple) for m in ms], dtype=object
    ).value_counts()
    total = max(len(kept), 1)
    rows = []
    for k, m in enumerate(names):
        row: dict[str, Any] = {
            "model": m,
            "role": GENERATOR_ROLE if generator_first and k == 0 else EXTRA_ROLE,
        }
        for r in reasons:
            has = counts is not None and m in counts.index and r in counts.columns
            row[r] = int(counts.loc[m, r]) if has else 0
        row["kept"] = sum(row[r] for r in reasons)
        row["share"] = row["kept"] / total
        row["answered"] = int(answered.get(m, 0))
        row["missing"] = int(missing.get(m, 0))
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


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


def _stored_features(frame: pd.DataFrame) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per group of examples with the same number of candidates: the stacked stored score
    matrices, exact-match relations and empty masks (`consensus.decide`'s inputs)."""
    groups: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for scores, cands in zip(frame["scores"], frame["candidates"], strict=True):
        m = np.asarray(scores, dtype=float)
        raw = ["" if c is None else str(c) for c in cands]
        feats = (m, equal_matrix([normalize(c) for c in raw]), empty_mask(raw))
        groups.setdefault(len(m), []).append(feats)
    return [tuple(np.stack(a) for a in zip(*g, strict=True)) for g in groups.values()]


def threshold_curve(
    frame: pd.DataFrame, thresholds: Sequence[float], rule: str = "sum"
) -> pd.DataFrame:
    """Stage-4 decisions at each threshold, recomputed from the stored score matrices.

    Each decision is `consensus.decide` (the one stage-4 rule) on the stored matrix, the
    exact-match relation and the empty mask of the stored candidates: `select_consensus`
    without recomputing Rouge-L.

    Args:
        frame: `ensemble_frame` rows (scores, candidates).
        thresholds: the thresholds to evaluate.
        rule: the selection rule ("sum" or "best_pair").

    Returns:
        One row per threshold: threshold, examples, kept, kept_fraction and one column per reason.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    n = len(frame)
    feats = _stored_features(frame) if n else []
    rows = []
    for t in thresholds:
        counts = np.zeros(len(REASONS), dtype=int)
        for scores, equal, empty in feats:
            d = decide(scores, equal, empty, float(t), rule)
            counts += np.bincount(d.reason, minlength=len(REASONS))
        kept = int(counts[EXACT] + counts[CONSENSUS])
        rows.append(
            {
                "threshold": float(t),
                "examples": n,
                "kept": kept,
                "kept_fraction": kept / n if n else float("nan"),
                **{r: int(c) for r, c in zip(REASONS, counts, strict=True)},
            }
        )
    return pd.DataFrame(rows)


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
