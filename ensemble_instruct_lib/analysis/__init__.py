"""Analyses over recorded outputs and finished runs, for the notebooks and the README tables.

`recorded_ensemble` runs stage 4 on the recorded GPT-3-family answers and scores it against gold;
`recorded_grids` runs the ablation grids over them (ensemble size, member choice, threshold,
selection rule, instruction-tuned vs vanilla members); `run_grids` compares pipeline runs
(prompting methods, demo counts) through sweeps.
"""
