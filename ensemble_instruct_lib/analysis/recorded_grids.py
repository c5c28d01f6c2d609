"""Ablations of the method (issue 5), each a pure function returning a tidy DataFrame.

On the real recorded outputs of eight GPT-3-family models to the 252 user-oriented instructions
(METHOD.md "Real recorded LM outputs"), with quality measured against the gold outputs (Rouge-L
F, Porter stemming, x100, as `recorded_ensemble` does):

- `ensemble_size`: every subset of 2..8 members (or a seeded sample of them): kept fraction and
  the consensus output's quality on the kept examples, next to the generator alone, the mean
  single member, a random member and the oracle (best member per example).
- `threshold_sweep`: the consensus threshold from 0 to 0.5 over many member sets.
- `selection_rules`: the sum rule vs the best-pair rule vs a random member vs always the first
  candidate (the generator), on the examples that pass the agreement filter.
- `tuned_vs_vanilla`: ensembles of instruction-tuned members only vs ensembles holding the vanilla
  LM (``davinci``; the seven others are instruction-tuned or fine-tuned variants of it) as an
  extra member or as the generator.

Candidate order: in stage 4 the first candidate is the instance generator's output. The kept
fraction does not depend on the order (an exact match anywhere or a low pair anywhere decides),
except through which candidate is picked when the pick is empty; the output kept depends on it
only through the exact-match shortcut, ties, and the best-pair rule's "first member of the pair".
The generator role matters most for the baselines (the generator alone is the paper's
no-ensemble baseline), so `ordering="generator"` (the default) evaluates every subset once per
member as the generator, the others in the order of `models`; "fixed" uses that order only, and
"all" every permutation.

Speed: every grid reads the `recorded_matrix` (computed once per model list) and decides each
member list with `recorded_matrix.decide` on its sub-matrices, with no Rouge-L recomputed.
`benchmarks/bench_ablations.py` times the grids.

Elsewhere: the stage-4 selector grid on the same data (`selectors_on_recorded`), error bars over a
grid's rows (`grid_summary.summarize`), ablations over pipeline run dirs (prompt methods, demo
counts: `run_grids`), notebook 04's config and steps (`nb/steps/ablations.py`).
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data.public import PREDICTION_MODELS
from ..method.consensus import RULES, Decisions
from .recorded_matrix import RecordedMatrix, decide, mat_names, recorded_matrix

#: the vanilla (not instruction-tuned) model among the recorded ones
VANILLA = ("davinci",)
ORDERINGS = ("fixed", "generator", "all")
SELECTION_RULES = ("sum", "best_pair", "random", "first")
#: the metrics the notebook tabulates per grid
SIZE_METRICS = (
    "kept_fraction",
    "consensus_kept",
    "members_kept",
    "random_kept",
    "oracle_kept",
    "gain_vs_members",
)
THRESHOLD_METRICS = ("kept_fraction", "consensus_kept", "members_kept", "gain_vs_generator")
RULE_METRICS = ("gold_eligible", "gold_kept", "kept_fraction")
VANILLA_METRICS = ("gain_vs_generator", "consensus_kept", "generator_kept", "kept_fraction")


def member_orders(
    models: Sequence[str],
    size: int,
    *,
    ordering: str = "generator",
    max_subsets: int | None = None,
    seed: int = 0,
) -> list[tuple[str, ...]]:
    """The ordered member lists (generator first) a grid evaluates for one subset size.

    Args:
        models: the candidate members; subsets keep this order apart from the generator.
        size: members per ensemble.
        ordering: "fixed" (each subset in `models` order), "generator" (each member of each
            subset once as the generator, the others in `models` order), "all" (permutations).
        max_subsets: evaluate a sample of this many subsets (drawn with `seed`); None: all.
    """
    if ordering not in ORDERINGS:
        raise ValueError(f"ordering must be one of {ORDERINGS}, got {ordering!r}")
    if not 2 <= size <= len(models):
        raise ValueError(f"size must be in [2, {len(models)}], got {size}")
    subsets = list(itertools.combinations(models, size))
    if max_subsets is not None and max_subsets < len(subsets):
        rng = random.Random(f"subsets-{seed}-{size}")
        subsets = sorted(rng.sample(subsets, max_subsets), key=subsets.index)
    orders: list[tuple[str, ...]] = []
    for sub in subsets:
        if ordering == "fixed":
            orders.append(sub)
        elif ordering == "generator":
            orders += [(g, *[m for m in sub if m != g]) for g in sub]
        else:
            orders += list(itertools.permutations(sub))
    return orders


def nan_mean(values: np.ndarray) -> float:
    """The mean, NaN for no values."""
    return float(values.mean()) if values.size else float("nan")


def _random_members(k: int, n: int, seed: int, order: Sequence[str]) -> np.ndarray:
    rng = np.random.default_rng([seed, *(hash_name(m) for m in order)])
    return rng.integers(0, k, n)


def hash_name(name: str) -> int:
    """A stable 32-bit integer for a name (seeds numpy generators; Python's hash is salted)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def _order_metrics(
    mat: RecordedMatrix, order: Sequence[int], d: Decisions, seed: int
) -> dict[str, Any]:
    """Kept fraction and gold quality of one ordered member list's decisions."""
    rows = np.arange(mat.examples)
    order = np.asarray(order)
    kept = d.index >= 0
    gold = mat.gold[:, order]
    rand = gold[rows, _random_members(len(order), mat.examples, seed, mat_names(mat, order))]
    consensus = gold[rows, np.maximum(d.index, 0)][kept]
    generator_kept = nan_mean(gold[kept, 0])
    members_kept = nan_mean(gold[kept].mean(axis=1))
    return {
        "examples": mat.examples,
        "kept": int(kept.sum()),
        "kept_fraction": float(kept.mean()),
        "exact_fraction": float((d.exact >= 0).mean()),
        "consensus_kept": nan_mean(consensus),
        "generator_kept": generator_kept,
        "members_kept": members_kept,
        "random_kept": nan_mean(rand[kept]),
        "oracle_kept": nan_mean(gold[kept].max(axis=1)),
        "generator_all": nan_mean(gold[:, 0]),
        "members_all": nan_mean(gold.mean(axis=1)),
        "oracle_all": nan_mean(gold.max(axis=1)),
        "gain_vs_generator": nan_mean(consensus) - generator_kept,
        "gain_vs_members": nan_mean(consensus) - members_kept,
    }


