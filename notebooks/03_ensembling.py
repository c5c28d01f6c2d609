# %% [markdown]
# # 03 Ensembling: stage 4, greedy consensus
#
# Ensemble-Instruct's second idea: several LMs answer every generated (instruction, input), and an
# example is kept only when their outputs agree. The candidates are normalized, compared pairwise
# with Rouge-L; an exact match keeps the example at once, otherwise it is dropped when the lowest
# pairwise score is at or below the threshold (0.01), else the candidate with the largest sum of
# agreement is kept. This notebook has two parts. The first runs stage 4 on the run notebook 02
# generated (by default Gemma 3 270M as generator, SmolLM2-135M-Instruct and Gemma as members): kept fraction and why examples
# were dropped, pairwise Rouge-L (per example and per member pair), whose output is kept (the
# generator's or which extra model's, by exact match or consensus), the kept fraction as the
# threshold varies.
# It also re-exports the run (`alpaca.jsonl`, `alpaca_single_output.jsonl`) for notebook 05. The
# second part always uses the recorded answers of GPT-3-family models to the 252 user-oriented
# instructions (real, heterogeneous LM outputs with gold outputs, no model needed; the first model
# named plays the instance generator): the same views, plus the quality of each member, of the
# consensus, of a random pick and of the oracle against gold, and the stage-4 selectors compared.
# An inspector steps through single examples.

# %%
# %matplotlib inline
from IPython.display import display

from ensemble_instruct_lib.nb import plots, tables, widgets
from ensemble_instruct_lib.nb.steps import ensembling as steps

# %% tags=["parameters"]
out_dir = "outputs/notebooks/03_ensembling"  # figures and tables go here (relative: repo root)
run_dir = "outputs/notebooks/02_generation/run"  # notebook 02's run dir; None: skip part 1
models = ["text-davinci-003", "text-davinci-002", "text-davinci-001"]  # recorded models
threshold = None  # drop at or below this lowest pairwise Rouge-L; None: the run's, else 0.01
rule = None  # "sum" or "best_pair"; None: the run's, else "sum"
stop = "none"  # recorded answers as recorded ("none") or cut at the stage-3 stops ("method")
curve_max = 0.5  # largest threshold on the kept-fraction curve
curve_points = 51  # thresholds on the kept-fraction curve
seed = 0  # seed of the random-member baseline
selectors = ["sum", "best_pair", "mbr:rouge_l", "mbr:chrf", "mbr:token_f1"]  # compared below
judge_model = None  # judge LM for the comparison, e.g. "hf:google/gemma-3-270m-it"; None: skip

# %%
cfg = steps.EnsemblingConfig(
    out_dir=out_dir,
    run_dir=run_dir,
    models=models,
    threshold=threshold,
    rule=rule,
    stop=stop,
    curve_max=curve_max,
    curve_points=curve_points,
    seed=seed,
    selectors=selectors,
    judge_model=judge_model,
)
display(steps.config_table(cfg))

# %% [markdown]
# ## Part 1: stage 4 on the generated run
#
# The run of notebook 02 (`run_dir`), ensembled again with this notebook's threshold and rule.
# Without that run this part prints the one command that makes it, and the recorded part below
# still runs. Tables and figures are saved as `run_*.csv` / `run_*.png`.

# %%
run = steps.run_study(cfg)

# %%
steps.report_run(run, cfg)

# %% [markdown]
# ## Part 2: the recorded GPT-3-family answers
#
# Stage 4 on the recorded answers of `models` to the 252 user-oriented instructions.

# %%
study = steps.recorded_study(cfg)
tables.save_table(steps.example_table(study), cfg.out_path, "examples")
display(study.settings())

# %% [markdown]
# ## Kept fraction and why examples were dropped

# %%
reasons = tables.consensus_reasons(study.frame)
tables.save_table(reasons, cfg.out_path, "reasons")
display(reasons)

# %%
fig = plots.plot_consensus_reasons(reasons)
plots.save_figure(fig, cfg.out_path, "reasons")
display(fig)

