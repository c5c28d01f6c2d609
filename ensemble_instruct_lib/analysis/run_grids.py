"""Ablations over pipeline run dirs: prompt methods and demo counts (METHOD.md "Evaluation").

`run_metrics` reads one run dir (any method) into acceptance per stage, novelty, diversity
(distinct leading verbs and verb-noun pairs, as Self-Instruct plotted; see `diversity.py`), lengths
and LM calls; `method_comparison`, `novelty_frame` and `verb_noun_runs` compare several runs; the
grids `method_sweep` (Ensemble-Instruct vs Self-Instruct vs Alpaca prompting on the same backend)
and `demo_count_sweep` (seed/generated demos in instruction generation) run pipelines through
`sweep.run_sweep`. Error bars come from `grid_summary.summarize` over runs x seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..runs.metrics import RUN_METRICS, run_metrics  # noqa: F401 - re-exported


def _run_list(runs: Any) -> list[tuple[str, Path]]:
    """(label, run dir) from a mapping, a list of dirs or a sweep table (its done points)."""
    if isinstance(runs, pd.DataFrame):
        done = runs[runs["status"] == "done"] if "status" in runs else runs
        done = done.drop_duplicates("out_dir")
        labels = done["point"] if "point" in done else done["out_dir"].map(lambda p: Path(p).name)
        return [(str(lab), Path(p)) for lab, p in zip(labels, done["out_dir"], strict=True)]
    if isinstance(runs, Mapping):
        return [(str(k), Path(v)) for k, v in runs.items()]
    return [(Path(p).name, Path(p)) for p in runs]


def method_comparison(runs: Any) -> pd.DataFrame:
    """`run_metrics` of several runs, one row each, with a "run" label.

    Args:
        runs: {label: run dir}, a list of run dirs, or a `sweep.run_sweep` table (its done
            points' out_dir).
    """
    rows = [{"run": label, **run_metrics(path)} for label, path in _run_list(runs)]
    return pd.DataFrame(rows)


def novelty_frame(runs: Any) -> pd.DataFrame:
    """Every judged stage-1 candidate's highest Rouge-L against its pool, per run.

    Returns:
        Columns run, method, max_score, accepted (candidates rejected before the novelty check
        have no score and are left out).
    """
    from ..runs.run_folder import load_run

    parts = []
    for label, path in _run_list(runs):
        t = load_run(path)
        ins = t.instructions
        if ins.empty or "max_score" not in ins:
            continue
        scored = ins.dropna(subset=["max_score"])
        parts.append(
            pd.DataFrame(
                {
                    "run": label,
                    "method": t.manifest["config"]["method"],
                    "max_score": scored["max_score"].astype(float),
                    "accepted": scored["accepted"].astype(bool),
                }
            )
        )
    if not parts:
        return pd.DataFrame(columns=["run", "method", "max_score", "accepted"])
    return pd.concat(parts, ignore_index=True)


def verb_noun_runs(runs: Any) -> pd.DataFrame:
    """The verb and noun (`diversity.verb_noun`) of every accepted instruction, per run.

    Returns:
        Columns run, method, instruction, verb, noun.
    """
    from ..method.diversity import verb_noun_frame
    from ..runs.run_folder import load_run

    parts = []
    for label, path in _run_list(runs):
        t = load_run(path)
        ins = t.instructions
        if ins.empty:
            continue
        frame = verb_noun_frame(ins.loc[ins["accepted"].astype(bool), "instruction"].tolist())
        frame.insert(0, "method", t.manifest["config"]["method"])
        frame.insert(0, "run", label)
        parts.append(frame)
    if not parts:
        return pd.DataFrame(columns=["run", "method", "instruction", "verb", "noun"])
    return pd.concat(parts, ignore_index=True)


def verb_noun_tops(
    frame: pd.DataFrame, by: str = "method", top_verbs: int = 20, top_nouns: int = 4
) -> dict[str, pd.DataFrame]:
    """`diversity.top_verb_nouns` of a `verb_noun_runs` frame, per value of `by` (runs of one
    method pooled)."""
    from ..method.diversity import top_verb_nouns

    if frame.empty:
        return {}
    return {
        str(k): top_verb_nouns(g, top_verbs, top_nouns) for k, g in frame.groupby(by, sort=True)
    }


# ------------------------------------------------------------------------------------------
# pipeline grids (through sweep.run_sweep)


def method_sweep(
    config: str | Path | Mapping[str, Any],
    out_dir: str | Path,
    *,
    methods: Sequence[str] | None = None,
    seeds: Sequence[int] = (0,),
    overrides: Mapping[str, Any] | None = None,
    backends: Callable | str | None = None,
    workers: int | None = 1,
    progress: bool = False,
) -> pd.DataFrame:
    """EI vs Self-Instruct vs Alpaca on the same backend: one pipeline run per (method, seed).

    Args:
        config: a run-config YAML (or dict) naming the generator and extra models.
        methods: the methods compared (None: every registered method, `methods.METHODS`).
        overrides: config keys (dotted for nested ones) every run gets.
        backends: a function config -> ready backends by model name, for every run (tests and
            demos pass `testing.fake.fake_backends`); None builds the config's models.

    Returns:
        The `sweep.run_sweep` table: per run, the parameters and `run_metrics`.
    """
    from ..methods import METHODS
    from ..runs.sweep import run_sweep

    return run_sweep(
        config,
        {"method": list(METHODS if methods is None else methods)},
        out_dir,
        kind="pipeline",
        base_params=dict(overrides or {}),
        seeds=list(seeds),
        backends=backends,
        workers=workers,
        progress=progress,
    )


def demo_count_sweep(
    config: str | Path | Mapping[str, Any],
    out_dir: str | Path,
    *,
    seed_demos: Sequence[int] = (10, 20),
    generated_demos: Sequence[int] = (0, 2, 4),
    task_types: Sequence[str] = ("A", "B"),
    seeds: Sequence[int] = (0,),
    overrides: Mapping[str, Any] | None = None,
    stages: Sequence[int] = (1,),
    backends: Callable | str | None = None,
    workers: int | None = 1,
    progress: bool = False,
) -> pd.DataFrame:
    """Seed and generated demos in Ensemble-Instruct instruction generation vs acceptance and
    novelty: a pipeline run (stage 1 by default) per (seed demos, generated demos, seed), the
    same counts for every type in `task_types`.

    Returns:
        The `sweep.run_sweep` table with `run_metrics`, plus columns seed_demos and
        generated_demos.
    """
    from ..runs.sweep import run_sweep

    table = run_sweep(
        config,
        {
            "instruction.num_seed_demos": [{t: int(n) for t in task_types} for n in seed_demos],
            "instruction.num_generated_demos": [
                {t: int(n) for t in task_types} for n in generated_demos
            ],
        },
        out_dir,
        kind="pipeline",
        base_params={"method": "ensemble_instruct", **dict(overrides or {})},
        seeds=list(seeds),
        backends=backends,
        workers=workers,
        stages=stages,
        progress=progress,
    )
    first = task_types[0]
    table["seed_demos"] = table[f"instruction.num_seed_demos.{first}"]
    table["generated_demos"] = table[f"instruction.num_generated_demos.{first}"]
    return table
