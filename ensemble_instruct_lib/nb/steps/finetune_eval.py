"""Steps of notebook 05 (fine-tuning and evaluation): train on datasets, evaluate on benchmarks,
compare with the recorded GPT-3-family models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ...data.public import load_predictions
from ...errors import ConfigError
from ...runs.notebooks import resolve_path
from .configs import (
    FinetuneEvalConfig,  # noqa: F401 - re-exported for the notebook
    config_table,  # noqa: F401 - re-exported for the notebook
)

# --------------------------------------------------------------------------------------------
# notebook 05: fine-tuning and evaluation


def finetune_datasets(
    config: FinetuneEvalConfig, *, callbacks: Sequence[Any] = ()
) -> dict[str, Any]:
    """Fine-tune `config.base_model` on each dataset (resuming finished or partial runs). A
    dataset with no examples (a small run whose ensemble kept nothing) is skipped with a printed
    line saying so.

    Returns:
        System name -> `finetune.FinetuneResult`.
    """
    from ...data.jsonl import read_jsonl
    from ...train.finetune import finetune

    runs: dict[str, Any] = {}
    for name, path in config.datasets.items():
        if not read_jsonl(resolve_path(path)):
            print(
                f"dataset {name!r} ({path}) has no examples: skipped (generate more in notebook 02, "
                "e.g. overrides={'num_instructions': 20})"
            )
            continue
        runs[name] = finetune(config.finetune_config_for(name), callbacks=callbacks)
    return runs


def run_table(runs: Mapping[str, Any]) -> pd.DataFrame:
    """One row per fine-tuning run: sizes, steps and final losses (from its metrics.json)."""
    keys = [
        "n_train",
        "n_val",
        "n_dropped_too_long",
        "global_step",
        "train_loss",
        "eval_loss",
        "device",
        "precision",
    ]
    return pd.DataFrame(
        [
            {"system": name, **{k: r.metrics.get(k) for k in keys}, "model_dir": str(r.model_dir)}
            for name, r in runs.items()
        ]
    )


def loss_curves(runs: Mapping[str, Any]) -> pd.DataFrame:
    """The runs' loss logs stacked, with a `system` column (for `plots.plot_loss_curves`)."""
    parts = [r.loss_log.assign(system=name) for name, r in runs.items() if not r.loss_log.empty]
    if not parts:
        return pd.DataFrame(columns=["system", "step", "loss", "eval_loss"])
    return pd.concat(parts, ignore_index=True)


def benchmark_items(config: FinetuneEvalConfig) -> dict[str, list[Any]]:
    """Benchmark name -> eval items (the first `max_items` of each when set)."""
    from ...train.evaluate import user_oriented_items

    out: dict[str, list[Any]] = {}
    for bench in config.benchmarks:
        if bench == "user_oriented":
            items = user_oriented_items()
        else:
            from ...data.superni import load_superni_items

            items = load_superni_items(
                resolve_path(config.superni_dir) if config.superni_dir else None
            )
        out[bench] = items[: config.max_items] if config.max_items else items
    return out


@dataclass
class Comparison:
    """Scores of several systems on several benchmarks.

    Attributes:
        scores: one row per (system, benchmark): system, kind ("tuned" or "recorded"),
            benchmark, rougeL, exact_match, n.
        per_category: one row per (system, benchmark, category): n, rougeL, exact_match.
    """

    scores: pd.DataFrame
    per_category: pd.DataFrame


def _recorded_predictions(model: str, items: Sequence[Any]) -> dict[str, str]:
    by_key = {
        (r["instruction"].strip(), r["input"].strip()): r["response"]
        for r in load_predictions(model)
    }
    return {it.id: by_key.get((it.instruction.strip(), it.input.strip()), "") for it in items}