def member_columns(names: Sequence[str]) -> dict[str, Any]:
    """A member list's label columns: size, members (canonical order), order, generator."""
    return {
        "size": len(names),
        "members": "+".join(sorted(names, key=PREDICTION_MODELS.index)),
        "order": "+".join(names),
        "generator": names[0],
    }


def ensemble_size(
    sizes: Sequence[int] = tuple(range(2, 9)),
    *,
    models: Sequence[str] = PREDICTION_MODELS,
    threshold: float = 0.01,
    rule: str = "sum",
    ordering: str = "generator",
    max_subsets: int | None = None,
    seeds: Sequence[int] = (0,),
    stop: str = "none",
    data_root: str | Path | None = None,
) -> pd.DataFrame:
    """Number of ensembled models: one row per (seed, ordered member list).

    Args:
        sizes: ensemble sizes (2..len(models)).
        models: the members to draw from (default: all eight recorded models).
        threshold, rule: the consensus settings.
        ordering: see `member_orders`.
        max_subsets: per size, a sample of this many subsets drawn with each seed (None: all).
        seeds: seeds of the subset sample and of the random-member baseline.

    Returns:
        Columns seed, size, members, order, generator, then the metrics: examples, kept,
        kept_fraction, exact_fraction, consensus_kept, generator_kept, members_kept,
        random_kept, oracle_kept (means on the kept examples), generator_all, members_all,
        oracle_all (on all examples), gain_vs_generator, gain_vs_members.
    """
    mat = recorded_matrix(models, stop=stop, data_root=data_root)
    rows = []
    for seed in seeds:
        for size in sizes:
            orders = member_orders(
                models, size, ordering=ordering, max_subsets=max_subsets, seed=seed
            )
            for names in orders:
                order = mat.index(names)
                d = decide(mat, order, threshold, rule)
                rows.append(
                    {"seed": seed, **member_columns(names), **_order_metrics(mat, order, d, seed)}
                )
    return pd.DataFrame(rows)


def threshold_sweep(
    thresholds: Sequence[float] = tuple(round(0.02 * k, 2) for k in range(26)),
    *,
    size: int = 3,
    model_sets: Sequence[Sequence[str]] | None = None,
    models: Sequence[str] = PREDICTION_MODELS,
    rule: str = "sum",
    ordering: str = "generator",
    max_subsets: int | None = None,
    seed: int = 0,
    stop: str = "none",
    data_root: str | Path | None = None,
) -> pd.DataFrame:
    """The consensus threshold: one row per (ordered member list, threshold).

    Args:
        thresholds: thresholds to evaluate (default 0, 0.02, ..., 0.5).
        size, models, ordering, max_subsets, seed: the member lists (`member_orders`), unless
            `model_sets` names them (each in candidate order, the generator first).

    Returns:
        Columns threshold, size, members, order, generator and the `ensemble_size` metrics.
    """
    mat = recorded_matrix(
        sorted(set(models) | {m for s in model_sets or () for m in s}, key=PREDICTION_MODELS.index),
        stop=stop,
        data_root=data_root,
    )
    orders = (
        [tuple(s) for s in model_sets]
        if model_sets is not None
        else member_orders(models, size, ordering=ordering, max_subsets=max_subsets, seed=seed)
    )
    rows = []
    for names in orders:
        order = mat.index(names)
        for t in thresholds:
            d = decide(mat, order, float(t), rule)
            rows.append(
                {
                    "threshold": float(t),
                    **member_columns(names),
                    **_order_metrics(mat, order, d, seed),
                }
            )
    return pd.DataFrame(rows)


