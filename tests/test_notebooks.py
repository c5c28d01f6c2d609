"""The notebooks layer: the runner, the house-rule checks, the per-notebook configs and steps, and
every notebook executed through papermill with small parameters (marked slow).

The notebook runs use no model hub: notebook 01 probes a tiny random-weight GPT-2 built here,
02 runs the pipeline with the kit's fake LMs, 03 ensembles the recorded GPT-3-family answers and
02's run, 05 fine-tunes the tiny GPT-2 for a few steps on datasets written here. Each test checks
the files the notebook wrote (tables' contents, PNGs), not only that it ran.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from ensemble_instruct_lib.data.public import load_seed_tasks, split_by_type
from ensemble_instruct_lib.engines.scripted import ScriptedBackend
from ensemble_instruct_lib.errors import ConfigError
from ensemble_instruct_lib.method.prompts import instruction_prompt
from ensemble_instruct_lib.nb.steps import configs, prompt_design
from ensemble_instruct_lib.runs import notebooks

REPO = Path(__file__).resolve().parents[1]
NAMES = [
    "01_prompt_design",
    "02_generation",
    "03_ensembling",
    "04_ablations",
    "05_finetune_eval",
]
PNG = b"\x89PNG\r\n\x1a\n"


def _write_twin(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path


GOOD = """# %% [markdown]
# # A title
# One paragraph.

# %%
import sys

# %% tags=["parameters"]
out_dir = "x"  # where things go
n = 3  # how many
names = ["a", "b"]  # which

# %%
print(sys.executable, n, names, [k * 2 for k in range(n)])
"""


# --------------------------------------------------------------------------------------------
# finding and checking notebooks


def test_list_notebooks_and_paths():
    assert set(NAMES) <= set(notebooks.list_notebooks())
    assert notebooks.notebook_path("03_ensembling") == REPO / "notebooks" / "03_ensembling.py"
    with pytest.raises(FileNotFoundError, match="01_prompt_design"):
        notebooks.notebook_path("99_missing")


@pytest.mark.parametrize("name", notebooks.list_notebooks())
def test_notebook_twins_follow_the_house_rules(name):
    path = REPO / "notebooks" / f"{name}.py"
    assert notebooks.lint_notebook(path) == []
    assert "out_dir" in notebooks.parameter_names(path)


def test_lint_accepts_a_good_notebook(tmp_path):
    assert notebooks.lint_notebook(_write_twin(tmp_path / "good.py", GOOD)) == []
    assert notebooks.parameter_names(tmp_path / "good.py") == ["out_dir", "n", "names"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("print(sys.executable", "def f():\n    pass\nprint(sys.executable"), "`def`"),
        (("print(sys.executable", "class C:\n    pass\nprint(sys.executable"), "`class`"),
        (("print(sys.executable", "for k in names:\n    print(k)\nprint(sys.executable"), "`for`"),
        (("print(sys.executable", "while False:\n    pass\nprint(sys.executable"), "`while`"),
        (("n = 3  # how many", "n = len('abc')  # how many"), "not a literal"),
        (("n = 3  # how many", "n = 3"), "needs a comment"),
        (("n = 3  # how many", "n = 3  # n = three"), "only one '='"),
        (("n = 3  # how many", "import os  # a module"), "may only hold"),
        (('out_dir = "x"  # where things go\n', ""), "needs `out_dir`"),
        (('# %% tags=["parameters"]', "# %%"), "found 0"),
        (("# %%\nprint", '# %% tags=["parameters"]\nprint'), "found 2"),
        (("# # A title", "A title"), "markdown title"),
        (("print(sys.executable", "print((sys.executable"), "does not parse"),
    ],
)
def test_lint_catches(tmp_path, change, message):
    old, new = change
    assert old in GOOD
    path = _write_twin(tmp_path / "bad.py", GOOD.replace(old, new, 1))
    problems = notebooks.lint_notebook(path)
    assert any(message in p for p in problems), problems


def test_check_script_passes_on_the_repo():
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "check_notebooks.py")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{len(notebooks.list_notebooks())} notebooks ok" in proc.stdout


def test_check_script_fails_with_a_clear_message(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    _write_twin(folder / "01_bad.py", GOOD.replace("print(sys.executable", "for k in names:\n    1\nprint(sys.executable"))  # fmt: skip
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "check_notebooks.py"), str(folder)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "01_bad.py, cell 4, line 1: `for` in a notebook" in proc.stderr


def test_tracked_ipynb_is_reported(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import check_notebooks
    finally:
        sys.path.pop(0)
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    (repo / "notebooks" / "01_x.ipynb").write_text("{}")
    (repo / "notebooks" / "01_x.py").write_text(GOOD)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    assert check_notebooks.tracked_ipynb(repo, repo / "notebooks") == []
    subprocess.run([*git, "add", "notebooks"], check=True)
    assert check_notebooks.tracked_ipynb(repo, repo / "notebooks") == ["notebooks/01_x.ipynb"]


def test_jupytext_pairing_round_trip_keeps_tags(tmp_path):
    """With the repo's jupytext.toml, .py -> .ipynb -> .py gives the twin back byte for byte."""
    shutil.copy(REPO / "jupytext.toml", tmp_path / "jupytext.toml")
    twin = tmp_path / "01_prompt_design.py"
    shutil.copy(REPO / "notebooks" / "01_prompt_design.py", twin)
    original = twin.read_text()
    jt = [sys.executable, "-m", "jupytext", "-q"]
    subprocess.run([*jt, "--to", "ipynb", str(twin)], check=True, cwd=tmp_path)
    nb = nbformat.read(tmp_path / "01_prompt_design.ipynb", as_version=4)
    assert [c.metadata.get("tags") for c in nb.cells].count(["parameters"]) == 1
    twin.unlink()
    subprocess.run([*jt, "--to", "py:percent", "01_prompt_design.ipynb"], check=True, cwd=tmp_path)
    assert twin.read_text() == original