def evaluate_systems(
    config: FinetuneEvalConfig, runs: Mapping[str, Any], items: Mapping[str, Sequence[Any]]
) -> Comparison:
    """Score each fine-tuned model on each benchmark, plus the recorded reference models.

    The base model (system "base", when `config.evaluate_base`) and the tuned models answer
    greedily through `HFBackend` (predictions kept, resumable, under
    ``<out_dir>/eval/<system>/<benchmark>/``); the recorded models' answers are scored on the same
    user-oriented items (they exist for no other benchmark).
    """
    from ...engines import make_backend
    from ...train.evaluate import evaluate_backend, score_predictions

    rows, cats = [], []

    def add(system: str, kind: str, bench: str, result: Any) -> None:
        rows.append({"system": system, "kind": kind, "benchmark": bench, **result.summary()})
        pc = result.per_category.reset_index().rename(columns={"task_category": "category"})
        cats.append(pc.assign(system=system, kind=kind, benchmark=bench))

    systems: list[tuple[str, str, str]] = []
    if config.evaluate_base:
        base = resolve_path(config.base_model)
        systems.append(("base", "base", str(base) if base.exists() else config.base_model))
    for name, run in runs.items():
        if run.model_dir is None:
            raise ConfigError(f"{name}: the run saved no full model (LoRA without merge_lora)")
        systems.append((name, "tuned", str(run.model_dir)))
    for name, kind, model in systems:
        backend = make_backend({"kind": "hf", "model": model, **config.backend_options})
        try:
            for bench, its in items.items():
                result = evaluate_backend(
                    backend,
                    its,
                    max_new_tokens=config.max_new_tokens,
                    batch_size=config.eval_batch_size,
                    run_dir=config.out_path / "eval" / name / bench,
                )
                add(name, kind, bench, result)
        finally:
            backend.close()
    if "user_oriented" in items:
        for model in config.reference_models:
            its = items["user_oriented"]
            add(
                model,
                "recorded",
                "user_oriented",
                score_predictions(_recorded_predictions(model, its), its),
            )
    scores = pd.DataFrame(rows)
    per_category = pd.concat(cats, ignore_index=True) if cats else pd.DataFrame()
    if not per_category.empty:
        per_category = per_category[
            ["system", "kind", "benchmark", "category", "n", "rougeL", "exact_match"]
        ]
    return Comparison(scores=scores, per_category=per_category)


# --------------------------------------------------------------------------------------------
# the replication study's results (`python -m ensemble_instruct_lib replicate`)


def study_tables(config: FinetuneEvalConfig) -> dict[str, Any] | None:
    """The replication study's tables, rebuilt from its folder (`study_dir`): no LM call, no
    training, nothing written; an unfinished study shows what it has. None (and a line saying how
    to make one) when the folder holds no study.

    Returns:
        ``{"scores", "systems", "comparisons", "data", "timings"}`` DataFrames and ``summary``
        (the README's markdown table).
    """
    from ...analysis.replicate import study_at

    if config.study_dir is None:
        raise ConfigError("study_dir is None: name a study folder to show its results")
    out = resolve_path(config.study_dir)
    try:
        study = study_at(out)
    except ConfigError as e:
        print(e)
        return None
    return study.run(report_only=True, write=False)


def save_study_figures(tables: Mapping[str, Any] | None, out_dir: Any) -> list[Any]:
    """`study_figures`, each saved as ``<out_dir>/<name>.png``; the figures, to display."""
    from .. import plots

    figs = study_figures(tables)
    for name, fig in figs.items():
        plots.save_figure(fig, out_dir, name)
    return list(figs.values())


def study_figures(tables: Mapping[str, Any] | None) -> dict[str, Any]:
    """The study's figures (intervals of every comparison, every system's score); none for a
    study with nothing scored yet."""
    from ...analysis import replication_report as rep

    figs: dict[str, Any] = {}
    if tables is None:
        return figs
    if not tables["comparisons"].empty:
        figs["study_comparisons"] = rep.intervals_figure(tables["comparisons"])
    if not tables["systems"].empty:
        figs["study_scores"] = rep.scores_figure(tables["systems"])
    return figs
