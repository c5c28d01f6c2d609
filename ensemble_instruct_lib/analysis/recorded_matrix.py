"""The recorded answers as matrices, computed once: what every recorded-data grid reads.

On the real recorded outputs of eight GPT-3-family models to the 252 user-oriented instructions
(METHOD.md "Real recorded LM outputs"), `recorded_matrix` computes, once per model list, every
example's pairwise score matrix over all the models (Rouge-L of normalized candidates, stemmed:
the matrix `select_consensus` computes), the exact-match relation, the empty mask and each
response's quality against the gold output (Rouge-L F, Porter stemming, x100, as
`recorded_ensemble` does). A member list's stage-4 decisions are then `consensus.decide` (the one
implementation of the stage-4 rule) over the (E, k, k) sub-matrices of all examples at once
(`decide`; tests check every decision against `select_consensus`), with no Rouge-L recomputed.

Not here: the grids over member lists (`recorded_grids`, `selectors_on_recorded`), their
summaries (`grid_summary`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.public import PREDICTION_MODELS, check_recorded_models, load_recorded
from ..method.consensus import Decisions, empty_mask, equal_matrix, normalize
from ..method.consensus import decide as consensus_decide
from ..method.parsing import OUTPUT_STOPS, parse_output
from ..method.rouge import pairwise_rouge_l, rouge_l_pairs
from .recorded_ensemble import STOP_MODES


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


def mat_names(mat: RecordedMatrix, order: Sequence[int]) -> list[str]:
    """Model names of matrix positions."""
    return [mat.models[i] for i in order]
