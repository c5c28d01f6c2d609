"""ensemble-instruct: instruction-tuning data from a heterogeneous mixture of open LMs.

Implements Ensemble-Instruct (Lee et al., Findings of EMNLP 2023): categorized, simplified
in-context prompts for instruction and instance generation with one LM (stages 1-2), extra outputs
from other LMs (stage 3), and greedy Rouge-L consensus (stage 4). See README.md.

The package is layered; each subpackage imports only the ones before it in `LAYERS` (checked by
``tests/test_layers.py``). Importing the package is light: every public name below loads its module
on first use, so torch, transformers, pandas and the notebook stack load only when needed.
"""

from __future__ import annotations

import importlib
from typing import Any

#: The layers, lowest first. A module may import its own layer and the layers before it.
LAYERS = (
    "errors",  # the exception types every layer raises (config, data, network, failures)
    "data",  # public data: seeds, user-oriented tasks, recorded answers, SuperNI; JSONL; configs
    "method",  # the method as pure functions: Rouge-L, prompts, parsing, filters, consensus
    "engines",  # LM backends behind one interface, the factory, the cache, the resumable loop
    "methods",  # prompting methods (registry): Ensemble-Instruct, Self-Instruct, Alpaca stages 1-2
    "testing",  # fake LMs, tiny random-weight models, local OpenAI-compatible servers
    "runs",  # run configs and context, pipeline (stages 3-4, manifest), export, sweeps, notebooks
    "train",  # SFT formats, fine-tuning, evaluation
    "analysis",  # recorded-output ensembles, ablation grids, run grids, eval-members, replicate
    "nb",  # what the notebooks call: steps, plots, widgets
    "cli",  # the command line (one program, subcommands)
    "__main__",
)

_PUBLIC = {
    "ensemble_recorded": ".analysis.recorded_ensemble",
    "ensemble_size": ".analysis.recorded_grids",
    "selection_rules": ".analysis.recorded_grids",
    "summarize": ".analysis.grid_summary",
    "threshold_sweep": ".analysis.recorded_grids",
    "tuned_vs_vanilla": ".analysis.recorded_grids",
    "EvalItem": ".data.eval_items",
    "SeedTask": ".data.public",
    "fetch_data": ".data.public",
    "load_recorded": ".data.public",
    "load_seed_tasks": ".data.public",
    "download_superni_tasks": ".data.superni",
    "load_superni_items": ".data.superni",
    "Backend": ".engines",
    "CachedBackend": ".engines",
    "CallCache": ".engines",
    "DecodingParams": ".engines",
    "Generation": ".engines",
    "make_backend": ".engines",
    "ConfigError": ".errors",
    "DataError": ".errors",
    "ConsensusResult": ".method.consensus",
    "consensus_summary": ".method.consensus",
    "select_consensus": ".method.consensus",
    "diversity_summary": ".method.diversity",
    "verb_noun": ".method.diversity",
    "NoveltyFilter": ".method.filters",
    "instruction_rejection": ".method.filters",
    "ParsedInstance": ".method.parsing",
    "parse_instance": ".method.parsing",
    "parse_instructions": ".method.parsing",
    "parse_output": ".method.parsing",
    "instance_prompt": ".method.prompts",
    "instruction_prompt": ".method.prompts",
    "output_prompt": ".method.prompts",
    "NoveltyIndex": ".method.novelty_index",
    "pairwise_rouge_l": ".method.rouge",
    "rouge_l": ".method.rouge",
    "ModelSpec": ".runs.config",
    "RunConfig": ".runs.config",
    "load_config": ".runs.config",
    "export_run": ".runs.export",
    "list_notebooks": ".runs.notebooks",
    "run_notebook": ".runs.notebooks",
    "RunResult": ".runs.pipeline",
    "load_run": ".runs.run_folder",
    "run": ".runs.pipeline",
    "run_stage4": ".runs.stage4",
    "run_sweep": ".runs.sweep",
    "EvalResult": ".train.evaluate",
    "evaluate_backend": ".train.evaluate",
    "score_predictions": ".train.evaluate",
    "score_recorded_models": ".train.evaluate",
    "user_oriented_items": ".train.evaluate",
    "FinetuneConfig": ".train.finetune",
    "finetune": ".train.finetune",
    "FORMAT_VERSION": ".train.formats",
    "build_prompt": ".train.formats",
}

__all__ = sorted(_PUBLIC)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Load a public name's module on first use (a registry of names, not of plug-ins)."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'ensemble_instruct_lib' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