# --------------------------------------------------------------------------------------------
# the runner's argument checks


def test_run_notebook_refuses_unknown_parameters(tmp_path):
    twin = _write_twin(tmp_path / "good.py", GOOD)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['m'\]; allowed"):
        notebooks.run_notebook(twin, tmp_path / "out", {"m": 1})
    with pytest.raises(TypeError, match="tuple cannot be passed"):
        notebooks.run_notebook(twin, tmp_path / "out", {"names": ("a",)})
    with pytest.raises(TypeError, match="dict keys must be strings"):
        notebooks.run_notebook(twin, tmp_path / "out", {"names": {1: "a"}})


def test_default_kernel_is_this_interpreter():
    assert notebooks.default_kernel() == "python3"


def test_resolve_path_is_anchored_on_the_repo():
    assert notebooks.resolve_path("configs/x.yaml") == REPO / "configs" / "x.yaml"
    assert notebooks.resolve_path("/abs/p") == Path("/abs/p")


# --------------------------------------------------------------------------------------------
# configs


def test_prompt_design_config_validates(tmp_path):
    ok = {"out_dir": str(tmp_path), "instance_instructions": {"A": "Do it.", "B": "Say it."}}
    cfg = configs.PromptDesignConfig(**ok)
    assert cfg.out_path == tmp_path
    bad = [
        {"task_type": "C"},
        {"num_seed": -1},
        {"num_instance_demos": 0},
        {"instance_instructions": {"A": "x"}},
        {"backend": {"model": "gpt2"}},
        {"generated": "not a list"},
        {"out_dir": ""},
    ]
    for b in bad:
        with pytest.raises(ConfigError):
            configs.PromptDesignConfig(**{**ok, **b})


def test_ensembling_config_validates(tmp_path):
    cfg = configs.EnsemblingConfig(out_dir=str(tmp_path), curve_max=0.5, curve_points=6)
    assert cfg.thresholds == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    for b in [
        {"models": ["davinci"]},
        {"models": ["davinci", "gpt-4"]},
        {"models": ["davinci", "davinci"]},
        {"rule": "vote"},
        {"threshold": 1.5},
        {"stop": "all"},
        {"run_dir": str(tmp_path / "missing")},
        {"curve_points": 1},
    ]:
        with pytest.raises(ConfigError):
            configs.EnsemblingConfig(out_dir=str(tmp_path), **b)


