"""ensemble-instruct: instruction-tuning data from a heterogeneous mixture of open LMs.

Implements Ensemble-Instruct (Lee et al., Findings of EMNLP 2023): categorized, simplified
in-context prompts for instruction and instance generation with one LM (stages 1-2), extra outputs
from other LMs (stage 3), and greedy Rouge-L consensus (stage 4). See README.md. Importing the
package is light: torch, transformers and the notebook stack load only when used.
"""

from .ablations import (
    ensemble_size,
    selection_rules,
    summarize,
    threshold_sweep,
    tuned_vs_vanilla,
)
from .backends import (
    Backend,
    CachedBackend,
    CallCache,
    DecodingParams,
    Generation,
    make_backend,
)
from .config import ModelSpec, RunConfig, load_config
from .consensus import ConsensusResult, consensus_summary, select_consensus
from .data import SeedTask, fetch_data, load_recorded, load_seed_tasks
from .diversity import diversity_summary, verb_noun
from .errors import ConfigError, DataError
from .evaluate import (
    EvalItem,
    EvalResult,
    evaluate_backend,
    score_predictions,
    score_recorded_models,
    user_oriented_items,
)
from .export import export_run
from .filters import NoveltyFilter, instruction_rejection
from .finetune import FinetuneConfig, finetune
from .formats import FORMAT_VERSION, build_prompt
from .notebooks import list_notebooks, run_notebook
from .parsing import ParsedInstance, parse_instance, parse_instructions, parse_output
from .pipeline import RunResult, load_run, run, run_stage4
from .prompts import instance_prompt, instruction_prompt, output_prompt
from .recorded_ensemble import ensemble_recorded
from .rouge import NoveltyIndex, pairwise_rouge_l, rouge_l
from .superni import download_superni_tasks, load_superni_items
from .sweep import run_sweep

__all__ = [
    "verb_noun",
    "tuned_vs_vanilla",
    "threshold_sweep",
    "summarize",
    "selection_rules",
    "run_sweep",
    "ensemble_size",
    "diversity_summary",
    "FORMAT_VERSION",
    "Backend",
    "CachedBackend",
    "CallCache",
    "ConfigError",
    "ConsensusResult",
    "DataError",
    "DecodingParams",
    "EvalItem",
    "EvalResult",
    "FinetuneConfig",
    "Generation",
    "ModelSpec",
    "NoveltyFilter",
    "NoveltyIndex",
    "ParsedInstance",
    "RunConfig",
    "RunResult",
    "SeedTask",
    "build_prompt",
    "consensus_summary",
    "download_superni_tasks",
    "ensemble_recorded",
    "evaluate_backend",
    "export_run",
    "fetch_data",
    "finetune",
    "instance_prompt",
    "instruction_prompt",
    "instruction_rejection",
    "list_notebooks",
    "load_config",
    "load_recorded",
    "load_run",
    "load_seed_tasks",
    "load_superni_items",
    "make_backend",
    "output_prompt",
    "pairwise_rouge_l",
    "parse_instance",
    "parse_instructions",
    "parse_output",
    "rouge_l",
    "run",
    "run_notebook",
    "run_stage4",
    "score_predictions",
    "score_recorded_models",
    "select_consensus",
    "user_oriented_items",
]

__version__ = "0.1.0"
