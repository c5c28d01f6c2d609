"""Stage-4 selectors compared on a generated run, where there is no gold (issue 15).

One of the modules about stage-4 selection, each a different question: `method/selectors.py` is
the selectors themselves (pure decisions from candidates and scores), `runs/selector_models.py`
runs the models some of them need (LM judges, reward models, embedders), and the two
``analysis/selectors_on_*`` modules compare the selectors without changing anything: on the
recorded answers against gold (`selectors_on_recorded`), and here on a generated run.

`selectors_on_recorded.selector_grid` compares the selectors on the recorded GPT-3-family answers
against gold. A generated run has no gold, so this module asks what can still be asked: per
selector, which examples it keeps and which candidate, how much it keeps, and how often two
selectors decide alike. Each selector runs through `stage4.stage4_decisions`, the code stage 4
itself runs (same candidates, same missing-member handling, same `selectors.select`), with the
run's own settings except the selector; the run's stage-4 files are not rewritten.

Entries are the grid's: ``sum``, ``best_pair``, ``mbr:<utility>``, ``judge``, ``reward``. The
model-backed ones run only when the run's config (or `consensus`) configures them: ``judge``
with ``consensus.judges``, ``reward`` with ``consensus.reward_model``, ``mbr:embedding`` with
``consensus.embedding_model``; otherwise they are left out of the table. Judge calls go through
the run's call cache, as `stage4.run_stage4`'s do.

Not here: quality against gold (`selectors_on_recorded`), rewriting the run (`stage4.run_stage4`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..engines.base import Backend
from ..errors import ConfigError
from ..method.selectors import parse_selector_entry
from ..runs.config import RunConfig, load_config
from ..runs.stage3 import candidate_names
from ..runs.stage4 import SelectorBackends, run_settings, stage4_decisions

#: every entry; the model-backed ones are left out unless configured
RUN_SELECTORS = ("sum", "best_pair", "mbr:rouge_l", "mbr:chrf", "mbr:token_f1", "judge", "reward")


def _configured(entry: str, consensus: Mapping[str, Any]) -> bool:
    name, utility = parse_selector_entry(entry)
    if name == "judge":
        return bool(consensus.get("judges"))
    if name == "reward":
        return bool(consensus.get("reward_model"))
    if utility == "embedding":
        return bool(consensus.get("embedding_model"))
    return True


def _entry_config(saved: dict[str, Any], settings: dict[str, Any], entry: str) -> RunConfig:
    name, utility = parse_selector_entry(entry)
    consensus = {**settings, "selector": name}
    if utility:
        consensus["utility"] = utility
    return load_config({**saved, "consensus": consensus})


def run_selector_decisions(
    run_dir: str | Path,
    selectors: Sequence[str] = RUN_SELECTORS,
    *,
    threshold: float | None = None,
    consensus: Mapping[str, Any] | None = None,
    backends: Mapping[str, Backend] | None = None,
) -> pd.DataFrame:
    """Per example of the run, what each selector decides, without rewriting the run.

    Args:
        run_dir: a finished run dir (its manifest, stage-2 and stage-3 files are read).
        selectors: grid entries (see the module docstring); unconfigured model-backed ones are
            left out.
        threshold: the agreement threshold (None: the run's).
        consensus: further `ConsensusStage` keys (judges, reward_model, ...) over the run's.
        backends: ready judge backends by name (tests, notebooks), instead of building them.

    Returns:
        One row per example (``id``) and one column per selector entry run: the chosen
        candidate's index in the example's candidates, -1 when the example is dropped.
    """

    out = Path(run_dir)
    if not (out / "manifest.json").exists():
        raise ConfigError(f"{out} is not a run dir (no manifest.json): run the pipeline first")
    for entry in selectors:
        try:
            parse_selector_entry(entry)
        except ValueError as e:
            raise ConfigError(f"selectors: {e}") from None
    saved = dict(json.loads((out / "manifest.json").read_text())["config"])
    settings = {k: v for k, v in saved.get("consensus", {}).items() if k != "rule"}
    settings.update(consensus or {})
    if threshold is not None:
        settings["threshold"] = threshold
    entries = [e for e in dict.fromkeys(selectors) if _configured(e, settings)]
    base = load_config({**saved, "consensus": settings})
    names = candidate_names(base)
    if len(names) < 2:
        raise ConfigError(f"{out}: the run has one candidate per example; nothing to select")
    columns: dict[str, dict[str, int]] = {}
    backend_for = SelectorBackends(out, base, backends)
    try:
        for entry in entries:
            cfg = _entry_config(saved, settings, entry)
            kept, dropped, _ = stage4_decisions(
                out, names, backend_for=backend_for, **run_settings(cfg)
            )
            columns[entry] = {
                r["id"]: -1 if r["chosen_index"] is None else int(r["chosen_index"])
                for r in kept + dropped
            }
    finally:
        backend_for.close()
    frame = pd.DataFrame(columns).sort_index()
    frame.index.name = "id"
    return frame.reset_index()


def selector_agreement_table(decisions: pd.DataFrame) -> pd.DataFrame:
    """From `run_selector_decisions`: per selector, ``kept_fraction``, ``n_examples`` and
    ``agree_<other>``, the share of examples on which both make the same keep decision and
    keep the same candidate."""
    entries = [c for c in decisions.columns if c != "id"]
    rows = []
    for entry in entries:
        picks = decisions[entry]
        row: dict[str, Any] = {
            "selector": entry,
            "kept_fraction": float((picks >= 0).mean()) if len(picks) else float("nan"),
            "n_examples": len(picks),
        }
        for other in entries:
            same = picks == decisions[other]
            row[f"agree_{other}"] = float(same.mean()) if len(picks) else float("nan")
        rows.append(row)
    columns = ["selector", "kept_fraction", "n_examples", *(f"agree_{e}" for e in entries)]
    return pd.DataFrame(rows, columns=columns)


def run_selector_table(
    run_dir: str | Path,
    selectors: Sequence[str] = RUN_SELECTORS,
    *,
    threshold: float | None = None,
    consensus: Mapping[str, Any] | None = None,
    backends: Mapping[str, Backend] | None = None,
) -> pd.DataFrame:
    """The selectors compared on a run: `selector_agreement_table` of `run_selector_decisions`
    (same arguments); the run's files are left as they are."""
    decisions = run_selector_decisions(
        run_dir, selectors, threshold=threshold, consensus=consensus, backends=backends
    )
    return selector_agreement_table(decisions)


__all__ = [
    "RUN_SELECTORS",
    "run_selector_decisions",
    "run_selector_table",
    "selector_agreement_table",
]