def test_generation_config_loads_and_anchors(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text(
        "generator: {kind: hf, model: outputs, name: gen}\n"  # a folder that exists in the repo
        "extra_models: [{kind: hf, model: Org/hub-id, name: x}]\n"
    )
    cfg = configs.GenerationConfig(out_dir=str(tmp_path), config_path=str(conf),
                                     overrides={"num_instructions": 3})  # fmt: skip
    assert cfg.run_config.num_instructions == 3
    assert cfg.run_config.generator.model == str(REPO / "outputs")
    assert cfg.run_config.extra_models[0].model == "Org/hub-id"
    assert cfg.run_path == tmp_path / "run"
    with pytest.raises(ConfigError, match="no such file"):
        configs.GenerationConfig(out_dir=str(tmp_path), config_path="configs/none.yaml")
    with pytest.raises(ConfigError, match="unknown key"):
        configs.GenerationConfig(out_dir=str(tmp_path), config_path=str(conf),
                                   overrides={"num_instruction": 3})  # fmt: skip


def test_finetune_eval_config_validates(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"instruction": "i", "input": "", "output": "o"}) + "\n")
    ok = {"out_dir": str(tmp_path), "base_model": "gpt2", "datasets": {"ens": str(data)},
          "finetune_overrides": {"max_steps": 2}}  # fmt: skip
    cfg = configs.FinetuneEvalConfig(**ok)
    ft = cfg.finetune_config_for("ens")
    assert ft.max_steps == 2 and ft.run_dir == str(tmp_path / "finetune" / "ens")
    for b in [
        {"datasets": {}},
        {"datasets": {"ens": str(tmp_path / "missing.jsonl")}},
        {"datasets": {"bad name": str(data)}},
        {"finetune_overrides": {"data": "x"}},
        {"finetune_overrides": {"max_step": 2}},
        {"benchmarks": ["mmlu"]},
        {"reference_models": ["gpt-4"]},
        {"max_items": 0},
    ]:
        with pytest.raises(ConfigError):
            configs.FinetuneEvalConfig(**{**ok, **b})


# --------------------------------------------------------------------------------------------
# steps (fast)


def test_design_prompt_is_the_pipeline_prompt():
    seeds = load_seed_tasks()
    p = prompt_design.design_prompt(
        "instruction", "A", seeds, random_seed=3, generated=["Do x now."]
    )
    ref = instruction_prompt("A", split_by_type(seeds)["A"], ["Do x now."], random.Random(3))
    assert p.text == ref.text and p.meta == ref.meta
    inst = prompt_design.design_prompt(
        "instance", "B", seeds, num_instance_demos=2, instruction="Go."
    )
    assert inst.text.endswith("instruction: Go.\n") and len(inst.meta["seed_ids"]) == 2
    with pytest.raises(ValueError, match="stage"):
        prompt_design.design_prompt("output", "A", seeds)


def test_render_prompts_in_words(tmp_path):
    seeds = load_seed_tasks()
    cfg = configs.PromptDesignConfig(
        out_dir=str(tmp_path), num_seed=3, num_generated=1, num_instance_demos=2,
        instance_instructions={"A": "Do it.", "B": "Say it."},
    )  # fmt: skip
    table = prompt_design.render_prompts(seeds, cfg)
    assert list(zip(table["stage"], table["task_type"], strict=True)) == [
        ("instruction", "A"), ("instruction", "B"), ("instance", "A"), ("instance", "B"),
    ]  # fmt: skip
    assert (table["tokens"] == table["text"].str.split().str.len()).all()
    assert set(table["unit"]) == {"words"}
    assert table.loc[0, "demos"] == 4 and len(table.loc[0, "seed_ids"]) == 4  # 3 + 1 filling in
    overview = prompt_design.seed_overview(seeds)
    assert overview.set_index("task_type")["seeds"].to_dict() == {"A": 125, "B": 50}


def _probe_backend(stage1: str, stage2: str) -> ScriptedBackend:
    return ScriptedBackend([(r"\n\d+\.$", stage1), (r"instruction: .*\n$", stage2)])


