"""Prompting methods for stages 1-2: a registry of Ensemble-Instruct and its baselines.

Each entry is a module with ``stage1_instructions(ctx, backend) -> {group: [accepted record]}``,
``stage2_instances(ctx, backend, instructions) -> [stage-2 record]`` and ``VERSIONS`` (its prompt
versions). Stage 1 of every entry runs in the one round loop of `methods.rounds` (`run_rounds`):
an entry gives its groups and prompt builders, its response parser and its decoding params. All
write the same files with the same record fields (``stage1_instructions_<group>.jsonl``,
``stage2_instances.jsonl``, built by `method.records`), so stages 3-4 (`runs.stage3`, `runs.stage4`), exports,
tables and plots work for every method.

- `ensemble_instruct`: the paper's method (METHOD.md): per task type, short uniform prompts; every
  numbered instruction of an answer is judged (``instruction.first_item_only``: the first only).
- `self_instruct`: Self-Instruct (Wang et al. 2023): 8 numbered "Task N:" demos (6 seeds + 2
  generated), many instructions per call, one novelty pool over all seeds, an LM classification
  check, output-first instances for classification tasks and input-first for the rest.
- `alpaca`: Alpaca (Taori et al. 2023): one call asks for ~20 tasks with instruction, input and
  output together, from 3 seed demos; stage 2 only records the instances made in stage 1.
"""

from __future__ import annotations

from types import ModuleType

from ..errors import ConfigError
from ..method.prompts import SET_VERSIONS
from . import alpaca, ensemble_instruct, self_instruct

#: method name -> its module (stage1_instructions, stage2_instances, VERSIONS)
REGISTRY: dict[str, ModuleType] = {
    "ensemble_instruct": ensemble_instruct,
    "self_instruct": self_instruct,
    "alpaca": alpaca,
}
#: the method names, in the registry's order: every list of methods (configs, grids, plots) is this
METHODS = tuple(REGISTRY)
#: method name -> its ``method_options`` dataclass (a method not named here takes no options)
OPTIONS: dict[str, type] = {
    "self_instruct": self_instruct.SelfInstructOptions,
    "alpaca": alpaca.AlpacaOptions,
}


def get_method(method: str) -> ModuleType:
    """The registry entry of a prompting method, or a ConfigError naming the known ones."""
    try:
        return REGISTRY[method]
    except KeyError:
        raise ConfigError(f"unknown method {method!r}; known: {list(REGISTRY)}") from None


def options_class(method: str) -> type | None:
    """The ``method_options`` dataclass of a registered method, or None when it takes none."""
    get_method(method)
    return OPTIONS.get(method)


def method_prompt_versions(method: str, prompts: str = "kit") -> dict[str, str]:
    """The prompt versions a method's stages 1-2 use, with stage 3's, for prompt set `prompts`
    (`prompts.SET_VERSIONS`; it sets stages 1-2 of `ensemble_instruct` and stage 3 of all)."""
    versions = SET_VERSIONS[prompts]
    own = get_method(method).VERSIONS
    if method == "ensemble_instruct":
        own = {k: versions[k] for k in own}
    outputs = {k: v for k, v in versions.items() if k.startswith("output")}
    return {**own, **outputs}


__all__ = [
    "METHODS",
    "OPTIONS",
    "REGISTRY",
    "get_method",
    "method_prompt_versions",
    "options_class",
]
