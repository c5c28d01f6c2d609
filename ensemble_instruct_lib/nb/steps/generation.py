"""Steps of notebook 02 (generation): stages 1-3 through the pipeline, and what the plots need."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...engines.base import Backend
from .configs import (
    GenerationConfig,  # noqa: F401 - re-exported for the notebook
    config_table,  # noqa: F401 - re-exported for the notebook
)

# --------------------------------------------------------------------------------------------
# notebook 02: generation


def run_generation(
    config: GenerationConfig,
    *,
    backends: Mapping[str, Backend] | None = None,
    progress: bool = True,
) -> Any:
    """Run (or resume) the pipeline into `config.run_path`; return `load_run`. `backends`:
    ready backends by model name instead of the config's models (the notebook passes fake LMs
    when asked).

    Stages 1-3 are what notebook 02 shows; stage 4 and the export run too (when the config has
    extra models), so the run dir holds what notebooks 03 (``ensembled.jsonl``) and 05
    (``alpaca.jsonl``, ``alpaca_single_output.jsonl``) read."""
    from ...runs.pipeline import run
    from ...runs.run_folder import load_run

    run(
        config.run_config,
        config.run_path,
        backends=dict(backends) if backends is not None else None,
        progress=progress,
        stages=(1, 2, 3, 4),
        export=True,
    )
    return load_run(config.run_path)


def token_table(tables: Any) -> Any:
    """The run's token ledger (`engines.ledger`): per stage and model, calls, new calls, cache
    hits, failures, prompt and completion tokens, wall time and generated tokens per second."""
    import pandas as pd

    from ...engines.ledger import ledger_rows

    return pd.DataFrame(ledger_rows(tables.manifest.get("ledger", {})))


def novelty_threshold(tables: Any) -> float:
    """The novelty threshold a run used (from its manifest)."""
    return float(tables.manifest["config"]["instruction"]["novelty_threshold"])