@pytest.mark.parametrize(
    ("stage1", "stage2", "verdict1", "verdict2"),
    [
        (" Draw a picture of a cat. |EoS|", "input: a cat\noutput: a drawing\n|EoS|",
         "keyword:draw", "valid"),
        (" Estimate how many beekeepers live in a mid-sized coastal town.\n26. Count windows.",
         "output: 42\n|EoS|", "accepted", "no_input"),
        (" Give three examples of renewable energy sources. |EoS|", "input: x\noutput: \n|EoS|",
         "not_novel", "empty_output"),
    ],
)  # fmt: skip
def test_probe_backend_parses_and_judges(tmp_path, stage1, stage2, verdict1, verdict2):
    seeds = load_seed_tasks()
    seeds_a = [s.instruction for s in split_by_type(seeds)["A"]]
    if verdict1 == "not_novel":  # make the answer a copy of a real type-A seed
        stage1 = f" {seeds_a[0]} |EoS|"
    cfg = configs.PromptDesignConfig(
        out_dir=str(tmp_path), num_seed=4, num_generated=0, num_instance_demos=2,
        instance_instructions={"A": "Do it.", "B": "Say it."},
    )  # fmt: skip
    prompts = prompt_design.render_prompts(seeds, cfg)
    lm = _probe_backend(stage1, stage2)
    probe = prompt_design.probe_backend(lm, prompts, seeds, "A", max_new_tokens=32)
    assert list(probe["stage"]) == ["instruction", "instance"]
    assert list(probe["verdict"]) == [verdict1, verdict2]
    assert lm.calls == [prompts.loc[0, "text"], prompts.loc[2, "text"]]  # type A's two prompts
    if verdict1 == "accepted":
        assert probe.loc[0, "parsed"].startswith("Estimate how many")
        assert "2 instruction(s) parsed" in probe.loc[0, "detail"]
    if verdict2 == "valid":
        assert probe.loc[1, "parsed"] == "input: a cat\noutput: a drawing"
    assert prompt_design.probe_backend(None, prompts, seeds, "A").empty


# --------------------------------------------------------------------------------------------
# executing the notebooks (slow)


def _executed(path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    return nb


def _png(path: Path) -> None:
    assert path.exists(), path
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 2000, path


def _outputs_of_type(nb: nbformat.NotebookNode, mime: str) -> int:
    return sum(mime in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory) -> Path:
    from ensemble_instruct_lib.testing.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "gpt2", "gpt2", seed=0)


@pytest.mark.slow
def test_runner_uses_this_interpreter(tmp_path):
    twin = _write_twin(tmp_path / "good.py", GOOD)
    out = notebooks.run_notebook(twin, tmp_path / "out", {"n": 2, "names": ["z"]})
    assert out == tmp_path / "out" / "good.ipynb"
    nb = _executed(out)
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    assert printed.split()[0] == sys.executable
    assert "2 ['z'] [0, 2]" in printed
    assert "injected-parameters" in nb.cells[3].metadata.get("tags", [])
    assert f'out_dir = "{tmp_path / "out"}"' in nb.cells[3].source  # defaults to the run's dir


@pytest.mark.slow
def test_notebook_01_prompt_design(tmp_path, tiny_gpt2):
    out = tmp_path / "01"
    path = notebooks.run_notebook(
        "01_prompt_design",
        out,
        {
            "num_seed": 4,
            "num_generated": 1,
            "num_instance_demos": 3,
            "generated": ["Rewrite the sentence in the passive voice."],
            "tokenizer": str(tiny_gpt2),
            "backend": {"kind": "hf", "model": str(tiny_gpt2), "device": "cpu"},
            "max_new_tokens": 16,
        },
    )
    nb = _executed(path)
    assert _outputs_of_type(nb, "image/png") >= 1
    overview = pd.read_csv(out / "seed_overview.csv").set_index("task_type")
    assert overview["seeds"].to_dict() == {"A": 125, "B": 50}
    prompts = pd.read_csv(out / "prompts.csv")
    assert len(prompts) == 4 and set(prompts["unit"]) == {"tokens (gpt2)"}
    words = prompts["text"].str.split().str.len()
    assert (prompts["tokens"] > words).all()  # a 512-token BPE splits words
    assert prompts.query("stage == 'instruction'")["demos"].tolist() == [5, 5]
    assert prompts.query("stage == 'instance'")["demos"].tolist() == [3, 3]
    _png(out / "prompt_lengths.png")
    probe = pd.read_csv(out / "probe.csv", keep_default_na=False)
    assert probe["stage"].tolist() == ["instruction", "instance"]
    assert probe["verdict"].str.len().min() > 0
    assert probe.loc[1, "verdict"] in {"valid", "no_output", "no_input", "empty_output",
                                       "empty_input"}  # fmt: skip


