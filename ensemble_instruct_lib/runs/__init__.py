"""Runs: typed configs, the pipeline that owns the run directory, exports, sweeps and notebooks.

`config` builds and validates run configs from YAML or dicts; `pipeline` runs stages 1-2 through the
chosen prompting method, then stage 3 (`stage3`: extra outputs) and stage 4 (`stage4`: consensus),
resumably; `manifest` opens, checks on resume and closes the run dir's manifest; `run_folder`
reads a run dir back (tables, counts, the summary); `metrics` turns a run dir into one row of metrics; `export` writes the Alpaca JSONL, the
HF dataset and the dataset card; `sweep` runs grids of configs or notebooks; `notebooks` executes
the ordered notebooks headlessly with papermill; `keyvalue` reads the command line's ``KEY=VALUE``
items (``-p``, ``--set``, ``--grid``) for every subcommand.
"""
