"""Steps of notebook 04 (ablations): its validated config, the pipeline grids it runs, headline
numbers; the recorded-output grids live in `analysis/recorded_grids.py` and
`analysis/selectors_on_recorded.py`, the run-dir ones in `analysis/run_grids.py`, their error bars
in `analysis/grid_summary.py`."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd

from ...analysis.recorded_ensemble import DEFAULT_MODELS, STOP_MODES
from ...analysis.recorded_grids import ORDERINGS, SELECTION_RULES
from ...analysis.run_grids import demo_count_sweep, method_sweep
from ...analysis.selectors_on_recorded import SELECTOR_GRID
from ...data.config_builder import check
from ...data.public import PREDICTION_MODELS
from ...method.consensus import RULES
from .configs import NotebookConfig, _recorded_models, check_selectors

# ------------------------------------------------------------------------------------------
# notebook 04's config


def _registered_methods() -> tuple[str, ...]:
    """The prompting methods of the registry (`methods.METHODS`), loaded on first use."""
    from ...methods import METHODS

    return METHODS


@dataclass
class AblationsConfig(NotebookConfig):
    """Notebook 04's parameters, validated (papermill does not check them).

    Attributes:
        out_dir: where tables, figures and metrics.json go.
        models: recorded models the ensembles are drawn from.
        sizes: ensemble sizes of the size grid.
        max_subsets: per size, a seeded sample of subsets (None: all).
        ordering: member orderings (`member_orders`).
        threshold, rule: the consensus settings held fixed in the other grids.
        thresholds: the threshold grid.
        threshold_size: ensemble size of the threshold, rule and vanilla grids.
        rules: the selection rules compared.
        seeds: seeds of the subset samples and the random-member baseline.
        stop: recorded responses as recorded ("none") or cut at the stage-3 stops ("method").
        trio: the paper-style member list (generator first) highlighted in the threshold plot.
        pipeline_config: a run config for the method and demo grids (None: skip them).
        methods: prompting methods compared on that config's generator.
        method_seeds: run seeds of the pipeline grids.
        num_instructions: override the config's instructions per type (None: keep).
        max_new_tokens: cap on the new tokens of every stage's calls in the pipeline grids
            (None: the config's), a size knob for quick runs.
        seed_demos, generated_demos: the demo-count grid (Ensemble-Instruct stage 1).
        workers: processes for the pipeline grids.
        selectors: the stage-4 selectors compared ("sum", "best_pair", "mbr:<utility>", and
            "judge" when `judge_model` is set).
        judge_model: the judge LM of the selector grid: None (skip the judge), "<kind>:<model>"
            (e.g. "hf:google/gemma-3-270m-it") or a backend spec mapping.
    """

    NOTEBOOK: ClassVar[str] = "04_ablations"

    models: list[str] = field(default_factory=lambda: list(PREDICTION_MODELS))
    sizes: list[int] = field(default_factory=lambda: list(range(2, 9)))
    max_subsets: int | None = None
    ordering: str = "generator"
    threshold: float = 0.01
    rule: str = "sum"
    thresholds: list[float] = field(default_factory=lambda: [round(0.02 * k, 2) for k in range(26)])
    threshold_size: int = 3
    rules: list[str] = field(default_factory=lambda: list(SELECTION_RULES))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    stop: str = "none"
    trio: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    pipeline_config: str | None = None
    methods: list[str] = field(default_factory=lambda: list(_registered_methods()))
    method_seeds: list[int] = field(default_factory=lambda: [0])
    num_instructions: int | None = None
    max_new_tokens: int | None = None
    seed_demos: list[int] = field(default_factory=lambda: [10, 20])
    generated_demos: list[int] = field(default_factory=lambda: [0, 2, 4])
    workers: int = 1
    selectors: list[str] = field(default_factory=lambda: list(SELECTOR_GRID))
    judge_model: str | dict[str, Any] | None = None

    def validate(self) -> None:
        super().validate()
        _recorded_models(self.models, "models")
        check(
            len(set(self.models)) == len(self.models) >= 2, "models: 2 or more, distinct", "models"
        )
        check(
            bool(self.sizes) and all(2 <= s <= len(self.models) for s in self.sizes),
            f"sizes must be in [2, {len(self.models)}], got {self.sizes}",
            "sizes",
        )
        check(
            self.max_subsets is None
            or (isinstance(self.max_subsets, int) and self.max_subsets >= 1),
            f"max_subsets must be None or >= 1, got {self.max_subsets!r}",
            "max_subsets",
        )
        check(self.ordering in ORDERINGS, f"ordering must be one of {ORDERINGS}", "ordering")
        check(
            0 <= self.threshold < 1,
            f"threshold must be in [0, 1), got {self.threshold}",
            "threshold",
        )
        check(self.rule in RULES, f"rule must be one of {RULES}, got {self.rule!r}", "rule")
        check(
            bool(self.thresholds) and all(0 <= t < 1 for t in self.thresholds),
            "thresholds must be a non-empty list of values in [0, 1)",
            "thresholds",
        )
        check(
            2 <= self.threshold_size <= len(self.models),
            f"threshold_size must be in [2, {len(self.models)}]",
            "threshold_size",
        )
        bad = [r for r in self.rules if r not in SELECTION_RULES]
        check(
            bool(self.rules) and not bad,
            f"rules must be among {SELECTION_RULES}, got {bad}",
            "rules",
        )
        check(
            bool(self.seeds) and all(isinstance(s, int) for s in self.seeds),
            "seeds: a list of ints",
            "seeds",
        )
        check(self.stop in STOP_MODES, f"stop must be one of {STOP_MODES}", "stop")
        check(
            len(self.trio) >= 2 and all(m in self.models for m in self.trio),
            f"trio must list 2+ of models, got {self.trio}",
            "trio",
        )
        if self.pipeline_config is not None:
            from ...runs.notebooks import resolve_path

            path = resolve_path(self.pipeline_config)
            check(
                path.exists(),
                f"pipeline_config {self.pipeline_config!r}: no such file",
                "pipeline_config",
            )
            self.pipeline_config = str(path)
        known = _registered_methods()
        check(
            bool(self.methods) and set(self.methods) <= set(known),
            f"methods must be among {known}, got {self.methods}",
            "methods",
        )
        check(
            self.num_instructions is None or self.num_instructions >= 1,
            "num_instructions must be None or >= 1",
            "num_instructions",
        )
        check(
            self.max_new_tokens is None
            or (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1),
            "max_new_tokens must be None or an integer >= 1",
            "max_new_tokens",
        )
        check(
            bool(self.seed_demos) and all(n >= 0 for n in self.seed_demos),
            "seed_demos: counts >= 0",
            "seed_demos",
        )
        check(
            bool(self.generated_demos) and all(n >= 0 for n in self.generated_demos),
            "generated_demos: counts >= 0",
            "generated_demos",
        )
        check(
            isinstance(self.workers, int) and self.workers >= 1, "workers must be >= 1", "workers"
        )
        check_selectors(self.selectors, self.judge_model)

    @property
    def overrides(self) -> dict[str, Any]:
        """Config overrides every pipeline-grid run gets."""
        out: dict[str, Any] = {}
        if self.num_instructions is not None:
            out["num_instructions"] = self.num_instructions
        if self.max_new_tokens is not None:
            for stage in ("instruction", "instance", "output"):
                out[f"{stage}.max_new_tokens"] = self.max_new_tokens
        return out

    def table(self) -> pd.DataFrame:
        """The settings as a two-column table (for the notebook to show)."""
        return pd.DataFrame(
            [{"parameter": k, "value": json.dumps(v)} for k, v in self.__dict__.items()]
        )


def selector_entries(selectors: list[str], judge_model: Any) -> list[str]:
    """The grid's entries: "judge" only when a judge model is set (and added when it is)."""
    entries = [s for s in selectors if s != "judge"]
    return entries + (["judge"] if judge_model is not None else [])


def selector_rows(
    config: Any,
    *,
    size: int | None = None,
    model_sets: list[list[str]] | None = None,
    seeds: list[int] | None = None,
) -> pd.DataFrame:
    """The selector grid (`selectors_on_recorded.selector_grid`) of a notebook config with `selectors`,
    `judge_model`, `threshold`, `stop` (and, for notebook 04, `models`, `ordering`,
    `max_subsets`, `seeds`); the judge runs only when `judge_model` is set."""
    from ...analysis.selectors_on_recorded import selector_grid
    from ...runs.selector_models import judge_function

    judge_name, judge = (
        judge_function(config.judge_model) if config.judge_model is not None else ("judge", None)
    )
    kwargs: dict[str, Any] = {}
    if model_sets is None:
        kwargs = {
            "size": size,
            "models": config.models,
            "ordering": config.ordering,
            "max_subsets": config.max_subsets,
        }
    return selector_grid(
        selector_entries(config.selectors, config.judge_model),
        threshold=config.threshold if config.threshold is not None else 0.01,
        seeds=seeds if seeds is not None else config.seeds,
        stop=config.stop,
        judge=judge,
        judge_name=judge_name,
        model_sets=model_sets,
        **kwargs,
    )


def selector_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean, std, sem, n of the selector grid's metrics (kept fraction, gold on kept and on all,
    agreement with every other selector) per selector."""
    from ...analysis.grid_summary import summarize

    agree = [c for c in rows.columns if c.startswith("agree_")]
    return summarize(rows, ["selector"], ["kept_fraction", "gold_kept", "gold_all", *agree])


def selector_agreement(rows: pd.DataFrame) -> pd.DataFrame:
    """Selectors x selectors: the mean share of examples on which two selectors decide alike."""
    if rows.empty:
        return pd.DataFrame()
    agree = [c for c in rows.columns if c.startswith("agree_")]
    table = rows.groupby("selector", sort=False)[agree].mean()
    table.columns = [c.removeprefix("agree_") for c in agree]
    return table.round(3)


def method_runs(config: AblationsConfig, backends: Callable | None = None) -> pd.DataFrame:
    """Notebook 04's method grid: `method_sweep` into ``<out_dir>/methods`` (an empty table when
    `config.pipeline_config` is None); `backends` as `method_sweep`'s (the notebook passes fake
    LMs when asked)."""
    if config.pipeline_config is None:
        return pd.DataFrame(columns=["point", "status", "out_dir", "method", "seed"])
    return method_sweep(
        config.pipeline_config,
        config.out_path / "methods",
        methods=config.methods,
        seeds=config.method_seeds,
        overrides=config.overrides,
        backends=backends,
        workers=config.workers,
    )


def demo_runs(config: AblationsConfig, backends: Callable | None = None) -> pd.DataFrame:
    """Notebook 04's demo-count grid: `demo_count_sweep` into ``<out_dir>/demos`` (an empty
    table when `config.pipeline_config` is None); `backends` as in `method_runs`."""
    if config.pipeline_config is None:
        return pd.DataFrame(columns=["point", "status", "out_dir", "seed_demos", "generated_demos"])
    from ...runs.config import load_config

    types = load_config(config.pipeline_config).task_types
    return demo_count_sweep(
        config.pipeline_config,
        config.out_path / "demos",
        seed_demos=config.seed_demos,
        generated_demos=config.generated_demos,
        task_types=types,
        seeds=config.method_seeds,
        overrides=config.overrides,
        backends=backends,
        workers=config.workers,
    )


def headline_metrics(
    sizes: pd.DataFrame,
    thresholds: pd.DataFrame,
    rules: pd.DataFrame,
    vanilla: pd.DataFrame,
    selectors: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """A few numbers per recorded grid, for ``metrics.json`` (what a sweep over notebook 04
    collects): per size the mean kept fraction and consensus gain, per rule the mean gold on
    eligible examples, per vanilla role the mean gain, and the thresholds' kept-fraction range."""
    out: dict[str, Any] = {}
    if not sizes.empty:
        g = sizes.groupby("size")
        for size, frac in g["kept_fraction"].mean().items():
            out[f"size{size}_kept_fraction"] = float(frac)
        for size, gain in g["gain_vs_generator"].mean().items():
            out[f"size{size}_gain_vs_generator"] = float(gain)
    if not rules.empty:
        for rule, v in rules.groupby("rule")["gold_eligible"].mean().items():
            out[f"rule_{rule}_gold_eligible"] = float(v)
    if not vanilla.empty:
        for role, v in vanilla.groupby("role")["gain_vs_generator"].mean().items():
            out[f"{role}_gain_vs_generator"] = float(v)
    if selectors is not None and not selectors.empty:
        g = selectors.groupby("selector")
        for name, v in g["gold_kept"].mean().items():
            out[f"selector_{name}_gold_kept"] = float(v)
        for name, v in g["kept_fraction"].mean().items():
            out[f"selector_{name}_kept_fraction"] = float(v)
    if not thresholds.empty:
        kept = thresholds.groupby("threshold")["kept_fraction"].mean()
        out["threshold_min_kept_fraction"] = float(kept.min())
        out["threshold_max_kept_fraction"] = float(kept.max())
    return out


__all__ = [
    "AblationsConfig",
    "demo_runs",
    "headline_metrics",
    "method_runs",
    "selector_agreement",
    "selector_entries",
    "selector_rows",
    "selector_summary",
]
