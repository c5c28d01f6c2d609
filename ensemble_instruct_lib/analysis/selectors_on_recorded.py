"""Stage-4 selectors compared on the recorded answers, against gold (issue 15).

One of three modules about stage-4 selection, each a different question: `method/selectors.py` is
the selectors themselves (pure decisions from candidates and scores), `runs/selector_models.py`
runs the models some of them need (LM judges, reward models, embedders), and the two
``analysis/selectors_on_*`` modules compare the selectors: here on the recorded GPT-3-family
answers with quality against the gold outputs, and in `selectors_on_run` on a generated run,
which has no gold.

`selector_grid` runs entries "sum", "best_pair", "mbr:<utility>" and "judge" over the member
lists of `recorded_grids.member_orders`; every decision is `consensus.decide` on the member
list's sub-matrices of the `recorded_matrix`.

Not here: the model-free grids (`recorded_grids`), summaries (`grid_summary`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.public import PREDICTION_MODELS
from ..method.consensus import RULES
from ..method.consensus import decide as consensus_decide
from ..method.selectors import parse_selector_entry, utility_matrix
from .recorded_grids import member_columns, member_orders, nan_mean
from .recorded_matrix import RecordedMatrix, _recorded_matrix, decide, recorded_matrix

#: the selector grid's default entries: "<selector>" or "mbr:<utility>"
SELECTOR_GRID = ("sum", "best_pair", "mbr:rouge_l", "mbr:chrf", "mbr:token_f1")
SELECTOR_METRICS = ("kept_fraction", "gold_kept", "gold_all", "agree_sum")

#: a judge for the grid: (instruction, input, response) lists -> one score per response
JudgeFn = Callable[[Sequence[str], Sequence[str], Sequence[str]], Sequence[float | None]]


@functools.lru_cache(maxsize=8)
def _utility_tensor(
    models: tuple[str, ...], utility: str, stop: str, root: str | None
) -> np.ndarray:
    mat = _recorded_matrix(models, stop, root)
    if utility == "rouge_l":
        return mat.scores
    out = np.stack([utility_matrix(list(row), utility) for row in mat.responses])
    out.setflags(write=False)
    return out


def utility_tensor(
    mat: RecordedMatrix, utility: str, data_root: str | Path | None = None, stop: str = "none"
) -> np.ndarray:
    """(E, M, M) the MBR utility of every pair of recorded responses (cached; rouge_l is the
    matrix's own scores)."""
    if utility == "embedding":
        raise ValueError("the recorded grid has no embedding model: use rouge_l, chrf or token_f1")
    return _utility_tensor(mat.models, utility, stop, None if data_root is None else str(data_root))


def judge_matrix(mat: RecordedMatrix, judge: JudgeFn) -> np.ndarray:
    """(E, M) a judge's score of every recorded response (NaN where it gave none)."""
    instr = [mat.instructions[e] for e in range(mat.examples) for _ in mat.models]
    inputs = [mat.inputs[e] for e in range(mat.examples) for _ in mat.models]
    resp = [t for row in mat.responses for t in row]
    vals = [np.nan if v is None else float(v) for v in judge(instr, inputs, resp)]
    return np.array(vals, dtype=float).reshape(mat.examples, len(mat.models))


def selector_grid(
    selectors: Sequence[str] = SELECTOR_GRID,
    *,
    size: int = 3,
    models: Sequence[str] = PREDICTION_MODELS,
    threshold: float = 0.01,
    ordering: str = "generator",
    max_subsets: int | None = None,
    seeds: Sequence[int] = (0,),
    stop: str = "none",
    judge: JudgeFn | None = None,
    judge_name: str = "judge",
    model_sets: Sequence[Sequence[str]] | None = None,
    data_root: str | Path | None = None,
) -> pd.DataFrame:
    """The stage-4 selectors compared on the recorded answers against gold.

    Every decision is `consensus.decide` on the member list's sub-matrices: the stemmed Rouge-L
    matrix for sum/best_pair (and for the agreement filter of a judge), the utility matrix for
    ``mbr:<utility>`` (its filter runs on the utility), the judge's per-response scores as the
    pick for ``judge`` (`judge` must be given; it scores each recorded response once).

    Args:
        selectors: entries "sum", "best_pair", "mbr:<utility>", "judge".
        size, models, ordering, max_subsets, seeds: the member lists (`member_orders`).
        threshold: the agreement threshold (negative: no filter).
        judge, judge_name: a scoring function for the "judge" entry, and its label.
        model_sets: explicit member lists (generator first) instead of `member_orders`.

    Returns:
        One row per (seed, ordered member list, selector): seed, selector, size, members,
        order, generator, kept_fraction, gold_kept (mean Rouge-L x100 of the kept outputs
        against gold), gold_all (the same over all examples, a dropped one scoring 0), and
        per selector X of the grid ``agree_X``: the share of examples where both keep the same
        candidate or both drop.
    """
    parsed = [(entry, *parse_selector_entry(entry)) for entry in selectors]
    if any(name == "judge" for _, name, _ in parsed) and judge is None:
        raise ValueError("the 'judge' entry needs a judge function (judge=...)")
    if any(name == "reward" for _, name, _ in parsed):
        raise ValueError("the recorded grid scores reward models through judge=...: use 'judge'")
    if model_sets is not None:
        models = sorted({m for ms in model_sets for m in ms}, key=PREDICTION_MODELS.index)
    mat = recorded_matrix(models, stop=stop, data_root=data_root)
    utilities = {u: utility_tensor(mat, u, data_root, stop) for _, n, u in parsed if n == "mbr"}
    judged = judge_matrix(mat, judge) if judge is not None else None
    rows_idx = np.arange(mat.examples)
    out = []
    for seed in seeds:
        orders = (
            [tuple(m) for m in model_sets]
            if model_sets is not None
            else member_orders(models, size, ordering=ordering, max_subsets=max_subsets, seed=seed)
        )
        for names in orders:
            order = mat.index(names)
            idx = np.asarray(order)
            gold = mat.gold[:, idx]
            picks: dict[str, np.ndarray] = {}
            for entry, name, utility in parsed:
                if name in RULES:
                    d = decide(mat, order, threshold, name)
                elif name == "mbr":
                    sub = utilities[utility][:, idx][:, :, idx]
                    equal = mat.equal[:, idx][:, :, idx]
                    d = consensus_decide(sub, equal, mat.empty[:, idx], threshold, "sum")
                else:
                    scores = np.where(np.isnan(judged[:, idx]), -np.inf, judged[:, idx])
                    d = decide(mat, order, threshold, pick=scores.argmax(axis=1))
                picks[entry] = d.index
                kept = d.index >= 0
                picked = np.where(kept, gold[rows_idx, np.maximum(d.index, 0)], 0.0)
                out.append(
                    {
                        "seed": seed,
                        "selector": entry if name != "judge" else f"judge:{judge_name}",
                        **member_columns(names),
                        "kept_fraction": float(kept.mean()),
                        "gold_kept": nan_mean(picked[kept]),
                        "gold_all": nan_mean(picked),
                    }
                )
            for row, (entry, _, _) in zip(out[-len(parsed) :], parsed, strict=True):
                for other, _, _ in parsed:
                    key = "agree_" + (other if not other.startswith("judge") else "judge")
                    row[key] = float((picks[entry] == picks[other]).mean())
    return pd.DataFrame(out)
