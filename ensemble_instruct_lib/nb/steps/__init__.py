"""The notebooks' steps: one module per notebook, each function one thing a notebook shows.

- `configs`: one validated dataclass per notebook, built in the cell after the parameters
  (papermill injects values without checking them; these raise `ConfigError` on bad ones).
- `prompt_design` (01), `generation` (02), `ensembling` (03), `finetune_eval` (05).

Notebooks import their module as ``steps`` and call one function per step, so they hold no logic.
"""
