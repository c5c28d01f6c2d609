# %% [markdown]
# # 04 Ablations: what each part of Ensemble-Instruct buys
#
# Each ablation is a parameter grid, a tidy table and a plot with error bars. The first five run
# on the real recorded answers of eight GPT-3-family models to the 252 user-oriented instructions,
# scored against the gold outputs (Rouge-L x100, stemmed), with no model (an LM judge only when
# `judge_model` is set): how many models to ensemble, the consensus threshold, the selection rule,
# instruction-tuned vs vanilla members (davinci is the vanilla model; the seven others are
# instruction-tuned), and the stage-4 selector. Ensembles are every
# subset of the members (or a seeded sample); by default each subset is evaluated once per member
# as the instance generator, since the first candidate's role is the one that matters. Error bars
# are one standard deviation over member sets, orderings and seeds. The last two grids run the
# pipeline: Ensemble-Instruct vs Self-Instruct vs Alpaca prompts on the same generator (acceptance
# per stage, novelty, diversity of leading verbs and verb-noun pairs, lengths), and the number of
# seed and generated demonstrations in instruction generation. By default they run
# `configs/offline.yaml` (Gemma 3 270M and SmolLM2-135M-Instruct through llama.cpp, fetched on first use) at
# a small size (`num_instructions` per type, two seeds: about half an hour on 2 CPU cores; the
# sweeps resume where they stopped); `pipeline_config=None` skips them, `fake_lms=True` exercises
# the code with deterministic fake LMs.

# %%
# %matplotlib inline
from IPython.display import display

from ensemble_instruct_lib.analysis import grid_summary, recorded_grids, run_grids
from ensemble_instruct_lib.nb import grid_plots, plots, tables
from ensemble_instruct_lib.nb.steps import ablations as steps
from ensemble_instruct_lib.runs.metrics import RUN_METRICS
from ensemble_instruct_lib.runs.sweep import write_metrics
from ensemble_instruct_lib.testing.fake import fake_backends

# %% tags=["parameters"]
out_dir = "outputs/notebooks/04_ablations"  # tables, figures and metrics.json (relative: repo root)
models = [
    "davinci",
    "text-davinci-001",
    "text-davinci-002",
    "text-davinci-003",
    "davinci-self-instruct",
    "davinci-superni-ft",
    "davinci-t0-ft",
    "davinci-self-instruct-and-superni-ft",
]  # recorded models the ensembles are drawn from
sizes = [2, 3, 4, 5, 6, 7, 8]  # ensemble sizes of the size grid
max_subsets = None  # per size, evaluate a seeded sample of this many subsets (None: all)
ordering = "generator"  # "generator": each member once as generator; "fixed"; "all" permutations
threshold = 0.01  # consensus threshold held fixed outside the threshold grid
rule = "sum"  # selection rule held fixed outside the rule grid: "sum" or "best_pair"
thresholds = [0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5]  # threshold grid
threshold_size = 3  # ensemble size of the threshold, rule and vanilla grids (the paper: 3)
rules = ["sum", "best_pair", "random", "first"]  # selection rules compared
seeds = [0, 1, 2]  # seeds of the subset samples and of the random-member baseline
stop = "none"  # recorded answers as recorded ("none") or cut at the stage-3 stops ("method")
trio = ["text-davinci-003", "text-davinci-002", "text-davinci-001"]  # drawn over the band
pipeline_config = "configs/offline.yaml"  # method and demo grids' run config; None: skip
methods = ["ensemble_instruct", "self_instruct", "alpaca"]  # prompting methods compared
method_seeds = [0, 1]  # run seeds of the pipeline grids (error bars over seeds)
num_instructions = 2  # instructions per task type in the pipeline grids (None: the config's)
max_new_tokens = None  # cap on every stage's new tokens in the pipeline grids (None: the config's)
fake_lms = False  # answer with the kit's deterministic fake LMs instead of the config's models
seed_demos = [10, 20]  # seed demonstrations per instruction prompt (demo grid)
generated_demos = [0, 4]  # generated demonstrations per instruction prompt (demo grid)
workers = 1  # processes running pipeline points at once
selectors = ["sum", "best_pair", "mbr:rouge_l", "mbr:chrf", "mbr:token_f1"]  # stage-4 selectors
judge_model = None  # judge LM for the selector grid, e.g. "hf:google/gemma-3-270m-it"; None: skip

