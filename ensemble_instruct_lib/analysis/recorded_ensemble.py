"""Stage 4 on real recorded LM outputs: consensus over GPT-3-family answers, scored against gold.

METHOD.md "Real recorded LM outputs": eight GPT-3-family models answered the 252 user-oriented
instructions. Treating the first chosen model as the instance generator and the others as the extra
LMs, this runs `select_consensus` on every example and measures, against the gold targets (Rouge-L
F with Porter stemming, ``score(target=gold, prediction=output)``, x100), the consensus output and
each member on the kept examples, each member on all examples, a random member, and the oracle (the
best member per example). No model is needed. The gold targets are used only for scoring.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data.public import check_recorded_models, load_recorded
from ..method.consensus import ConsensusResult, select_consensus
from ..method.parsing import OUTPUT_STOPS, parse_output
from ..method.rouge import rouge_l_pairs

DEFAULT_MODELS = ("text-davinci-003", "text-davinci-002", "text-davinci-001")
STOP_MODES = ("none", "method")


@dataclass
class RecordedEnsemble:
    """The outcome of `ensemble_recorded`.

    Attributes:
        examples: one row per example: instruction, input, target, each model's response, the
            decision (index, reason, min_score, chosen model) and per-model Rouge-L against gold.
        results: the `ConsensusResult` of every example, in order.
        summary: one row per system (consensus, each member, random, oracle) with the mean
            Rouge-L x100 on kept examples and on all examples.
        models: the models, in candidate order.
    """

    examples: pd.DataFrame
    results: list[ConsensusResult]
    summary: pd.DataFrame
    models: list[str]

    @property
    def kept(self) -> int:
        return int(self.examples["kept"].sum())

    def kept_records(self) -> list[dict[str, Any]]:
        """The kept examples in the kit's dataset record format."""
        out = []
        for row, res in zip(self.examples.itertuples(index=False), self.results, strict=True):
            if res.kept:
                out.append(
                    {
                        "instruction": row.instruction,
                        "input": row.input,
                        "output": res.output,
                        "chosen_model": self.models[res.index],
                        "reason": res.reason,
                        "min_score": res.min_score,
                        "scores": res.scores.tolist(),
                        "models": self.models,
                    }
                )
        return out


def ensemble_recorded(
    models: Sequence[str] = DEFAULT_MODELS,
    *,
    threshold: float = 0.01,
    rule: str = "sum",
    stop: str = "none",
    seed: int = 0,
    data_root: str | Path | None = None,
) -> RecordedEnsemble:
    """Consensus over recorded model outputs, with quality against gold.

    Args:
        models: two or more of `data.public.PREDICTION_MODELS`; the first plays the instance generator.
        threshold, rule: passed to `select_consensus`.
        stop: "none" uses the responses as recorded (stripped); "method" first cuts each at the
            stage-3 stop markers (a blank line or the end marker), as the pipeline's stage 3 would.
        seed: seed of the random-member baseline.
        data_root: the data folder (default: EI_DATA_DIR or the fetched copy).
    """
    models = list(models)
    if len(models) < 2:
        raise ValueError(f"choose at least 2 models, got {models}")
    check_recorded_models(models)
    if stop not in STOP_MODES:
        raise ValueError(f"stop must be one of {STOP_MODES}, got {stop!r}")
    examples = load_recorded(models, data_root)

    def clean(text: str) -> str:
        return parse_output(text, OUTPUT_STOPS) if stop == "method" else text.strip()

    rows: list[dict[str, Any]] = []
    results = []
    for e in examples:
        cands = [clean(e.responses[m]) for m in models]
        res = select_consensus(cands, threshold=threshold, rule=rule)
        results.append(res)
        row = {"instruction": e.instruction, "input": e.input, "target": e.target}
        row.update({f"response:{m}": c for m, c in zip(models, cands, strict=True)})
        row.update(
            kept=res.kept,
            reason=res.reason,
            index=res.index,
            chosen_model=None if res.index is None else models[res.index],
            min_score=res.min_score,
            consensus=res.output,
        )
        rows.append(row)
    df = pd.DataFrame(rows)
    targets = df["target"].tolist()
    for m in models:
        df[f"gold:{m}"] = rouge_l_pairs(df[f"response:{m}"].tolist(), targets, stem=True) * 100
    member = df[[f"gold:{m}" for m in models]].to_numpy()
    df["gold:consensus"] = np.where(
        df["kept"], member[np.arange(len(df)), df["index"].fillna(0).astype(int)], np.nan
    )
    rng = random.Random(seed)
    df["gold:random"] = member[
        np.arange(len(df)), [rng.randrange(len(models)) for _ in range(len(df))]
    ]
    df["gold:oracle"] = member.max(axis=1)
    kept = df["kept"].to_numpy(bool)
    summary_rows = [
        {
            "system": "consensus",
            "kept_mean": df.loc[kept, "gold:consensus"].mean(),
            "all_mean": np.nan,
        }
    ]
    for name in [*models, "random", "oracle"]:
        col = df[f"gold:{name}"]
        summary_rows.append({"system": name, "kept_mean": col[kept].mean(), "all_mean": col.mean()})
    summary = pd.DataFrame(summary_rows)
    summary["kept"] = int(kept.sum())
    summary["examples"] = len(df)
    return RecordedEnsemble(examples=df, results=results, summary=summary, models=models)