FAKE_CONFIG = """name: nb-test
seed: 0
num_instructions: 6
generator: {kind: scripted, model: fake-generator, name: gen}
extra_models:
  - {kind: scripted, model: fake-a, name: extra-a}
  - {kind: scripted, model: fake-b, name: extra-b}
"""


@pytest.mark.slow
def test_notebooks_02_then_03_on_its_run(tmp_path):
    conf = tmp_path / "fake.yaml"
    conf.write_text(FAKE_CONFIG)
    out = tmp_path / "02"
    path = notebooks.run_notebook(
        "02_generation",
        out,
        {"config_path": str(conf), "fake_lms": True, "overrides": {"num_instructions": 5}},
    )
    nb = _executed(path)
    assert _outputs_of_type(nb, "image/png") == 4
    counts = pd.read_csv(out / "stage_counts.csv").set_index("step")
    assert counts.loc["1 accepted instructions", ["A", "B"]].tolist() == [5, 5]
    valid = counts.loc["2 valid instances", "total"]
    assert 0 < valid <= 10
    assert counts.loc["3 outputs extra-a", "total"] == valid
    assert counts.loc["3 outputs extra-b", "total"] == valid
    assert counts.loc["1 candidate instructions", "total"] >= 10
    rejected = pd.read_csv(out / "instruction_rejections.csv")
    n_rejected = counts.loc["1 candidate instructions", "total"] - 10
    assert rejected["total"].sum() <= n_rejected  # target_reached candidates are left out
    for name in ("instruction_rejections", "instance_rejections", "novelty", "lengths"):
        _png(out / f"{name}.png")
    lengths = pd.read_csv(out / "lengths.csv")
    assert set(lengths["field"]) == {"instruction", "input", "output"}
    sample = pd.read_csv(out / "sample.csv", keep_default_na=False)
    assert len(sample) == valid if valid < 10 else len(sample) == 10
    assert (sample["output"].str.len() > 0).all()
    manifest = json.loads((out / "run" / "manifest.json").read_text())
    assert manifest["status"] == "done" and "stage4" not in manifest["counts"]

    out3 = tmp_path / "03"
    path3 = notebooks.run_notebook("03_ensembling", out3, {"run_dir": str(out / "run")})
    _executed(path3)
    reasons = pd.read_csv(out3 / "reasons.csv")
    assert reasons["examples"].sum() == valid
    examples = pd.read_csv(out3 / "examples.csv")
    assert (
        len(examples) == valid and examples["kept"].sum() == reasons.query("kept")["examples"].sum()
    )
    chosen = pd.read_csv(out3 / "chosen.csv")
    assert chosen["model"].tolist() == ["gen", "extra-a", "extra-b"]
    assert chosen["chosen"].sum() == examples["kept"].sum()
    assert pd.read_csv(out3 / "gold.csv").empty  # a run has no gold outputs
    assert pd.read_csv(out3 / "selectors.csv").empty  # nor a selector comparison against gold
    for name in ("reasons", "pairwise", "agreement_matrix", "chosen", "threshold_curve", "gold"):
        _png(out3 / f"{name}.png")
    assert (out / "run" / "ensembled.jsonl").exists()


