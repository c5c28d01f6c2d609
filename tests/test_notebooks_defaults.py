"""The five notebooks with their DEFAULT parameters, in order 01 -> 05, as a new user runs them
(slow; the real Gemma 3 270M through llama.cpp and transformers).

Only sizes are made CI-sized (`SIZES`: instructions per type, grid sizes, seeds, training steps,
evaluation items, answer lengths); models, configs and paths stay the notebooks' defaults. The
notebooks' relative paths (``outputs/notebooks/...``, ``configs/...``) start from
``$EI_NOTEBOOK_ROOT``: the test points it at a temporary folder whose ``configs`` links to the
checkout's, so the default outputs land there and not in the checkout, and each notebook finds
what the one before it wrote exactly where its defaults look (03 reads 02's run, 05 its exported
datasets). Each notebook's executed copy and tables go where the command line would put them
(``python -m ensemble_instruct_lib notebook NN_name outputs/notebooks/NN_name``).

The assertions are properties of real output (a stage-2 parse rate above the floor measured on
this model, rows that match counts across notebooks, non-blank figures), not fixed strings.

Skipped, with the install command, when llama-cpp-python or the model package is missing.
Measured on 2 shared cores: about 10-12 minutes.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from notebook_checks import REPO, assert_png, executed

from ensemble_instruct_lib.data.jsonl import read_jsonl
from ensemble_instruct_lib.engines import models as M
from ensemble_instruct_lib.runs import notebooks
from ensemble_instruct_lib.testing.real_models import missing_real_models

# a hang guard, not a speed target: 10-12 min on 2 idle cores, over 30 min on 2 cores shared with a
# real-model grid run
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3000)]

GEMMA = M.KNOWN_MODELS["gemma-3-270m"]
SMOL = M.KNOWN_MODELS["smollm2-135m-instruct"]
#: Stage-2 parse-rate floor (tests/test_backend_llama_cpp.py measured 14/18 on this model; the
#: floor catches a broken prompt, stop or decoding path, not quality).
STAGE2_FLOOR = 0.25
#: CI-sized overrides: sizes only (never a model, a config or a path).
SIZES = {
    "01_prompt_design": {},
    "02_generation": {
        "overrides": {
            "num_instructions": 2,
            "output": {"max_new_tokens": 24, "batch_size": 2},
        }
    },
    "03_ensembling": {"curve_points": 11},
    "04_ablations": {
        "sizes": [2, 3],
        "max_subsets": 2,
        "thresholds": [0.0, 0.1],
        "seeds": [0],
        "method_seeds": [0],
        "num_instructions": 1,
        "max_new_tokens": 48,
        "seed_demos": [10],
        "generated_demos": [0, 2],
    },
    "05_finetune_eval": {
        "finetune_overrides": {"max_steps": 2},
        "max_items": 3,
        "max_new_tokens": 24,
    },
}
RECORDED = 8  # the recorded GPT-3-family reference rows of notebook 05


def cfg_models() -> list[str]:
    """Notebook 03's default recorded members (its gold table has one row per member)."""
    from ensemble_instruct_lib.nb.steps.configs import EnsemblingConfig

    return list(EnsemblingConfig(out_dir="unused", run_dir=None).models)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    if reason := missing_real_models(GEMMA.name, SMOL.name):
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("fresh-checkout")
    (root / "configs").symlink_to(REPO / "configs")
    return root


def _run(root, name: str, monkeypatch):
    monkeypatch.setenv(notebooks.ROOT_ENV, str(root))
    out = root / "outputs" / "notebooks" / name
    assert set(SIZES[name]) <= set(notebooks.parameter_names(notebooks.notebook_path(name)))
    # a cell may run long on a busy machine (04's method grid: three pipeline runs)
    executed(notebooks.run_notebook(name, out, dict(SIZES[name]), timeout=1500))
    return out