# %%
cfg = steps.AblationsConfig(
    out_dir=out_dir,
    models=models,
    sizes=sizes,
    max_subsets=max_subsets,
    ordering=ordering,
    threshold=threshold,
    rule=rule,
    thresholds=thresholds,
    threshold_size=threshold_size,
    rules=rules,
    seeds=seeds,
    stop=stop,
    trio=trio,
    pipeline_config=pipeline_config,
    methods=methods,
    method_seeds=method_seeds,
    num_instructions=num_instructions,
    max_new_tokens=max_new_tokens,
    seed_demos=seed_demos,
    generated_demos=generated_demos,
    workers=workers,
    selectors=selectors,
    judge_model=judge_model,
)
display(cfg.table())

# %% [markdown]
# ## 1. Number of ensembled models
#
# Kept fraction, and quality on the kept examples of the consensus output next to the mean single
# member, a random member and the oracle (the best member per example). With two members the sum
# rule always keeps the generator's output (Rouge-L F is symmetric, so the two sums tie), so
# the consensus equals the mean member there; from three members on it picks the output the others
# agree with. More members keep fewer examples: every pair must agree.

# %%
size_rows = recorded_grids.ensemble_size(
    cfg.sizes,
    models=cfg.models,
    threshold=cfg.threshold,
    rule=cfg.rule,
    ordering=cfg.ordering,
    max_subsets=cfg.max_subsets,
    seeds=cfg.seeds,
    stop=cfg.stop,
)
size_summary = grid_summary.summarize(size_rows, ["size"], recorded_grids.SIZE_METRICS)
tables.save_table(size_rows, cfg.out_path, "size_rows")
tables.save_table(size_summary, cfg.out_path, "size_summary")
display(grid_summary.format_summary(size_summary, ["size"]))

# %%
fig = grid_plots.plot_ensemble_size(size_summary)
plots.save_figure(fig, cfg.out_path, "size")
display(fig)

# %% [markdown]
# ## 2. The consensus threshold
#
# An example is dropped when its lowest pairwise Rouge-L is at or below the threshold (exact
# matches are always kept). Band: mean +- std over every ordered member list of `threshold_size`;
# dashed: the paper-style trio. Quality rises with the threshold because only examples the
# members agree on remain: the trade-off is data quantity.

# %%
threshold_rows = recorded_grids.threshold_sweep(
    cfg.thresholds,
    size=cfg.threshold_size,
    models=cfg.models,
    rule=cfg.rule,
    ordering=cfg.ordering,
    max_subsets=cfg.max_subsets,
    seed=cfg.seeds[0],
    stop=cfg.stop,
)
trio_rows = recorded_grids.threshold_sweep(
    cfg.thresholds, model_sets=[cfg.trio], rule=cfg.rule, stop=cfg.stop
)
threshold_summary = grid_summary.summarize(
    threshold_rows, ["threshold"], recorded_grids.THRESHOLD_METRICS
)
tables.save_table(threshold_rows, cfg.out_path, "threshold_rows")
tables.save_table(threshold_summary, cfg.out_path, "threshold_summary")
display(grid_summary.format_summary(threshold_summary, ["threshold"]))

# %%
fig = grid_plots.plot_threshold(threshold_summary, trio_rows)
plots.save_figure(fig, cfg.out_path, "threshold")
display(fig)

# %% [markdown]
# ## 3. Selection rule
#
# On the same examples (those passing the agreement filter): the sum rule (the reference code),
# the best-pair rule (the paper's wording), a random member, and always the first candidate (the
# generator's output: ensembling as a filter only).

# %%
rule_rows = recorded_grids.selection_rules(
    cfg.rules,
    size=cfg.threshold_size,
    models=cfg.models,
    threshold=cfg.threshold,
    ordering=cfg.ordering,
    max_subsets=cfg.max_subsets,
    seeds=cfg.seeds,
    stop=cfg.stop,
)
rule_summary = grid_summary.summarize(rule_rows, ["rule"], recorded_grids.RULE_METRICS)
tables.save_table(rule_rows, cfg.out_path, "rule_rows")
tables.save_table(rule_summary, cfg.out_path, "rule_summary")
display(grid_summary.format_summary(rule_summary, ["rule"]))

# %%
fig = grid_plots.plot_rules(rule_summary)
plots.save_figure(fig, cfg.out_path, "rules")
display(fig)

# %% [markdown]
# ## 4. Instruction-tuned vs vanilla members
#
# Every ordered member list of `threshold_size`, grouped by the vanilla model's role. The gain is
# the consensus minus the generator alone on the same kept examples: the paper found that
# ensembling with instruction-tuned LMs helps and with vanilla LMs can hurt.

