# %% [markdown]
# # 05 Fine-tuning and evaluation
#
# The paper judges generated data by what it teaches: a base LM is fine-tuned on each dataset
# variant (for example the ensembled outputs of a run against the single, un-ensembled outputs of
# the same run) and each tuned model is scored with Rouge-L on the 252 user-oriented instructions
# of Self-Instruct and, given a local copy of the task files, on the SuperNI test split. This
# notebook trains one model per dataset named by the parameters, evaluates each on the chosen
# benchmarks, and shows a comparison table, bar charts per benchmark and per category, and the
# training-loss curves. The recorded answers of the eight GPT-3-family models to the same
# user-oriented items are scored the same way as reference rows.
#
# By default: Gemma 3 270M (the base model, by name) is LoRA-fine-tuned for a few steps
# (`configs/finetune-gemma-270m.yaml`) on the ensembled and the single-output data that notebook 02
# exported into its run dir, and scored with the untuned base model on the first 30 user-oriented
# items. Run notebook 02 first. At this size the comparison shows the plumbing, not a finding:
# raise `num_instructions` in notebook 02, `max_steps` and `max_items` for one.

# %%
# %matplotlib inline
from IPython.display import display

from ensemble_instruct_lib.nb import plots, tables
from ensemble_instruct_lib.nb.steps import finetune_eval as steps

# %% tags=["parameters"]
out_dir = "outputs/notebooks/05_finetune_eval"  # models, figures, tables (relative: repo root)
base_model = "gemma-3-270m"  # the base LM: known name (fetched on first use), hub id or folder
datasets = {
    "ensembled": "outputs/notebooks/02_generation/run/alpaca.jsonl",
    "single_output": "outputs/notebooks/02_generation/run/alpaca_single_output.jsonl",
}  # system name -> Alpaca-style JSONL (relative: repo root); default: notebook 02's run
evaluate_base = True  # also evaluate the base model itself (system "base")
finetune_config = "configs/finetune-gemma-270m.yaml"  # shared FinetuneConfig YAML (LoRA)
finetune_overrides = {}  # FinetuneConfig keys replacing the YAML's, e.g. {"max_steps": 200}
benchmarks = ["user_oriented"]  # "user_oriented" and/or "superni"
superni_dir = None  # natural-instructions checkout for "superni"; None: $EI_SUPERNI_DIR
max_items = 30  # evaluate on the first N items of each benchmark; None: all (252 user-oriented)
max_new_tokens = 128  # cap on each greedy answer
eval_batch_size = 8  # prompts per generate call in evaluation
backend_options = {}  # extra HFBackend arguments for evaluation, e.g. {"dtype": "bf16"}
reference_models = [
    "davinci",
    "text-davinci-001",
    "text-davinci-002",
    "text-davinci-003",
    "davinci-self-instruct",
    "davinci-superni-ft",
    "davinci-t0-ft",
    "davinci-self-instruct-and-superni-ft",
]  # recorded GPT-3-family models scored as reference rows ([] for none)
study_dir = "outputs/replicate/replicate-cpu"  # a replication study's folder (None: skip it)

# %%
cfg = steps.FinetuneEvalConfig(
    out_dir=out_dir,
    base_model=base_model,
    datasets=datasets,
    evaluate_base=evaluate_base,
    finetune_config=finetune_config,
    finetune_overrides=finetune_overrides,
    benchmarks=benchmarks,
    superni_dir=superni_dir,
    max_items=max_items,
    max_new_tokens=max_new_tokens,
    eval_batch_size=eval_batch_size,
    backend_options=backend_options,
    reference_models=reference_models,
    study_dir=study_dir,
)
display(steps.config_table(cfg))

# %% [markdown]
# ## Fine-tune one model per dataset
#
# Each run lives in `<out_dir>/finetune/<system>/` and resumes from its last checkpoint when the
# notebook is run again.

# %%
runs = steps.finetune_datasets(cfg)
display(steps.run_table(runs))

# %%
losses = steps.loss_curves(runs)
tables.save_table(losses, cfg.out_path, "loss_curves")
fig = plots.plot_loss_curves(losses)
plots.save_figure(fig, cfg.out_path, "loss_curves")
display(fig)

# %% [markdown]
# ## Evaluate
#
# Greedy answers in the fine-tuning prompt format, scored with SuperNI's Rouge-L (and exact
# match); the recorded GPT-3-family answers are scored on the same user-oriented items.

# %%
items = steps.benchmark_items(cfg)
comparison = steps.evaluate_systems(cfg, runs, items)
tables.save_table(comparison.scores, cfg.out_path, "scores")
tables.save_table(comparison.per_category, cfg.out_path, "scores_per_category")
display(comparison.scores)

# %%
fig = plots.plot_benchmark_scores(comparison.scores)
plots.save_figure(fig, cfg.out_path, "scores")
display(fig)

# %% [markdown]
# ## Per category
#
# User-oriented items are grouped by the app that motivated them, SuperNI items by task category;
# the largest categories are shown for the models tuned here.

# %%
fig = plots.plot_category_scores(comparison.per_category)
plots.save_figure(fig, cfg.out_path, "scores_per_category")
display(fig)

# %% [markdown]
# ## The replication study: the paper's three findings in miniature
#
# `python -m ensemble_instruct_lib replicate --config configs/replicate-cpu.yaml` fine-tunes both
# real models on size-matched datasets made with Ensemble-Instruct's and Self-Instruct's prompts,
# ensembled and single-output, and scores them with 95% paired bootstrap intervals
# (`docs/replication.md`). This section reads its folder: no model is called here. `diff` is
# a - b in Rouge-L x100; `wins` names the side the interval excludes 0 for.

# %%
study = steps.study_tables(cfg) if study_dir is not None else None
if study is not None:
    display(study["comparisons"])
    display(study["systems"])
    display(study["data"])

# %%
study_figs = steps.save_study_figures(study, cfg.out_path)
display(*study_figs)