@pytest.mark.slow
def test_notebook_03_on_recorded_outputs(tmp_path):
    from ensemble_instruct_lib.analysis.recorded_ensemble import ensemble_recorded

    out = tmp_path / "03"
    models = ["text-davinci-003", "davinci-self-instruct", "davinci-t0-ft"]
    path = notebooks.run_notebook(
        "03_ensembling", out, {"models": models, "curve_points": 11, "threshold": 0.05}
    )
    nb = _executed(path)
    assert _outputs_of_type(nb, "image/png") >= 6
    ref = ensemble_recorded(models, threshold=0.05)
    reasons = pd.read_csv(out / "reasons.csv").set_index("reason")
    assert reasons.loc[["exact_match", "consensus"], "examples"].sum() == ref.kept
    assert reasons["examples"].sum() == 252
    curve = pd.read_csv(out / "threshold_curve.csv")
    assert len(curve) == 11 and curve["kept"].is_monotonic_decreasing
    assert curve.loc[curve["threshold"] == 0.05, "kept"].item() == ref.kept
    gold = pd.read_csv(out / "gold.csv").set_index("system")
    assert gold.loc["consensus", "kept_mean"] == pytest.approx(
        ref.summary.set_index("system").loc["consensus", "kept_mean"]
    )
    assert (gold.loc["oracle", "all_mean"] >= gold.loc[models, "all_mean"]).all()
    chosen = pd.read_csv(out / "chosen.csv")
    assert chosen["model"].tolist() == models and chosen["chosen"].sum() == ref.kept
    pairs = pd.read_csv(out / "pairwise.csv")
    assert len(pairs) == 3 * 252 and pairs["score"].between(0, 1).all()
    sel = pd.read_csv(out / "selectors.csv").set_index("selector")
    assert list(sel.index) == ["sum", "best_pair", "mbr:rouge_l", "mbr:chrf", "mbr:token_f1"]
    assert sel.loc["sum", "kept_fraction"] == pytest.approx(ref.kept / 252)
    assert sel.loc["sum", "gold_kept"] == pytest.approx(gold.loc["consensus", "kept_mean"])
    assert sel.loc["mbr:rouge_l", "agree_sum"] == 1.0
    for name in ("reasons", "pairwise", "agreement_matrix", "chosen", "threshold_curve", "gold"):
        _png(out / f"{name}.png")


@pytest.mark.slow
def test_notebook_05_finetune_eval(tmp_path, tiny_gpt2):
    words = ["apple", "river", "stone", "cloud", "maple", "tiger", "piano", "candle"]
    datasets = {}
    for name, upper in (("ensembled", True), ("single_output", False)):
        path = tmp_path / f"{name}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for i in range(24):
                w = words[i % len(words)]
                rec = {"instruction": "Repeat the word in capital letters.", "input": w,
                       "output": w.upper() if upper else w}  # fmt: skip
                f.write(json.dumps(rec) + "\n")
        datasets[name] = str(path)
    out = tmp_path / "05"
    overrides = {
        "max_steps": 4, "batch_size": 4, "logging_steps": 1, "eval_steps": 2, "save_steps": 100,
        "learning_rate": 3e-3, "lr_scheduler": "constant", "warmup_ratio": 0.0,
        "val_fraction": 0.125, "device": "cpu", "precision": "fp32", "progress": False,
        "max_seq_len": 256,
    }  # fmt: skip
    path = notebooks.run_notebook(
        "05_finetune_eval",
        out,
        {
            "base_model": str(tiny_gpt2),
            "datasets": datasets,
            "finetune_config": None,
            "finetune_overrides": overrides,
            "max_items": 6,
            "max_new_tokens": 8,
            "backend_options": {"device": "cpu"},
        },
    )
    nb = _executed(path)
    assert _outputs_of_type(nb, "image/png") >= 3
    scores = pd.read_csv(out / "scores.csv")
    tuned = scores[scores["kind"] == "tuned"]
    assert tuned["system"].tolist() == ["ensembled", "single_output"]
    assert (scores["n"] == 6).all() and (scores["benchmark"] == "user_oriented").all()
    assert len(scores[scores["kind"] == "recorded"]) == 8
    assert scores["rougeL"].between(0, 100).all()
    recorded = scores.set_index("system").loc["text-davinci-003", "rougeL"]
    assert recorded > 20  # real answers on six real tasks
    cats = pd.read_csv(out / "scores_per_category.csv")
    assert set(cats["system"]) >= {"ensembled", "single_output"}
    assert cats.groupby("system")["n"].sum().eq(6).all()
    losses = pd.read_csv(out / "loss_curves.csv")
    assert set(losses["system"]) == {"ensembled", "single_output"}
    assert losses.dropna(subset=["loss"]).groupby("system")["step"].max().eq(4).all()
    assert losses["eval_loss"].notna().any()
    for name in ("ensembled", "single_output"):
        assert (out / "finetune" / name / "model" / "config.json").exists()
        assert (out / "eval" / name / "user_oriented" / "predictions.jsonl").exists()
    for name in ("loss_curves", "scores", "scores_per_category"):
        _png(out / f"{name}.png")


def test_command_line(capsys):
    assert notebooks.main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert "03_ensembling: out_dir, run_dir, models" in listed
    assert notebooks.main(["03_ensembling", "/tmp/unused", "-p", "bogus=1"]) == 2
    assert "unknown parameter(s) ['bogus']" in capsys.readouterr().err
