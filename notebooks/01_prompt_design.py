# %% [markdown]
# # 01 Prompt design
#
# Ensemble-Instruct's first idea is to split the 175 Self-Instruct seed tasks into two types (A:
# the task needs an input; B: output only) and to give each type its own short, uniform prompt.
# This notebook renders the stage-1 (instruction generation) and stage-2 (instance generation)
# prompts of both types from the real seeds, measures them in tokens of a chosen tokenizer (or in
# words), lists the seed tasks drawn as demonstrations, and offers a widget to vary the type, the
# demonstration counts and the random seed. When a backend is configured it sends the prompts of
# one type to that LM and shows the raw answer next to what the parser made of it and which filter,
# if any, rejected it.

# %%
# %matplotlib inline
from IPython.display import HTML, display

from ensemble_instruct_lib.nb import plots, tables, widgets
from ensemble_instruct_lib.nb.steps import prompt_design as steps

# %% tags=["parameters"]
out_dir = "outputs/notebooks/01_prompt_design"  # figures and tables go here (relative: repo root)
seed_file = None  # seed-task JSONL; None: the Self-Instruct seeds in the data dir
task_type = "A"  # type printed in full and sent to the LM: "A" (needs input) or "B" (output only)
num_seed = None  # stage-1 seed demonstrations; None: METHOD.md's (A 20, B 8)
num_generated = None  # stage-1 generated demonstrations; None: METHOD.md's (A 4, B 2)
num_instance_demos = None  # stage-2 demonstrations; None: METHOD.md's (A 18, B 15)
random_seed = 0  # seed of the demonstration draw
generated = []  # earlier generated instructions that may serve as stage-1 demonstrations
instance_instructions = {"A": "Summarize the input.", "B": "Name a primary color."}  # stage-2 ones
tokenizer = None  # tokenizer folder or hub id for token counts; None: whitespace words
backend = {"kind": "llama_cpp", "model": "gemma-3-270m"}  # LM called once (Gemma 3 270M, fetched
# on first use); any backend spec, e.g. {"kind": "hf", "model": "tiiuae/falcon-7b"}; None: skip
max_new_tokens = 128  # cap on the LM's answer; None: the stage defaults (256 and 512 tokens)

# %%
cfg = steps.PromptDesignConfig(
    out_dir=out_dir,
    seed_file=seed_file,
    task_type=task_type,
    num_seed=num_seed,
    num_generated=num_generated,
    num_instance_demos=num_instance_demos,
    random_seed=random_seed,
    generated=generated,
    instance_instructions=instance_instructions,
    tokenizer=tokenizer,
    backend=backend,
    max_new_tokens=max_new_tokens,
)
display(steps.config_table(cfg))

# %% [markdown]
# ## The seed tasks by type
#
# Type A seeds have a non-empty input in their first instance, type B seeds none. METHOD.md's
# demonstration counts per type are shown below them.

# %%
seeds = steps.load_seeds(cfg)
overview = steps.seed_overview(seeds)
tables.save_table(overview, cfg.out_path, "seed_overview")
display(overview)

# %%
display(steps.demo_defaults())

# %% [markdown]
# ## The prompts of both types
#
# One row per stage and type: the prompt builder's version, the number of demonstrations, the
# seed tasks drawn and the length.

# %%
tok = steps.load_tokenizer(cfg.tokenizer)
prompts = steps.render_prompts(seeds, cfg, tok)
tables.save_table(prompts, cfg.out_path, "prompts")
display(prompts.drop(columns="text"))

# %%
fig = plots.plot_prompt_lengths(prompts)
plots.save_figure(fig, cfg.out_path, "prompt_lengths")
display(fig)

# %% [markdown]
# The stage-1 prompt of the chosen type, exactly as the LM sees it (it ends with the next number,
# so the LM writes one new instruction):

# %%
print(prompts.set_index(["stage", "task_type"]).loc[("instruction", cfg.task_type), "text"])

# %% [markdown]
# The stage-2 prompt of the chosen type (it ends with the new instruction and a newline; the LM
# continues with the input and output):

# %%
print(prompts.set_index(["stage", "task_type"]).loc[("instance", cfg.task_type), "text"])

# %% [markdown]
# ## Explore
#
# Change the type, stage, demonstration counts or random seed; the prompt, its length and the
# seeds drawn follow. (Interactive only: a headless run keeps the first rendering.)

# %%
explorer = widgets.prompt_explorer(
    seeds,
    tokenizer=tok,
    unit=steps.length_unit(tok),
    generated=cfg.generated,
    instructions=cfg.instance_instructions,
    random_seed=cfg.random_seed,
)
display(explorer)

# %% [markdown]
# ## One call to an LM
#
# The two prompts of the chosen type go to the configured backend with the pipeline's decoding
# settings (sampling at temperature 0.7, stop at `|EoS|`). Each raw answer is shown next to the
# parsed result and the verdict: the post-filter or novelty check that rejected a stage-1
# instruction, or the parser's reason for an invalid stage-2 instance. Nothing is shown when
# `backend` is None.

# %%
probe = steps.probe_backend(
    cfg.backend,
    prompts,
    seeds,
    cfg.task_type,
    generated=cfg.generated,
    max_new_tokens=cfg.max_new_tokens,
    seed=cfg.random_seed,
)
tables.save_table(probe, cfg.out_path, "probe")
display(HTML(widgets.render_probe_html(probe)))