# %%
vanilla_rows = recorded_grids.tuned_vs_vanilla(
    size=cfg.threshold_size,
    models=cfg.models,
    threshold=cfg.threshold,
    rule=cfg.rule,
    ordering=cfg.ordering,
    seed=cfg.seeds[0],
    stop=cfg.stop,
)
vanilla_summary = grid_summary.summarize(vanilla_rows, ["role"], recorded_grids.VANILLA_METRICS)
tables.save_table(vanilla_rows, cfg.out_path, "vanilla_rows")
tables.save_table(vanilla_summary, cfg.out_path, "vanilla_summary")
display(grid_summary.format_summary(vanilla_summary, ["role"]))

# %%
fig = grid_plots.plot_vanilla(vanilla_summary)
plots.save_figure(fig, cfg.out_path, "vanilla")
display(fig)

# %% [markdown]
# ## 5. Stage-4 selectors
#
# The selector decides which candidate is kept (`method/selectors.py`): the sum rule (the
# authors' code), the best pair (the paper's wording), minimum-Bayes-risk selection with another
# utility (Rouge-L equals the sum rule; chrF; token F1), and, when `judge_model` is set, an LM
# judge scoring every answer with a rubric. Every ordered member list of `threshold_size`, scored
# against gold: kept fraction, Rouge-L on the kept examples and on all of them (a dropped example
# scoring 0), and how often two selectors decide alike. Error bars: std over member lists.

# %%
selector_rows = steps.selector_rows(cfg, size=cfg.threshold_size)
selector_summary = steps.selector_summary(selector_rows)
tables.save_table(selector_rows, cfg.out_path, "selector_rows")
tables.save_table(selector_summary, cfg.out_path, "selector_summary")
display(grid_summary.format_summary(selector_summary, ["selector"]))

# %%
fig = grid_plots.plot_selectors(selector_summary)
plots.save_figure(fig, cfg.out_path, "selectors")
display(fig)

# %%
display(steps.selector_agreement(selector_rows))

# %% [markdown]
# ## 6. Prompting methods on the same generator
#
# One pipeline run per method and seed (a sweep: resumable, each run in `<out_dir>/methods/`):
# acceptance per stage, why stage-1 candidates were rejected, novelty (the highest Rouge-L of
# each candidate against its pool), diversity of the accepted instructions (distinct leading
# verbs and verb-noun pairs, found by the rule-based heuristic of `diversity.py`), lengths, and
# valid instances per generator call. Empty when `pipeline_config` is None.

# %%
method_table = steps.method_runs(cfg, backends=fake_backends if fake_lms else None)
method_summary = grid_summary.summarize(method_table, ["method"], RUN_METRICS)
tables.save_table(method_summary, cfg.out_path, "method_summary")
display(grid_summary.format_summary(method_summary, ["method"]))

# %%
fig = grid_plots.plot_methods(method_summary)
plots.save_figure(fig, cfg.out_path, "methods")
display(fig)

# %%
fig = grid_plots.plot_novelty_by_method(run_grids.novelty_frame(method_table))
plots.save_figure(fig, cfg.out_path, "method_novelty")
display(fig)

# %% [markdown]
# Self-Instruct's view of diversity: the commonest leading verbs (inner ring) and their commonest
# object nouns (outer ring) of the accepted instructions, per method.

# %%
verb_nouns = run_grids.verb_noun_runs(method_table)
tables.save_table(verb_nouns, cfg.out_path, "verb_nouns")
fig = grid_plots.plot_verb_noun(run_grids.verb_noun_tops(verb_nouns), "Verb-noun structure")
plots.save_figure(fig, cfg.out_path, "verb_noun")
display(fig)

# %% [markdown]
# ## 7. Demonstrations in instruction generation
#
# Ensemble-Instruct stage 1 with every combination of seed and generated demos per prompt (the
# same counts for each task type): acceptance and novelty. Empty when `pipeline_config` is None.

# %%
demo_table = steps.demo_runs(cfg, backends=fake_backends if fake_lms else None)
demo_summary = grid_summary.summarize(
    demo_table, ["seed_demos", "generated_demos"], ["stage1_acceptance", "novelty_mean"]
)
tables.save_table(demo_summary, cfg.out_path, "demo_summary")
display(grid_summary.format_summary(demo_summary, ["seed_demos", "generated_demos"]))

# %%
fig = grid_plots.plot_demo_counts(demo_summary)
plots.save_figure(fig, cfg.out_path, "demos")
display(fig)

# %% [markdown]
# ## Headline numbers
#
# Written to `metrics.json`, which a sweep over this notebook (`ensemble_instruct_lib.runs.sweep`)
# collects into one table.

# %%
headline = steps.headline_metrics(size_rows, threshold_rows, rule_rows, vanilla_rows, selector_rows)
write_metrics(cfg.out_path, headline)
display(headline)
