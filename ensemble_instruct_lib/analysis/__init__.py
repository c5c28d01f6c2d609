"""Analyses over recorded outputs and finished runs, for the notebooks and the README tables.

`recorded_ensemble` runs stage 4 on the recorded GPT-3-family answers and scores it against gold;
`recorded_matrix` precomputes those answers' score matrices once, which `recorded_grids` (ensemble
size, member choice, threshold, selection rule, instruction-tuned vs vanilla members) and
`selectors_on_recorded` (the stage-4 selectors against gold) read; `run_grids` compares pipeline
runs (prompting methods, demo counts) through sweeps, `selectors_on_run` the selectors on one run;
`grid_summary` turns any grid's rows into error bars. Also: members and mixtures on gold tasks
(`eval_members`), hygiene reports, and the replication study (`replicate`, `replication_report`).
"""