def test_notebooks_01_to_05_with_defaults(root, monkeypatch):
    # 01: the prompts, and one real call per stage
    out = _run(root, "01_prompt_design", monkeypatch)
    probe = pd.read_csv(out / "probe.csv", keep_default_na=False)
    assert probe["stage"].tolist() == ["instruction", "instance"]
    assert (probe["raw"].str.strip().str.len() > 0).all()  # the real model wrote something
    assert len(pd.read_csv(out / "prompts.csv")) == 4
    assert_png(out / "prompt_lengths.png")

    # 02: a small real run through stage 4 and the export
    out = _run(root, "02_generation", monkeypatch)
    run = out / "run"
    counts = pd.read_csv(out / "stage_counts.csv").set_index("step")
    accepted = counts.loc["1 accepted instructions", "total"]
    generated = counts.loc["2 instances generated", "total"]
    valid = counts.loc["2 valid instances", "total"]
    assert 1 <= accepted <= 4 and generated == accepted
    assert valid / generated >= STAGE2_FLOOR
    members = [r for r in counts.index if r.startswith("3 outputs ")]
    assert len(members) == 2 and all(counts.loc[m, "total"] == valid for m in members)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["config"]["generator"]["model"].endswith(
        "gemma-3-270m"
    )
    # the default mixture is heterogeneous: two different real weights, named by their sha256
    weights = {m["revision"] for m in manifest["models"].values()}
    assert weights == {f"sha256:{GEMMA.gguf_sha256}", f"sha256:{SMOL.gguf_sha256}"}
    smol = [n for n, m in manifest["models"].items() if m["revision"].endswith(SMOL.gguf_sha256)]
    smol_outputs = read_jsonl(run / f"stage3_outputs_{smol[-1]}.jsonl")
    assert len(smol_outputs) == valid and any((r["output"] or "").strip() for r in smol_outputs)
    assert not any("<|im_" in (r["output"] or "") for r in smol_outputs)  # the template's end
    card = (run / "README.md").read_text()
    assert "Apache-2.0" in card and "Gemma Terms of Use" in card  # both licences on the card
    single = (run / "alpaca_single_output.jsonl").read_text().splitlines()
    assert len(single) == valid
    for name in ("instruction_rejections", "instance_rejections", "novelty", "lengths"):
        assert_png(out / f"{name}.png")

    # 03: that run (found by its default run_dir) and the recorded answers
    out = _run(root, "03_ensembling", monkeypatch)
    reasons = pd.read_csv(out / "run_reasons.csv")
    assert reasons["examples"].sum() == valid
    chosen = pd.read_csv(out / "run_chosen.csv")
    assert len(chosen) == 3
    kept = int(reasons.query("kept")["examples"].sum())
    assert len((run / "alpaca.jsonl").read_text().splitlines()) == kept
    assert pd.read_csv(out / "reasons.csv")["examples"].sum() == 252
    gold = pd.read_csv(out / "gold.csv").set_index("system")
    assert (gold.loc["oracle", "all_mean"] >= gold.loc[cfg_models(), "all_mean"]).all()
    assert len(pd.read_csv(out / "selectors.csv")) == 5
    for name in ("reasons", "pairwise", "chosen", "threshold_curve"):
        assert_png(out / f"run_{name}.png")
        assert_png(out / f"{name}.png")
    assert_png(out / "gold.png")

    # 04: the recorded grids, and the method and demo grids on the real model
    out = _run(root, "04_ablations", monkeypatch)
    sweep = pd.read_csv(out / "methods" / "sweep.csv")
    assert sweep["status"].eq("done").all() and len(sweep) == 3
    methods = pd.read_csv(out / "method_summary.csv")
    assert set(methods["method"]) == {"ensemble_instruct", "self_instruct", "alpaca"}
    demos = pd.read_csv(out / "demo_summary.csv")
    assert sorted(set(demos["generated_demos"])) == [0, 2]
    assert pd.read_csv(out / "demos" / "sweep.csv")["status"].eq("done").all()
    for name in ("size", "threshold", "rules", "methods", "demos"):
        assert_png(out / f"{name}.png")

    # 05: LoRA on Gemma 270M per non-empty dataset of 02's run, the base model, the references
    out = _run(root, "05_finetune_eval", monkeypatch)
    scores = pd.read_csv(out / "scores.csv")
    tuned = scores[scores["kind"] == "tuned"]["system"].tolist()
    expected = ["ensembled"] * int(kept > 0) + ["single_output"] * int(valid > 0)
    assert tuned == expected
    assert scores[scores["kind"] == "base"]["system"].tolist() == ["base"]
    assert (scores["kind"] == "recorded").sum() == RECORDED
    n_items = SIZES["05_finetune_eval"]["max_items"]
    assert (scores["n"] == n_items).all() and scores["rougeL"].between(0, 100).all()
    losses = pd.read_csv(out / "loss_curves.csv")
    assert set(losses["system"]) == set(expected)
    assert losses.dropna(subset=["loss"]).groupby("system")["step"].max().eq(2).all()
    for name in expected:
        ft = json.loads((out / "finetune" / name / "metrics.json").read_text())
        assert ft["mode"] == "lora" and 0 < ft["trainable_parameters"] < ft["total_parameters"]
    assert_png(out / "scores.png")
    assert_png(out / "loss_curves.png")
