"""Typed run configuration: dataclasses validated on construction, loaded from YAML or dicts.

Every number defaults to METHOD.md's value. Where the paper and the authors' code differ, or the
kit departs from both, the choice is a named field (README "Deliberate differences"): e.g. the
prompt set (`prompts`: kit or reference), the reference code's blank-line stop and forced minimum
lengths, harvesting invented blocks, the consensus rule (`sum`, the authors' code, or `best_pair`,
the paper's wording). The same classes back the CLI, YAML files and the notebooks' parameter
cells. Unknown keys are rejected with the list of allowed ones.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.config_builder import ConfigSource, FieldError, build, check, read_mapping
from ..engines.base import DecodingParams, sampling_params  # noqa: F401 - re-exported
from ..errors import ConfigError
from ..method.prompts import PROMPT_SETS

TASK_TYPES = ("A", "B")
BACKEND_KINDS = ("hf", "openai", "recorded", "vllm", "ray", "scripted", "llama_cpp")
PROMPT_STYLES = ("zero_shot", "few_shot")


@dataclass
class ModelSpec:
    """One LM: which backend runs it and how stage 3 prompts it.

    Attributes:
        name: label used in file names and tables (default: derived from `model`).
        kind: backend kind: hf, openai, recorded, vllm, ray, llama_cpp (scripted: tests only).
        model: hub id, local path, served model name, recorded model name, or a known model name
            (`gemma-3-270m`: the converted folder for hf/vllm/ray, the GGUF for llama_cpp;
            see engines/models.py).
        prompt_style: stage-3 prompt: zero_shot (instruction-tuned LMs) or few_shot (vanilla LMs).
        chat: send stage-3 prompts through the chat template / chat endpoint (chat models).
        options: extra keyword arguments for the backend (batch_size, base_urls, dtype, ...).
    """

    kind: str
    model: str
    name: str = ""
    prompt_style: str = "zero_shot"
    chat: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    #: Where `model` was set (file and field), for error messages; not a config key.
    where = "model"

    def __post_init__(self) -> None:
        check(
            self.kind in BACKEND_KINDS,
            f"model kind must be one of {BACKEND_KINDS}, got {self.kind!r}",
            "kind",
        )
        check(bool(self.model), "model must name a model (hub id, path or served name)", "model")
        check(
            self.prompt_style in PROMPT_STYLES,
            f"prompt_style must be one of {PROMPT_STYLES}, got {self.prompt_style!r}",
            "prompt_style",
        )
        if not self.name:
            self.name = Path(self.model.rstrip("/")).name or self.model
        check(
            all(c.isalnum() or c in "-_." for c in self.name),
            f"model name {self.name!r} may only use letters, digits, '-', '_' and '.' "
            "(it becomes part of file names): set `name`",
            "name",
        )

    def backend_spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model, **self.options}


@dataclass
class InstructionStage:
    """Stage 1: instruction generation (METHOD.md numbers by default).

    Attributes:
        first_item_only: Ensemble-Instruct judges only the first numbered instruction of a
            response (this kit's earlier behaviour). Default False: every item is judged, in
            order, each through every filter and novelty against all accepted before it, as the
            authors' code does (a run-on answer "X |EoS| 26. Y" yields X, then Y). The
            baselines always judge every item of their lists.
    """

    num_seed_demos: dict[str, int] = field(default_factory=lambda: {"A": 20, "B": 8})
    num_generated_demos: dict[str, int] = field(default_factory=lambda: {"A": 4, "B": 2})
    prompts_per_round: int = 5
    max_rounds: int | None = None
    temperature: float = 0.7
    top_k: int = 50
    top_p: float = 1.0
    max_new_tokens: int = 256
    #: the reference code forces 15: stop strings count only after that many new tokens, and the
    #: text after an earlier stop string is kept for the parser (0 = the paper: stop at the first)
    min_new_tokens: int = 0
    novelty_threshold: float = 0.7
    keep_top: int = 10
    with_mean_similarity: bool = True
    first_item_only: bool = False

    def __post_init__(self) -> None:
        for name in ("num_seed_demos", "num_generated_demos"):
            d = getattr(self, name)
            check(
                isinstance(d, dict) and set(d) <= set(TASK_TYPES),
                f"instruction.{name} must map task types A/B to counts, got {d!r}",
                name,
            )
            check(
                all(isinstance(v, int) and v >= 0 for v in d.values()),
                f"instruction.{name} counts must be integers >= 0, got {d!r}",
                name,
            )
        check(
            self.prompts_per_round >= 1,
            "instruction.prompts_per_round must be >= 1",
            "prompts_per_round",
        )
        check(
            self.max_rounds is None or self.max_rounds >= 1,
            "instruction.max_rounds must be >= 1",
            "max_rounds",
        )
        check(
            0 < self.novelty_threshold <= 1,
            "instruction.novelty_threshold must be in (0, 1]",
            "novelty_threshold",
        )
        check(self.max_new_tokens >= 1, "instruction.max_new_tokens must be >= 1", "max_new_tokens")
        check(
            0 <= self.min_new_tokens <= self.max_new_tokens,
            "instruction.min_new_tokens must be in [0, max_new_tokens]",
            "min_new_tokens",
        )

    def rounds_budget(self, target: int) -> int:
        """Rounds allowed per type: `max_rounds`, else 10x the rounds the target needs at best."""
        if self.max_rounds is not None:
            return self.max_rounds
        return max(10, 10 * math.ceil(target / self.prompts_per_round))


@dataclass
class InstanceStage:
    """Stage 2: instance generation with the stage-1 LM."""

    num_demos: dict[str, int] = field(default_factory=lambda: {"A": 18, "B": 15})
    temperature: float = 0.7
    top_k: int = 50
    top_p: float = 1.0
    max_new_tokens: int = 512
    #: the reference code forces 50: stop strings count only after that many new tokens, and the
    #: text after an earlier stop string is kept for the parser (harvest_extra_blocks sees it)
    min_new_tokens: int = 0
    stop_at_blank_line: bool = False  # the reference code also stops at a blank line
    harvest_extra_blocks: bool = False
    batch_size: int = 32

    def __post_init__(self) -> None:
        check(
            isinstance(self.num_demos, dict) and set(self.num_demos) <= set(TASK_TYPES),
            f"instance.num_demos must map task types A/B to counts, got {self.num_demos!r}",
            "num_demos",
        )
        check(
            all(isinstance(v, int) and v >= 1 for v in self.num_demos.values()),
            "instance.num_demos counts must be integers >= 1",
            "num_demos",
        )
        check(
            0 <= self.min_new_tokens <= self.max_new_tokens,
            "instance.min_new_tokens must be in [0, max_new_tokens]",
            "min_new_tokens",
        )
        check(self.batch_size >= 1, "instance.batch_size must be >= 1", "batch_size")


@dataclass
class SelfEnsemble:
    """Stage 3 as self-ensembling: the candidates are N samples of one model, not N models.

    Attributes:
        model: the name of a model of the config (the generator or an extra model) that samples.
        samples: candidates per example (N >= 2).
        temperature, top_k, top_p: the sampling settings (temperature > 0).
    """

    model: str
    samples: int = 3
    temperature: float = 0.7
    top_k: int = 50
    top_p: float = 1.0

    def __post_init__(self) -> None:
        check(
            bool(self.model), "output.self_ensemble.model must name a model of the config", "model"
        )
        check(
            isinstance(self.samples, int) and self.samples >= 2,
            f"output.self_ensemble.samples must be an integer >= 2, got {self.samples!r}",
            "samples",
        )
        check(
            self.temperature > 0,
            f"output.self_ensemble.temperature must be > 0 (sampling), got {self.temperature}",
            "temperature",
        )
        check(0 < self.top_p <= 1, "output.self_ensemble.top_p must be in (0, 1]", "top_p")
        check(self.top_k >= 0, "output.self_ensemble.top_k must be >= 0", "top_k")

    def sample_names(self) -> list[str]:
        """The candidates' names in stage-4 records and stage-3 file names."""
        return [f"{self.model}-s{k}" for k in range(self.samples)]


@dataclass
class OutputStage:
    """Stage 3: extra outputs from the other LMs (greedy), or N samples of one LM.

    Attributes:
        self_ensemble: None (the paper: the stage-2 output plus one greedy output per extra
            model), or a `SelfEnsemble` mapping: the candidates are that many samples of one
            model (seed: the run's seed; each sample's index is recorded).
    """

    max_new_tokens: int = 256
    stop: list[str] = field(default_factory=lambda: ["\n\n", "|EoS|"])
    few_shot_demos: int = 8
    batch_size: int = 32
    self_ensemble: SelfEnsemble | None = None

    def __post_init__(self) -> None:
        check(self.max_new_tokens >= 1, "output.max_new_tokens must be >= 1", "max_new_tokens")
        check(
            isinstance(self.stop, list) and all(isinstance(s, str) and s for s in self.stop),
            "output.stop must be a list of non-empty strings",
            "stop",
        )
        check(self.batch_size >= 1, "output.batch_size must be >= 1", "batch_size")
        if isinstance(self.self_ensemble, dict):
            self.self_ensemble = build(SelfEnsemble, self.self_ensemble)
        check(
            self.self_ensemble is None or isinstance(self.self_ensemble, SelfEnsemble),
            f"output.self_ensemble must be a mapping or null, got {self.self_ensemble!r}",
            "self_ensemble",
        )


#: how a judge's score is read: parsed from its text, or the expectation over score tokens
JUDGE_SCORING = ("text", "expected")


@dataclass
class ConsensusStage:
    """Stage 4: which candidate to keep (`method/selectors.py`).

    Attributes:
        threshold: drop when the lowest pairwise agreement is <= this (negative: no filter).
        selector: sum (the authors' code, default), best_pair (the paper's wording), mbr,
            judge or reward.
        rule: the old name of `selector` (sum or best_pair), accepted as an alias.
        utility: mbr's utility: rouge_l, chrf, token_f1 or embedding.
        embedding_model, embedding_options: the transformers encoder for utility embedding
            (mean-pooled last hidden state; options: device, batch_size, max_length).
        judges: the judge panel (model specs, any backend kind), for selector judge.
        judge_rubric: the rubric judges score with ("": the kit's default, `selection.RUBRIC`).
        judge_max_new_tokens: tokens a judge may write (its answer must hold "Score: <1-10>").
        judge_scoring: text (the judge writes a score, parsed from its answer) or expected (the
            probability-weighted mean of the score tokens 1-10 after the prompt's "Score: ",
            from next-token log-probabilities; hf and llama_cpp judges only).
        reward_model, reward_options: a transformers sequence-classification model (hub id or
            folder) for selector reward (options: device, batch_size, max_length).
        min_score: judge/reward: drop when the kept candidate scores below this (None: never).
    """

    threshold: float = 0.01
    selector: str = "sum"
    rule: str | None = None
    utility: str = "rouge_l"
    embedding_model: str = ""
    embedding_options: dict[str, Any] = field(default_factory=dict)
    judges: list[ModelSpec] = field(default_factory=list)
    judge_rubric: str = ""
    judge_max_new_tokens: int = 16
    judge_scoring: str = "text"
    reward_model: str = ""
    reward_options: dict[str, Any] = field(default_factory=dict)
    min_score: float | None = None

    def __post_init__(self) -> None:
        from ..method.consensus import RULES
        from ..method.selectors import SELECTORS, UTILITIES

        if self.rule is not None:
            check(
                self.rule in RULES,
                f"consensus.rule is the old name of consensus.selector and takes {list(RULES)}, "
                f"got {self.rule!r}: set consensus.selector (one of {list(SELECTORS)}) instead",
                "rule",
            )
            check(
                self.selector in ("sum", self.rule),
                f"consensus.rule={self.rule!r} and consensus.selector={self.selector!r} disagree: "
                "keep only consensus.selector",
                "rule",
            )
            self.selector = self.rule
        check(
            self.selector in SELECTORS,
            f"consensus.selector must be one of {list(SELECTORS)}, got {self.selector!r}",
            "selector",
        )
        self.rule = self.selector if self.selector in RULES else None
        check(
            self.utility in UTILITIES,
            f"consensus.utility must be one of {list(UTILITIES)}, got {self.utility!r}",
            "utility",
        )
        check(
            not (self.selector == "mbr" and self.utility == "embedding")
            or bool(self.embedding_model),
            "consensus.utility embedding needs consensus.embedding_model (an encoder's hub id or "
            "folder)",
            "embedding_model",
        )
        check(
            self.selector != "judge" or bool(self.judges),
            "consensus.selector judge needs consensus.judges: a list of model specs",
            "judges",
        )
        check(
            self.selector != "reward" or bool(self.reward_model),
            "consensus.selector reward needs consensus.reward_model (a sequence-classification "
            "model's hub id or folder)",
            "reward_model",
        )
        check(
            self.judge_max_new_tokens >= 1,
            "consensus.judge_max_new_tokens must be >= 1",
            "judge_max_new_tokens",
        )
        check(
            self.judge_scoring in JUDGE_SCORING,
            f"consensus.judge_scoring must be one of {list(JUDGE_SCORING)}, "
            f"got {self.judge_scoring!r}",
            "judge_scoring",
        )


#: the evaluation sets `decontaminate.sets` may name (data/eval_sets.py)
EVAL_SETS = ("user_oriented", "superni")


@dataclass
class Decontaminate:
    """Decontamination of stages 1-2 against evaluation sets (the kit's addition; the paper did
    not decontaminate; `method/decontaminate.py`, docs/hygiene.md).

    Attributes:
        sets: the evaluation sets (user_oriented, superni); [] turns decontamination off (the
            paper's behaviour).
        ngram: a generated instruction, input or output sharing `min_shared` distinct word
            n-grams of this length with an evaluation text is contaminated.
        min_shared: how many distinct shared n-grams make a match (1: any).
        rouge_l: a generated instruction whose Rouge-L F (no stemming) against an evaluation
            instruction is > this is contaminated.
    """

    sets: list[str] = field(default_factory=lambda: list(EVAL_SETS))
    ngram: int = 13
    min_shared: int = 1
    rouge_l: float = 0.7

    def __post_init__(self) -> None:
        check(
            isinstance(self.sets, list) and all(s in EVAL_SETS for s in self.sets),
            f"decontaminate.sets must be a list of {list(EVAL_SETS)} ([] turns it off), "
            f"got {self.sets!r}",
            "sets",
        )
        check(len(set(self.sets)) == len(self.sets), "decontaminate.sets names a set twice", "sets")
        check(self.ngram >= 1, f"decontaminate.ngram must be >= 1, got {self.ngram}", "ngram")
        check(
            self.min_shared >= 1,
            f"decontaminate.min_shared must be >= 1, got {self.min_shared}",
            "min_shared",
        )
        check(
            0 < self.rouge_l <= 1,
            f"decontaminate.rouge_l must be in (0, 1], got {self.rouge_l}",
            "rouge_l",
        )


@dataclass
class Degenerate:
    """Dropping degenerate (looping) text (`method/degenerate.py`, docs/hygiene.md): a stage-2
    instance whose input or output is mostly repetition is invalid (reason ``degenerate``), and
    a stage-3 member's output that is is treated in stage 4 like a missing member.

    Attributes:
        enabled: false keeps looping text (the paper's behaviour).
        ngram: the n-gram length whose repeats count.
        threshold: a text of at least 2 x ngram tokens whose repeat share is >= this is
            degenerate.
    """

    enabled: bool = True
    ngram: int = 5
    threshold: float = 0.5

    def __post_init__(self) -> None:
        check(self.ngram >= 1, f"degenerate.ngram must be >= 1, got {self.ngram}", "ngram")
        check(
            0 < self.threshold <= 1,
            f"degenerate.threshold must be in (0, 1], got {self.threshold}",
            "threshold",
        )


@dataclass
class RunConfig:
    """A whole Ensemble-Instruct run.

    Attributes:
        name: the run's name (its folder under outputs/ by default).
        method: how stages 1-2 are prompted: ensemble_instruct (the paper's), or the
            self_instruct / alpaca baselines (stages 3-4 are shared).
        method_options: options of a baseline method (see methods/self_instruct.py and
            methods/alpaca.py; validated by the method, unknown keys rejected).
        prompts: the prompt set of stages 1-3: kit (our wording) or reference (the authors'
            exact templates, read from their pinned files; see method/prompts.py).
        seed: the run's random seed (same config and seed -> same prompts).
        num_instructions: accepted instructions to generate per task type.
        task_types: which types to generate.
        generator: the LM for stages 1 and 2.
        extra_models: the LMs for stage 3 (the paper uses two).
        seed_file: a seed-task JSONL (default: the Self-Instruct seeds in the data dir).
        data_dir: the data folder (default: EI_DATA_DIR or the fetched copy).
        cache: SQLite call cache path; "" puts it in the run dir as cache.sqlite.
        retry_failed: on a re-run, ask again the stage-2/3 calls that failed for good before
            (records with ``status: failed``); False keeps them as failed.
        max_failed_fraction: stop the run when more than this fraction of a stage's calls fail
            for good (judged after 10 calls, and at the end of a stage where every call failed);
            1.0 never stops.        decontaminate: checks of stages 1-2 against evaluation sets (`Decontaminate`; on by
            default, ``sets: []`` turns it off).
        degenerate: dropping looping stage-2 instances and stage-3 outputs (`Degenerate`).
    """

    generator: ModelSpec
    extra_models: list[ModelSpec] = field(default_factory=list)
    name: str = "run"
    method: str = "ensemble_instruct"
    method_options: dict[str, Any] = field(default_factory=dict)
    prompts: str = "kit"
    seed: int = 0
    num_instructions: int = 20
    task_types: list[str] = field(default_factory=lambda: list(TASK_TYPES))
    instruction: InstructionStage = field(default_factory=InstructionStage)
    instance: InstanceStage = field(default_factory=InstanceStage)
    output: OutputStage = field(default_factory=OutputStage)
    consensus: ConsensusStage = field(default_factory=ConsensusStage)
    seed_file: str | None = None
    data_dir: str | None = None
    cache: str = ""
    retry_failed: bool = True
    max_failed_fraction: float = 0.2
    decontaminate: Decontaminate = field(default_factory=Decontaminate)
    degenerate: Degenerate = field(default_factory=Degenerate)

    def __post_init__(self) -> None:
        check(
            0.0 <= self.max_failed_fraction <= 1.0,
            f"max_failed_fraction must be in [0, 1], got {self.max_failed_fraction!r}",
            "max_failed_fraction",
        )
        from ..methods import METHODS  # the registry (loaded here: it imports nltk)

        check(
            self.method in METHODS,
            f"method must be one of {METHODS}, got {self.method!r}",
            "method",
        )
        check(
            self.prompts in PROMPT_SETS,
            f"prompts must be one of {list(PROMPT_SETS)}, got {self.prompts!r}",
            "prompts",
        )
        check(self.num_instructions >= 1, "num_instructions must be >= 1", "num_instructions")
        check(
            bool(self.task_types) and set(self.task_types) <= set(TASK_TYPES),
            f"task_types must be a non-empty subset of {list(TASK_TYPES)}, got {self.task_types!r}",
            "task_types",
        )
        names = [self.generator.name] + [m.name for m in self.extra_models]
        check(
            len(names) == len(set(names)),
            f"model names must be distinct, got {names}: set `name`",
            "extra_models",
        )
        se = self.output.self_ensemble
        check(
            se is None or se.model in names,
            f"output.self_ensemble.model must be one of the config's models {names}, "
            f"got {se.model if se else None!r}",
            "output.self_ensemble.model",
        )
        self.locate_models()

    def locate_models(self, source: str | ConfigSource = "") -> None:
        """Tell each ModelSpec which file, line and field its `model` came from (for its
        errors)."""
        if isinstance(source, str):
            source = ConfigSource(source)
        fields = ["generator.model"] + [
            f"extra_models[{i}].model" for i in range(len(self.extra_models))
        ]
        for spec, name in zip([self.generator, *self.extra_models], fields, strict=True):
            spec.where = str(source.locate(FieldError(name, name)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_method_options(cfg: RunConfig) -> None:
    """Validate `method_options` now (the method would only at its stage 1), so the error names
    the config file; a method without options takes none."""
    from ..methods import options_class
    from ..methods.rounds import method_options

    cls = options_class(cfg.method)
    if cls is not None:
        method_options(cfg, cls)
    elif cfg.method_options:
        raise ConfigError(
            f"method_options: method {cfg.method!r} takes no options, got "
            f"{sorted(cfg.method_options)}; remove method_options or choose another method"
        )


def load_config(source: str | Path | dict[str, Any], **overrides: Any) -> RunConfig:
    """A `RunConfig` from a YAML file or a dict, with top-level keys overridden.

    Raises:
        ConfigError: naming the file and the key for unknown keys and bad values.
    """
    data, where = read_mapping(source, "name: ..., generator: ...", "configs/quickstart.yaml")
    given = {k: v for k, v in overrides.items() if v is not None}
    data.update(given)
    where = where.without(given)
    cfg = build(RunConfig, data, where)
    try:
        _check_method_options(cfg)
    except ConfigError as e:
        raise where.locate(FieldError("method_options", str(e))) from None
    cfg.locate_models(where)
    return cfg
