"""One validated config dataclass per notebook, and a table view of any of them."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from ...analysis.recorded_ensemble import DEFAULT_MODELS, STOP_MODES
from ...data.config_builder import ConfigSource, FieldError, check
from ...data.public import PREDICTION_MODELS, check_recorded_models
from ...errors import ConfigError
from ...runs.config import ConsensusStage, RunConfig, load_config
from ...runs.notebooks import REPO_ROOT, notebook_path, notebook_root, parameter_lines, resolve_path

# --------------------------------------------------------------------------------------------
# configs: one per notebook, validated


def check_task_type(task_type: str) -> None:
    check(task_type in ("A", "B"), f"task_type must be 'A' or 'B', got {task_type!r}", "task_type")


def _optional_count(name: str, value: Any, minimum: int = 0) -> None:
    check(
        value is None
        or (isinstance(value, int) and not isinstance(value, bool) and value >= minimum),
        f"{name} must be None or an integer >= {minimum}, got {value!r}",
        name,
    )


def _recorded_models(models: list[str], name: str) -> None:
    """`data.public.check_recorded_models`, its error naming the field `name`."""
    try:
        check_recorded_models(models)
    except ConfigError as e:
        raise FieldError(name, str(e)) from None


def check_selectors(selectors: list[str], judge_model: Any) -> None:
    """Stage-4 selector entries (`method.selectors.parse_selector_entry`) and a judge model
    (None, "<kind>:<model>" or a backend spec mapping)."""
    from ...method.selectors import parse_selector_entry

    check(bool(selectors) and isinstance(selectors, list), "a non-empty list", "selectors")
    for entry in selectors:
        try:
            parse_selector_entry(entry)
        except ValueError as e:
            raise FieldError("selectors", str(e)) from None
    check(
        judge_model is None or isinstance(judge_model, str | dict),
        f"judge_model must be None, '<kind>:<model>' or a backend spec, got {judge_model!r}",
        "judge_model",
    )


def notebook_source(notebook: str) -> ConfigSource:
    """Where a notebook config's values come from: the notebook twin (``notebooks/NN_name.py``,
    relative to the repository) and the line of each parameter in its ``parameters`` cell (no
    lines when the twin is not there, e.g. in an installed package)."""
    try:
        path = notebook_path(notebook)
        lines = parameter_lines(path)
    except (FileNotFoundError, ValueError):
        return ConfigSource(f"notebooks/{notebook}.py")
    shown = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
    return ConfigSource(str(shown), lines)


@dataclass
class NotebookConfig:
    """What every notebook has: `out_dir`, where its figures and tables go.

    A subclass names its notebook (`NOTEBOOK`) and checks its fields in `validate` with
    `config_builder.check`; a bad value raises `FieldError` naming the notebook twin's file, the
    line of the parameter in its ``parameters`` cell and the field.
    """

    NOTEBOOK: ClassVar[str] = ""

    out_dir: str

    def __post_init__(self) -> None:
        try:
            self.validate()
        except FieldError as e:
            names = {f.name for f in dataclasses.fields(self)}
            if e.file or not self.NOTEBOOK or re.split(r"[.\[]", e.field)[0] not in names:
                raise
            raise notebook_source(self.NOTEBOOK).locate(e) from None

    def validate(self) -> None:
        """Check the fields (subclasses extend it); raises `FieldError`."""
        check(
            isinstance(self.out_dir, str) and bool(self.out_dir),
            f"out_dir must be a non-empty path string, got {self.out_dir!r}",
            "out_dir",
        )

    @property
    def out_path(self) -> Path:
        """`out_dir` resolved against the repository root, created."""
        p = resolve_path(self.out_dir)
        p.mkdir(parents=True, exist_ok=True)
        return p


@dataclass
class PromptDesignConfig(NotebookConfig):
    """Notebook 01.

    Attributes:
        seed_file: a seed-task JSONL (None: the Self-Instruct seeds in the data dir).
        task_type: the type whose prompts are printed in full and sent to the backend.
        num_seed, num_generated: stage-1 demo counts (None: METHOD.md's, per type).
        num_instance_demos: stage-2 demos (None: METHOD.md's, per type).
        random_seed: the demo draw's seed.
        generated: previously generated instructions to mix into the stage-1 demos.
        instance_instructions: per type, the new instruction the stage-2 prompt ends with.
        tokenizer: a tokenizer path or hub id for token counts (None: whitespace words).
        backend: a backend spec for `backends.make_backend` (None: no LM is called).
        max_new_tokens: cap on the probe's generations (None: the stage defaults, 256 / 512).
    """

    seed_file: str | None = None
    task_type: str = "A"
    num_seed: int | None = None
    num_generated: int | None = None
    num_instance_demos: int | None = None
    random_seed: int = 0
    generated: list[str] = field(default_factory=list)
    instance_instructions: dict[str, str] = field(default_factory=dict)
    tokenizer: str | None = None
    backend: dict[str, Any] | None = None
    max_new_tokens: int | None = None

    NOTEBOOK: ClassVar[str] = "01_prompt_design"

    def validate(self) -> None:
        super().validate()
        check_task_type(self.task_type)
        _optional_count("num_seed", self.num_seed)
        _optional_count("num_generated", self.num_generated)
        _optional_count("num_instance_demos", self.num_instance_demos, 1)
        _optional_count("max_new_tokens", self.max_new_tokens, 1)
        check(
            isinstance(self.random_seed, int),
            f"random_seed must be an integer, got {self.random_seed!r}",
            "random_seed",
        )
        check(
            isinstance(self.generated, list) and all(isinstance(g, str) for g in self.generated),
            "generated must be a list of instruction strings",
            "generated",
        )
        check(
            set(self.instance_instructions) == {"A", "B"}
            and all(isinstance(v, str) and v.strip() for v in self.instance_instructions.values()),
            "instance_instructions must map 'A' and 'B' to non-empty instructions, "
            f"got {self.instance_instructions!r}",
            "instance_instructions",
        )
        check(
            self.backend is None or (isinstance(self.backend, dict) and "kind" in self.backend),
            f"backend must be None or a spec dict with a 'kind', got {self.backend!r}",
            "backend",
        )


def _anchored(value: str | None) -> str | None:
    """A relative path that exists under the repository root, made absolute; else unchanged."""
    if not value or Path(value).is_absolute():
        return value
    p = notebook_root() / value
    return str(p) if p.exists() else value


def anchor_paths(config: RunConfig) -> RunConfig:
    """Make a run config's relative local paths (model folders, seed file, data dir, cache)
    absolute from the repository root, so they mean what they mean to the CLI run from there
    whatever the kernel's working directory. Hub ids and absolute paths are left alone."""
    for spec in [config.generator, *config.extra_models]:
        spec.model = _anchored(spec.model) or spec.model
    config.seed_file = _anchored(config.seed_file)
    config.data_dir = _anchored(config.data_dir)
    if config.cache and not Path(config.cache).is_absolute():
        config.cache = str(notebook_root() / config.cache)
    return config


@dataclass
class GenerationConfig(NotebookConfig):
    """Notebook 02.

    Attributes:
        config_path: a run-config YAML (relative paths: from the repository root).
        overrides: top-level `RunConfig` keys replacing the file's.
        run_dir: the pipeline's run dir (None: ``<out_dir>/run``).
        sample_size: rows of the sample table.
    """

    config_path: str = "configs/offline.yaml"
    overrides: dict[str, Any] = field(default_factory=dict)
    run_dir: str | None = None
    sample_size: int = 10
    run_config: RunConfig = field(init=False, repr=False)

    NOTEBOOK: ClassVar[str] = "02_generation"

    def validate(self) -> None:
        super().validate()
        check(
            isinstance(self.overrides, dict),
            f"overrides must be a dict, got {self.overrides!r}",
            "overrides",
        )
        _optional_count("sample_size", self.sample_size, 1)
        path = resolve_path(self.config_path)
        check(
            path.exists(), f"config_path {self.config_path!r}: no such file ({path})", "config_path"
        )
        self.run_config = anchor_paths(load_config(path, **self.overrides))

    @property
    def run_path(self) -> Path:
        return resolve_path(self.run_dir) if self.run_dir else self.out_path / "run"


#: Where notebook 02 writes its run with its default parameters (notebook 03's default input).
DEFAULT_RUN_DIR = "outputs/notebooks/02_generation/run"
#: The command that makes that run.
NOTEBOOK_02_COMMAND = (
    "python -m ensemble_instruct_lib notebook 02_generation outputs/notebooks/02_generation"
)


@dataclass
class EnsemblingConfig(NotebookConfig):
    """Notebook 03.

    Attributes:
        run_dir: a pipeline run dir to ensemble (default: notebook 02's; None: skip that part).
        models: recorded GPT-3-family models (the first plays the instance generator) of the
            part on recorded answers, which always runs.
        threshold, rule: consensus settings (None: the run's, or METHOD.md's 0.01 / "sum").
        stop: recorded answers as recorded ("none") or cut at the stage-3 stops ("method").
        curve_max, curve_points: the thresholds of the kept-fraction curve.
        seed: seed of the random-member baseline.
        selectors: stage-4 selectors compared on the recorded answers (see notebook 04).
        judge_model: a judge LM for that comparison ("<kind>:<model>" or a backend spec);
            None skips the judge.
    """

    run_dir: str | None = DEFAULT_RUN_DIR
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    threshold: float | None = None
    rule: str | None = None
    stop: str = "none"
    curve_max: float = 0.5
    curve_points: int = 51
    seed: int = 0
    selectors: list[str] = field(
        default_factory=lambda: ["sum", "best_pair", "mbr:rouge_l", "mbr:chrf", "mbr:token_f1"]
    )
    judge_model: str | dict[str, Any] | None = None

    NOTEBOOK: ClassVar[str] = "03_ensembling"

    def validate(self) -> None:
        super().validate()
        check_selectors(self.selectors, self.judge_model)
        check(
            isinstance(self.models, list) and len(self.models) >= 2,
            f"models must list at least 2 recorded models, got {self.models!r}",
            "models",
        )
        _recorded_models(self.models, "models")
        check(
            len(set(self.models)) == len(self.models),
            f"models must be distinct: {self.models}",
            "models",
        )
        check(
            self.run_dir is None or (isinstance(self.run_dir, str) and bool(self.run_dir)),
            f"run_dir must be None or a path string, got {self.run_dir!r}",
            "run_dir",
        )
        if self.threshold is not None:
            check(
                0 <= self.threshold < 1,
                f"threshold must be in [0, 1), got {self.threshold}",
                "threshold",
            )
        if self.rule is not None:
            ConsensusStage(rule=self.rule)
        check(
            self.stop in STOP_MODES, f"stop must be one of {STOP_MODES}, got {self.stop!r}", "stop"
        )
        check(
            0 < self.curve_max <= 1,
            f"curve_max must be in (0, 1], got {self.curve_max}",
            "curve_max",
        )
        check(
            isinstance(self.curve_points, int) and self.curve_points >= 2,
            f"curve_points must be an integer >= 2, got {self.curve_points!r}",
            "curve_points",
        )

    @property
    def thresholds(self) -> list[float]:
        """The thresholds of the kept-fraction curve: `curve_points` evenly from 0 to `curve_max`."""
        step = self.curve_max / (self.curve_points - 1)
        return [round(k * step, 6) for k in range(self.curve_points)]


BENCHMARKS = ("user_oriented", "superni")


@dataclass
class FinetuneEvalConfig(NotebookConfig):
    """Notebook 05.

    Attributes:
        base_model: the base LM (known name, hub id or local folder) every dataset fine-tunes.
        datasets: system name -> Alpaca-style JSONL (e.g. ensembled vs single-output of a run).
        evaluate_base: also evaluate the base model itself (system "base", kind "base").
        finetune_config: a `FinetuneConfig` YAML for the shared settings (None: its defaults).
        finetune_overrides: keys replacing the YAML's (model, data and run_dir are set here).
        benchmarks: "user_oriented" and/or "superni".
        superni_dir: a natural-instructions checkout (None: $EI_SUPERNI_DIR; needed for superni).
        max_items: evaluate on the first N items of each benchmark (None: all).
        max_new_tokens, eval_batch_size: greedy generation settings for evaluation.
        backend_options: extra `HFBackend` arguments for evaluation (device, dtype, ...).
        reference_models: recorded GPT-3-family models scored on the same user-oriented items.
        study_dir: the folder of a replication study (`replicate`) whose tables and figures
            the notebook shows (None: skip that section).
    """

    base_model: str = ""
    datasets: dict[str, str] = field(default_factory=dict)
    evaluate_base: bool = True
    finetune_config: str | None = None
    finetune_overrides: dict[str, Any] = field(default_factory=dict)
    benchmarks: list[str] = field(default_factory=lambda: ["user_oriented"])
    superni_dir: str | None = None
    max_items: int | None = None
    max_new_tokens: int = 128
    eval_batch_size: int = 8
    backend_options: dict[str, Any] = field(default_factory=dict)
    reference_models: list[str] = field(default_factory=lambda: list(PREDICTION_MODELS))
    study_dir: str | None = None

    NOTEBOOK: ClassVar[str] = "05_finetune_eval"

    def validate(self) -> None:
        super().validate()
        check(
            isinstance(self.base_model, str) and bool(self.base_model),
            "base_model must name a model",
            "base_model",
        )
        check(
            isinstance(self.datasets, dict) and bool(self.datasets),
            "datasets must map at least one system name to a dataset file",
            "datasets",
        )
        for name, path in self.datasets.items():
            check(
                isinstance(name, str) and name.replace("-", "").replace("_", "").isalnum(),
                f"dataset name {name!r} may only use letters, digits, '-' and '_'",
                "datasets",
            )
            check(
                resolve_path(path).exists(),
                f"dataset {name!r}: no such file {path!r} ({resolve_path(path)}): "
                + (
                    f"run notebook 02 first ({NOTEBOOK_02_COMMAND}), it exports the run's datasets"
                    if str(path).startswith(DEFAULT_RUN_DIR)
                    else "give an Alpaca-style JSONL (a run's alpaca.jsonl)"
                ),
                "datasets",
            )
        if self.finetune_config is not None:
            check(
                resolve_path(self.finetune_config).exists(),
                f"finetune_config {self.finetune_config!r}: no such file",
                "finetune_config",
            )
        fixed = {"model", "data", "run_dir"} & set(self.finetune_overrides)
        check(
            not fixed,
            f"finetune_overrides may not set {sorted(fixed)}: use base_model/datasets",
            "finetune_overrides",
        )
        bad = [b for b in self.benchmarks if b not in BENCHMARKS]
        check(
            bool(self.benchmarks) and not bad,
            f"benchmarks must be a non-empty subset of {BENCHMARKS}",
            "benchmarks",
        )
        check(
            isinstance(self.evaluate_base, bool),
            f"evaluate_base must be True or False, got {self.evaluate_base!r}",
            "evaluate_base",
        )
        _optional_count("max_items", self.max_items, 1)
        _optional_count("max_new_tokens", self.max_new_tokens, 1)
        _optional_count("eval_batch_size", self.eval_batch_size, 1)
        _recorded_models(self.reference_models, "reference_models")
        # build every fine-tuning config now, so a bad key fails here and not after an hour; a
        # bad override (not from the YAML file) is a bad `finetune_overrides`
        for name in self.datasets:
            try:
                self.finetune_config_for(name)
            except FieldError as e:
                if e.file:
                    raise
                raise FieldError("finetune_overrides", e.message) from None

    def finetune_config_for(self, name: str) -> Any:
        """The `FinetuneConfig` of one dataset: the shared YAML and overrides, plus its paths."""
        from ...train.finetune import FinetuneConfig

        paths = {
            "model": str(resolve_path(self.base_model))
            if resolve_path(self.base_model).exists()
            else self.base_model,
            "data": str(resolve_path(self.datasets[name])),
            "run_dir": str(self.out_path / "finetune" / name),
        }
        values = {**self.finetune_overrides, **paths}
        if self.finetune_config is not None:
            return FinetuneConfig.from_yaml(resolve_path(self.finetune_config), **values)
        return FinetuneConfig.from_dict(values)


def _public(obj: Any) -> Any:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}


def config_table(config: NotebookConfig) -> pd.DataFrame:
    """A notebook config as a two-column table (setting, value) for display."""
    return pd.DataFrame([{"setting": k, "value": repr(v)} for k, v in _public(config).items()])
