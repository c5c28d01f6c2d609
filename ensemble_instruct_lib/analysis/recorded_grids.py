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

Speed: `recorded_matrix` computes, once per model list, every example's pairwise score matrix
over all eight models (Rouge-L of normalized candidates, stemmed: the matrix `select_consensus`
computes), the exact-match relation, and the gold scores; a subset's decisions are then
`consensus.decide` (the one implementation of the stage-4 rule) over the (E, k, k) sub-matrices of
all examples at once (tests check every decision against `select_consensus`), with no Rouge-L
recomputed. `benchmarks/bench_ablations.py` times the grids.

Ablations over pipeline run dirs (prompt methods, demo counts) are in `method_ablations.py`;
notebook 04's config and steps in `steps/ablations.py`.

Error bars: `summarize` gives mean, std, sem and n of each metric over the rows of a group:
subsets x orderings x seeds for the recorded grids (the spread of what one picked ensemble of
that kind gives), runs x seeds for the pipeline grids; with ``over="seed"`` rows are averaged
within each seed first, so the spread is over seeds only.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data.public import PREDICTION_MODELS, check_recorded_models, load_recorded
from ..method.consensus import (
    BELOW,
    CONSENSUS,
    EMPTY,
    EXACT,
    RULES,
    Decisions,
    empty_mask,
    equal_matrix,
    normalize,
)
from ..method.consensus import decide as consensus_decide
from ..method.parsing import OUTPUT_STOPS, parse_output
from ..method.rouge import pairwise_rouge_l, rouge_l_pairs
from ..method.selectors import SELECTORS, UTILITIES, utility_matrix
from ..runs.metrics import RUN_METRICS  # noqa: F401 - re-exported for notebook 04
from .recorded_ensemble import STOP_MODES

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


# ------------------------------------------------------------------------------------------
# the recorded data, precomputed once


@dataclass(frozen=True)
class RecordedMatrix:
    """Everything the recorded-data ablations need, for E examples and M models.

    Attributes:
        models: the M models, in this order along every model axis.
        instructions, targets: per example.
        responses: responses[e][m], as the consensus sees them (stripped, or cut at the
            stage-3 stops with ``stop="method"``).
        scores: (E, M, M) stemmed Rouge-L F of normalized response i (prediction) against j,
            diagonal included: `select_consensus`'s matrix for any subset is a sub-matrix.
        equal: (E, M, M) normalized responses equal and not empty, i != j.
        empty: (E, M) the raw response is empty after stripping.
        gold: (E, M) Rouge-L F x100 of each response against the gold target.
        inputs: per example, the task input ("" when none).
    """

    models: tuple[str, ...]
    instructions: tuple[str, ...]
    targets: tuple[str, ...]
    responses: tuple[tuple[str, ...], ...]
    scores: np.ndarray
    equal: np.ndarray
    empty: np.ndarray
    gold: np.ndarray
    inputs: tuple[str, ...] = ()

    @property
    def examples(self) -> int:
        return len(self.targets)

    def index(self, models: Iterable[str]) -> tuple[int, ...]:
        """Positions of `models` along the model axes."""
        pos = {m: i for i, m in enumerate(self.models)}
        unknown = [m for m in models if m not in pos]
        if unknown:
            raise ValueError(f"models {unknown} are not in this matrix: {list(self.models)}")
        return tuple(pos[m] for m in models)


@functools.lru_cache(maxsize=8)
def _recorded_matrix(models: tuple[str, ...], stop: str, root: str | None) -> RecordedMatrix:
    examples = load_recorded(list(models), root)

    def clean(text: str) -> str:
        return parse_output(text, OUTPUT_STOPS) if stop == "method" else text.strip()

    responses = tuple(tuple(clean(e.responses[m]) for m in models) for e in examples)
    targets = tuple(e.target for e in examples)
    n, m = len(responses), len(models)
    scores = np.zeros((n, m, m))
    equal = np.zeros((n, m, m), dtype=bool)
    for e, row in enumerate(responses):
        norm = [normalize(t) for t in row]
        scores[e] = pairwise_rouge_l(norm, stem=True)
        equal[e] = equal_matrix(norm)
    empty = np.array([empty_mask(row) for row in responses], dtype=bool)
    flat = [t for row in responses for t in row]
    gold_flat = rouge_l_pairs(flat, [t for t in targets for _ in models], stem=True) * 100
    for a in (scores, equal, empty):
        a.setflags(write=False)
    gold = gold_flat.reshape(n, m)
    gold.setflags(write=False)
    return RecordedMatrix(
        models=models,
        instructions=tuple(e.instruction for e in examples),
        targets=targets,
        responses=responses,
        scores=scores,
        equal=equal,
        empty=empty,
        gold=gold,
        inputs=tuple(e.input for e in examples),
    )


def recorded_matrix(
    models: Sequence[str] = PREDICTION_MODELS,
    *,
    stop: str = "none",
    data_root: str | Path | None = None,
) -> RecordedMatrix:
    """The precomputed recorded data for `models` (cached per models, stop and data root).

    Args:
        models: recorded models (default: all eight), aligned on the examples all of them have.
        stop: "none" (responses as recorded, stripped) or "method" (cut at the stage-3 stops).
        data_root: the data folder (default: EI_DATA_DIR or the fetched copy).
    """
    check_recorded_models(models)
    if stop not in STOP_MODES:
        raise ValueError(f"stop must be one of {STOP_MODES}, got {stop!r}")
    return _recorded_matrix(tuple(models), stop, None if data_root is None else str(data_root))


# ------------------------------------------------------------------------------------------
# stage-4 decisions from sub-matrices


