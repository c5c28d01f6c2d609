"""Steps of notebook 03 (ensembling): stage 4 on a run dir or on recorded outputs, as a study
with per-example decisions and quality against gold."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pandas as pd

from ...runs.notebooks import resolve_path
from .ablations import selector_agreement  # noqa: F401 - re-exported for the notebook
from .configs import (
    DEFAULT_RUN_DIR,
    NOTEBOOK_02_COMMAND,
    EnsemblingConfig,  # noqa: F401 - re-exported for the notebook
    config_table,  # noqa: F401 - re-exported for the notebook
)

# --------------------------------------------------------------------------------------------
# notebook 03: ensembling


@dataclass
class EnsembleStudy:
    """Stage 4 over one set of examples, ready to plot.

    Attributes:
        frame: one row per example (see `tables.ensemble_frame`), with gold columns
            ``gold:<system>`` when the source has gold outputs.
        models: the members in candidate order.
        threshold, rule: the consensus settings used.
        source: "recorded" or the run dir.
        gold: the recorded ensemble's summary (system, kept_mean, all_mean), or None.
        generator_first: whether the first member is the generator's stage-2 output (False
            for a self-ensemble run, whose candidates are all stage-3 samples).
    """

    frame: pd.DataFrame
    models: list[str]
    threshold: float
    rule: str
    source: str
    gold: pd.DataFrame | None = None
    generator_first: bool = True

    def settings(self) -> pd.DataFrame:
        kept = int(self.frame["kept"].sum()) if not self.frame.empty else 0
        return pd.DataFrame(
            [
                {
                    "source": self.source,
                    "models": ", ".join(self.models),
                    "threshold": self.threshold,
                    "rule": self.rule,
                    "examples": len(self.frame),
                    "kept": kept,
                }
            ]
        )


def missing_run_message(config: EnsemblingConfig) -> str | None:
    """Why the run part cannot run (no run dir set, or no run in it), naming the command that
    makes the default run; None when the run dir holds a run."""
    if config.run_dir is None:
        return "run_dir is None: the part on a generated run is skipped"
    run = resolve_path(config.run_dir)
    if (run / "manifest.json").exists():
        return None
    return (
        f"no generated run in {config.run_dir} ({run}): run notebook 02 first, "
        f"e.g. {NOTEBOOK_02_COMMAND}"
        + ("" if config.run_dir == DEFAULT_RUN_DIR else f" -p run_dir={config.run_dir}")
    )


def run_study(config: EnsemblingConfig) -> EnsembleStudy | None:
    """Stage 4 on `config.run_dir` (re-run with the config's threshold/rule), or None after
    printing `missing_run_message` when there is no run there."""
    message = missing_run_message(config)
    if message is not None:
        print(message)
        return None
    return ensemble_study(config)


def recorded_study(config: EnsemblingConfig) -> EnsembleStudy:
    """Stage 4 on the recorded answers of `config.models`, whatever `run_dir` is."""
    return ensemble_study(dataclasses.replace(config, run_dir=None))


def report_run(study: EnsembleStudy | None, config: EnsemblingConfig) -> None:
    """Notebook 03's part on a generated run, in one step: the settings, kept fraction and
    reasons, pairwise agreement (per example and per member pair), whose output is kept (per
    member, and by member and reason: `kept_sources`) and the threshold curve, each saved as
    ``run_<name>.csv`` / ``.png`` under `config.out_path` and displayed (the threshold curve
    over `config.thresholds`). Nothing when `study` is None."""
    from IPython.display import display

    from .. import plots, tables

    if study is None:
        return
    out_path = config.out_path
    tables.save_table(example_table(study), out_path, "run_examples")
    display(study.settings())
    reasons = tables.consensus_reasons(study.frame)
    tables.save_table(reasons, out_path, "run_reasons")
    display(reasons)
    figures = {"run_reasons": plots.plot_consensus_reasons(reasons)}
    pairs = tables.pairwise_scores(study.frame)
    tables.save_table(pairs, out_path, "run_pairwise")
    figures["run_pairwise"] = plots.plot_pairwise(pairs, study.threshold)
    pair_table = member_pairs(study)
    tables.save_table(pair_table, out_path, "run_pair_agreement")
    display(pair_table)
    figures["run_agreement_matrix"] = plots.plot_pair_agreement(pair_table, study.threshold)
    chosen = tables.chosen_counts(study.frame)
    tables.save_table(chosen, out_path, "run_chosen")
    display(chosen)
    figures["run_chosen"] = plots.plot_chosen(chosen)
    sources = kept_sources(study)
    tables.save_table(sources, out_path, "run_sources")
    display(sources)
    figures["run_sources"] = plots.plot_kept_sources(sources)
    curve = tables.threshold_curve(study.frame, config.thresholds, study.rule)
    tables.save_table(curve, out_path, "run_threshold_curve")
    figures["run_threshold_curve"] = plots.plot_threshold_curve(curve, study.threshold)
    for name, fig in figures.items():
        plots.save_figure(fig, out_path, name)
        display(fig)


def ensemble_study(config: EnsemblingConfig) -> EnsembleStudy:
    """Stage 4 on a run dir (re-run with the config's threshold/rule) or on recorded outputs."""
    from ..tables import ensemble_frame

    if config.run_dir is not None:
        from ...runs.config import load_config
        from ...runs.run_folder import load_run
        from ...runs.stage3 import candidate_names
        from ...runs.stage4 import run_stage4

        run = resolve_path(config.run_dir)
        run_stage4(run, threshold=config.threshold, rule=config.rule)
        tables = load_run(run)
        frame = ensemble_frame(tables.ensembled, tables.dropped)
        cfg = tables.manifest["config"]
        run_config = load_config(cfg)
        models = candidate_names(run_config)
        threshold = cfg["consensus"]["threshold"] if config.threshold is None else config.threshold
        return EnsembleStudy(
            frame,
            models,
            float(threshold),
            config.rule or cfg["consensus"]["rule"],
            str(run),
            generator_first=run_config.output.self_ensemble is None,
        )
    from ...analysis.recorded_ensemble import ensemble_recorded

    threshold = 0.01 if config.threshold is None else float(config.threshold)
    rule = config.rule or "sum"
    rec = ensemble_recorded(
        config.models, threshold=threshold, rule=rule, stop=config.stop, seed=config.seed
    )
    ex = rec.examples
    frame = pd.DataFrame(
        {
            "id": [f"uo-{k:03d}" for k in range(len(ex))],
            "task_type": ["A" if str(i).strip() else "B" for i in ex["input"]],
            "instruction": ex["instruction"],
            "input": ex["input"],
            "output": ex["consensus"],
            "reason": ex["reason"],
            "chosen_index": [r.index for r in rec.results],
            "chosen_model": ex["chosen_model"],
            "min_score": ex["min_score"],
            "scores": [r.scores.tolist() for r in rec.results],
            "candidates": ex[[f"response:{m}" for m in rec.models]].values.tolist(),
            "models": [list(rec.models)] * len(ex),
            "kept": ex["kept"].astype(bool),
            "target": ex["target"],
        }
    )
    gold_cols = [c for c in ex.columns if c.startswith("gold:")]
    frame = pd.concat([frame, ex[gold_cols]], axis=1)
    return EnsembleStudy(frame, list(rec.models), threshold, rule, "recorded", rec.summary)


def example_table(study: EnsembleStudy) -> pd.DataFrame:
    """The study's examples without the list columns: what a CSV of stage 4 should hold."""
    cols = [
        "id",
        "task_type",
        "kept",
        "reason",
        "chosen_model",
        "min_score",
        "instruction",
        "input",
        "output",
    ]
    return study.frame[[c for c in cols if c in study.frame.columns]]


def kept_sources(study: EnsembleStudy) -> pd.DataFrame:
    """Which member each kept output came from (the generator's stage-2 output or an extra
    model's), split by exact_match / consensus: `tables.kept_sources` over the study's members."""
    from .. import tables

    return tables.kept_sources(study.frame, study.models, generator_first=study.generator_first)


def member_pairs(study: EnsembleStudy) -> pd.DataFrame:
    """Mean pairwise Rouge-L and share of examples above the study's threshold for every pair
    of members, over kept and dropped examples: `tables.pair_agreement`."""
    from .. import tables

    return tables.pair_agreement(study.frame, study.threshold, study.models)


def gold_table(study: EnsembleStudy) -> pd.DataFrame:
    """Mean Rouge-L x100 against gold per system (members, consensus, random, oracle); an empty
    frame with the same columns when the source has no gold outputs."""
    if study.gold is None:
        return pd.DataFrame(columns=["system", "kept_mean", "all_mean", "kept", "examples"])
    return study.gold


def selector_comparison(config: EnsemblingConfig) -> pd.DataFrame:
    """The stage-4 selectors (`config.selectors`, plus the judge when `config.judge_model` is
    set) on the recorded answers of `config.models` (in that candidate order), against gold:
    one row per selector with kept fraction, Rouge-L x100 on the kept examples and on all (a
    dropped one scoring 0), and ``agree_<selector>`` columns. Always on the recorded answers
    (a generated run has no gold), whatever `run_dir` is."""
    from .ablations import selector_rows

    rows = selector_rows(config, model_sets=[list(config.models)], seeds=[config.seed])
    return rows.drop(columns=["seed", "size", "members", "generator"])


RUN_SELECTOR_COLUMNS = ["selector", "kept_fraction", "n_examples"]


def run_selector_comparison(config: EnsemblingConfig) -> pd.DataFrame:
    """The stage-4 selectors (`config.selectors`, plus the run's judges or reward model when
    it configures them) on the generated run in `config.run_dir`, with `config.threshold` (None:
    the run's): kept fraction, examples and ``agree_<selector>`` (same keep decision and same
    candidate), from `analysis.selectors_on_run.run_selector_table`; the run's stage-4 files are
    left as they are. No gold: a generated run has none. An empty table without a run."""
    if missing_run_message(config) is not None:
        return pd.DataFrame(columns=RUN_SELECTOR_COLUMNS)
    from ...analysis.selectors_on_run import run_selector_table

    entries = list(dict.fromkeys([*config.selectors, "judge", "reward"]))
    return run_selector_table(resolve_path(config.run_dir), entries, threshold=config.threshold)