def selection_rules(
    rules: Sequence[str] = SELECTION_RULES,
    *,
    size: int = 3,
    models: Sequence[str] = PREDICTION_MODELS,
    threshold: float = 0.01,
    ordering: str = "generator",
    max_subsets: int | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    stop: str = "none",
    data_root: str | Path | None = None,
) -> pd.DataFrame:
    """Selection rule: sum vs best_pair vs a random member vs always the first candidate.

    All rules see the same examples: those passing the agreement filter (an exact match, or the
    lowest pairwise score > `threshold`). "sum" and "best_pair" take the exact-match shortcut
    as `select_consensus` does; "random" picks a uniformly random member (per seed) and "first"
    the generator's output, ignoring the scores. A pick whose output is empty is not kept.

    Returns:
        One row per (seed, ordered member list, rule): seed, rule, size, members, order,
        generator, eligible_fraction, kept_fraction, gold_kept (mean gold of the picks kept),
        gold_eligible (over the eligible examples, an empty pick scoring 0), members_eligible,
        oracle_eligible. Deterministic rules repeat their rows for every seed.
    """
    bad = [r for r in rules if r not in SELECTION_RULES]
    if bad:
        raise ValueError(f"rules must be among {SELECTION_RULES}, got {bad}")
    mat = recorded_matrix(models, stop=stop, data_root=data_root)
    rows_idx = np.arange(mat.examples)
    out = []
    for seed in seeds:
        orders = member_orders(models, size, ordering=ordering, max_subsets=max_subsets, seed=seed)
        for names in orders:
            order = mat.index(names)
            gold = mat.gold[:, np.asarray(order)]
            for rule in rules:
                if rule in RULES:
                    d = decide(mat, order, threshold, rule)
                else:
                    pick = (
                        np.zeros(mat.examples, dtype=int)
                        if rule == "first"
                        else _random_members(len(order), mat.examples, seed, names)
                    )
                    d = decide(mat, order, threshold, pick=pick)
                kept = d.index >= 0
                picked = gold[rows_idx, np.maximum(d.chosen, 0)]
                out.append(
                    {
                        "seed": seed,
                        "rule": rule,
                        **member_columns(names),
                        "eligible_fraction": float(d.eligible.mean()),
                        "kept_fraction": float(kept.mean()),
                        "gold_kept": nan_mean(picked[kept]),
                        "gold_eligible": nan_mean(picked[d.eligible]),
                        "members_eligible": nan_mean(gold[d.eligible].mean(axis=1)),
                        "oracle_eligible": nan_mean(gold[d.eligible].max(axis=1)),
                    }
                )
    return pd.DataFrame(out)


def vanilla_role(order: Sequence[str], vanilla: Sequence[str] = VANILLA) -> str:
    """ "tuned_only", "vanilla_extra", "vanilla_generator" or "vanilla_generator_and_extra"."""
    gen = order[0] in vanilla
    extra = any(m in vanilla for m in order[1:])
    if gen and extra:
        return "vanilla_generator_and_extra"
    if gen:
        return "vanilla_generator"
    return "vanilla_extra" if extra else "tuned_only"


def tuned_vs_vanilla(
    *,
    size: int = 3,
    models: Sequence[str] = PREDICTION_MODELS,
    vanilla: Sequence[str] = VANILLA,
    threshold: float = 0.01,
    rule: str = "sum",
    ordering: str = "generator",
    seed: int = 0,
    stop: str = "none",
    data_root: str | Path | None = None,
) -> pd.DataFrame:
    """Instruction-tuned vs vanilla members: every ordered member list of `size` from `models`,
    labelled by the vanilla model's role (`vanilla_role`).

    Returns:
        One row per ordered member list: role, size, members, order, generator and the
        `ensemble_size` metrics (gain_vs_generator answers "does ensembling help?").
    """
    mat = recorded_matrix(models, stop=stop, data_root=data_root)
    rows = []
    for names in member_orders(models, size, ordering=ordering, seed=seed):
        order = mat.index(names)
        d = decide(mat, order, threshold, rule)
        rows.append(
            {
                "role": vanilla_role(names, vanilla),
                **member_columns(names),
                **_order_metrics(mat, order, d, seed),
            }
        )
    return pd.DataFrame(rows)