# %% [markdown]
# ## Pairwise agreement
#
# Rouge-L F between every two candidates of every example (normalized text, Porter stemming), per
# pair of members; then per pair of members, over kept and dropped examples alike, the mean and
# the share of examples where the pair scored above the threshold (stage 4 drops an example
# when its lowest pair is at or below it), as a table and a matrix.

# %%
pairs = tables.pairwise_scores(study.frame)
tables.save_table(pairs, cfg.out_path, "pairwise")
fig = plots.plot_pairwise(pairs, study.threshold)
plots.save_figure(fig, cfg.out_path, "pairwise")
display(fig)

# %%
pair_table = steps.member_pairs(study)
tables.save_table(pair_table, cfg.out_path, "pair_agreement")
display(pair_table)

# %%
fig = plots.plot_pair_agreement(pair_table, study.threshold)
plots.save_figure(fig, cfg.out_path, "agreement_matrix")
display(fig)

# %% [markdown]
# ## Whose output is kept

# %%
chosen = tables.chosen_counts(study.frame)
tables.save_table(chosen, cfg.out_path, "chosen")
fig = plots.plot_chosen(chosen)
plots.save_figure(fig, cfg.out_path, "chosen")
display(fig)

# %% [markdown]
# The same by source and by the reason that kept the example: the generator's own output (the
# first model named plays it here) or an extra model's, kept on an exact match (the first of the
# equal candidates is stored) or by consensus. `answered` and `missing` count the examples where
# the member had a candidate or its call had failed.

# %%
sources = steps.kept_sources(study)
tables.save_table(sources, cfg.out_path, "sources")
display(sources)

# %%
fig = plots.plot_kept_sources(sources)
plots.save_figure(fig, cfg.out_path, "sources")
display(fig)

# %% [markdown]
# ## Kept fraction as the threshold varies
#
# Recomputed from the stored score matrices (no Rouge-L call): exact matches are kept at any
# threshold; other examples are kept while their lowest pairwise score is above it.

# %%
curve = tables.threshold_curve(study.frame, cfg.thresholds, study.rule)
tables.save_table(curve, cfg.out_path, "threshold_curve")
fig = plots.plot_threshold_curve(curve, study.threshold)
plots.save_figure(fig, cfg.out_path, "threshold_curve")
display(fig)

# %% [markdown]
# ## Quality against gold
#
# Mean Rouge-L x100 against the gold output of each member, of the consensus, of a random member
# and of the oracle (the best member per example), on the kept examples and on all of them.

# %%
gold = steps.gold_table(study)
tables.save_table(gold, cfg.out_path, "gold")
display(gold)

# %%
fig = plots.plot_gold_summary(gold)
plots.save_figure(fig, cfg.out_path, "gold")
display(fig)

# %% [markdown]
# ## Selectors compared
#
# Other ways to pick the kept candidate (`method/selectors.py`) on the same recorded answers:
# the paper's best pair, minimum-Bayes-risk selection with chrF or token F1 instead of Rouge-L,
# and an LM judge when `judge_model` is set. Kept fraction, Rouge-L x100 against gold on the kept
# examples and on all of them (a dropped example scoring 0), and how often two selectors keep the
# same candidate. Notebook 04 repeats this over every member list, with error bars.

# %%
selector_table = steps.selector_comparison(cfg)
tables.save_table(selector_table, cfg.out_path, "selectors")
display(selector_table)

# %%
display(steps.selector_agreement(selector_table))

# %% [markdown]
# The same selectors on the generated run of part 1 (no gold there): how much each keeps and how
# often two of them make the same decision (keep or drop, and the same candidate). The run's
# judges or reward model join when its config names them. The run's files are not rewritten.

# %%
run_selector_table = steps.run_selector_comparison(cfg)
tables.save_table(run_selector_table, cfg.out_path, "run_selectors")
display(run_selector_table)

# %% [markdown]
# ## Inspect examples
#
# All candidates side by side with the chosen one highlighted, the pairwise agreement matrix as a
# heatmap and the rule that decided; filter by reason and by the lowest pairwise score. The first
# dropped example is rendered statically below the widget. (The widget is interactive only.)

# %%
display(widgets.ensemble_inspector(study.frame))

# %%
display(widgets.example_html(study.frame, reason="below_threshold"))
