"""The small tables the notebooks show and their figures draw, as pure functions of DataFrames.

Inputs are the frames of `run_folder.load_run` (stages 1-4, columns as documented there) and the
stage-4 frame of `ensemble_frame` (one row per example, kept or dropped, with its score matrix).
Stage-4 statistics that depend on the threshold are recomputed from the stored score matrices
(`threshold_curve`, through `consensus.decide`), so a threshold sweep needs no Rouge-L call.
`save_table` writes any table as CSV beside the figures.

Its length (over 400 lines) is one short builder per table of notebooks 02 and 03; they share the
stage-4 frame's helpers (member order, named scores).

Not here: the figures drawn from these tables (`plots.py`, `grid_plots.py`), anything interactive
(`widgets.py`) and anything that runs models (`steps/`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

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

# --------------------------------------------------------------------------------------------
# writing


def save_table(df: pd.DataFrame, out_dir: str | Path, name: str, *, index: bool = False) -> Path:
    """Write `df` as ``<out_dir>/<name>.csv`` (folder created) and return the path."""
    path = Path(out_dir) / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=index)
    return path


def _words(texts: pd.Series) -> pd.Series:
    return texts.fillna("").astype(str).str.split().str.len()


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