def decide(
    mat: RecordedMatrix,
    order: Sequence[int],
    threshold: float = 0.01,
    rule: str = "sum",
    *,
    pick: np.ndarray | None = None,
) -> Decisions:
    """`consensus.decide` for candidates ``[responses[m] for m in order]`` on every example at
    once: the sub-matrices of the precomputed scores, exact-match relation and empty mask.

    Args:
        mat: the recorded data.
        order: model positions in `mat`, the generator first.
        threshold, rule, pick: as `consensus.decide`.
    """
    idx = np.asarray(order)
    if len(idx) < 2:
        raise ValueError(f"consensus needs at least 2 members, got {len(idx)}")
    sub = mat.scores[:, idx][:, :, idx]
    equal = mat.equal[:, idx][:, :, idx]
    return consensus_decide(sub, equal, mat.empty[:, idx], threshold, rule, pick=pick)


def consensus_indices(
    mat: RecordedMatrix, order: Sequence[int], threshold: float = 0.01, rule: str = "sum"
) -> tuple[np.ndarray, np.ndarray]:
    """Per example, the kept candidate's position in `order` (-1 when dropped) and the reason
    code (EXACT, CONSENSUS, BELOW, EMPTY): what `select_consensus` returns as index and reason."""
    d = decide(mat, order, threshold, rule)
    return d.index, d.reason


# ------------------------------------------------------------------------------------------
# member orders


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


def _mean(values: np.ndarray) -> float:
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
    generator_kept = _mean(gold[kept, 0])
    members_kept = _mean(gold[kept].mean(axis=1))
    return {
        "examples": mat.examples,
        "kept": int(kept.sum()),
        "kept_fraction": float(kept.mean()),
        "exact_fraction": float((d.exact >= 0).mean()),
        "consensus_kept": _mean(consensus),
        "generator_kept": generator_kept,
        "members_kept": members_kept,
        "random_kept": _mean(rand[kept]),
        "oracle_kept": _mean(gold[kept].max(axis=1)),
        "generator_all": _mean(gold[:, 0]),
        "members_all": _mean(gold.mean(axis=1)),
        "oracle_all": _mean(gold.max(axis=1)),
        "gain_vs_generator": _mean(consensus) - generator_kept,
        "gain_vs_members": _mean(consensus) - members_kept,
    }


def mat_names(mat: RecordedMatrix, order: Sequence[int]) -> list[str]:
    """Model names of matrix positions."""
    return [mat.models[i] for i in order]


def _describe(names: Sequence[str]) -> dict[str, Any]:
    return {
        "size": len(names),
        "members": "+".join(sorted(names, key=PREDICTION_MODELS.index)),
        "order": "+".join(names),
        "generator": names[0],
    }


# ------------------------------------------------------------------------------------------
# the recorded-data ablations


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
                    {"seed": seed, **_describe(names), **_order_metrics(mat, order, d, seed)}
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
                    **_describe(names),
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
                        **_describe(names),
                        "eligible_fraction": float(d.eligible.mean()),
                        "kept_fraction": float(kept.mean()),
                        "gold_kept": _mean(picked[kept]),
                        "gold_eligible": _mean(picked[d.eligible]),
                        "members_eligible": _mean(gold[d.eligible].mean(axis=1)),
                        "oracle_eligible": _mean(gold[d.eligible].max(axis=1)),
                    }
                )
    return pd.DataFrame(out)


# ------------------------------------------------------------------------------------------
# selectors (method/selectors.py) on the recorded data

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


def parse_selector_entry(entry: str) -> tuple[str, str]:
    """(selector, utility) of a grid entry "<selector>" or "mbr:<utility>"."""
    name, _, utility = entry.partition(":")
    if name not in SELECTORS or (name == "mbr") != bool(utility):
        raise ValueError(
            f"selector grid entries are one of {[s for s in SELECTORS if s != 'mbr']} or "
            f"'mbr:<utility>' with a utility of {list(UTILITIES)}; got {entry!r}"
        )
    if utility and utility not in UTILITIES:
        raise ValueError(f"unknown utility in {entry!r}; choose from {list(UTILITIES)}")
    return name, utility


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
                        **_describe(names),
                        "kept_fraction": float(kept.mean()),
                        "gold_kept": _mean(picked[kept]),
                        "gold_all": _mean(picked),
                    }
                )
            for row, (entry, _, _) in zip(out[-len(parsed) :], parsed, strict=True):
                for other, _, _ in parsed:
                    key = "agree_" + (other if not other.startswith("judge") else "judge")
                    row[key] = float((picks[entry] == picks[other]).mean())
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
                **_describe(names),
                **_order_metrics(mat, order, d, seed),
            }
        )
    return pd.DataFrame(rows)


def summarize(
    rows: pd.DataFrame,
    by: Sequence[str],
    metrics: Sequence[str] | None = None,
    *,
    over: str | None = None,
) -> pd.DataFrame:
    """Mean, std, sem and n of each metric per group, as a long table.

    Args:
        rows: a table from the functions above.
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


__all__ = [
    "ORDERINGS",
    "RULE_METRICS",
    "RUN_METRICS",
    "SELECTION_RULES",
    "SELECTOR_GRID",
    "SELECTOR_METRICS",
    "SIZE_METRICS",
    "THRESHOLD_METRICS",
    "VANILLA",
    "VANILLA_METRICS",
    "BELOW",
    "CONSENSUS",
    "EMPTY",
    "EXACT",
    "RecordedMatrix",
    "consensus_indices",
    "decide",
    "ensemble_size",
    "format_summary",
    "member_orders",
    "recorded_matrix",
    "judge_matrix",
    "parse_selector_entry",
    "selection_rules",
    "selector_grid",
    "utility_tensor",
    "summarize",
    "threshold_sweep",
    "tuned_vs_vanilla",
    "vanilla_role",
]
