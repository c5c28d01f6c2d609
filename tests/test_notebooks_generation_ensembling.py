"""Notebooks 02 (generation) and 03 (ensembling), executed (slow): 02 runs the pipeline with the
kit's fake LMs (through stage 4 and the export), 03 ensembles that run next to the recorded
GPT-3-family answers, and alone the recorded answers (run_dir None); each
test checks the tables the notebook wrote against the run or an independent computation."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from notebook_checks import assert_png, executed, outputs_of_type

from ensemble_instruct_lib.runs import notebooks

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
    nb = executed(path)
    assert outputs_of_type(nb, "image/png") == 4
    counts = pd.read_csv(out / "stage_counts.csv").set_index("step")
    assert counts.loc["1 accepted instructions", ["A", "B"]].tolist() == [5, 5]
    valid = counts.loc["2 valid instances", "total"]
    assert 0 < valid <= 10
    assert counts.loc["3 outputs extra-a", "total"] == valid
    assert counts.loc["3 outputs extra-b", "total"] == valid
    tokens = pd.read_csv(out / "tokens.csv").set_index(["stage", "model"])  # the token ledger
    assert tokens.loc[("stage3", "extra-a"), "new"] == valid
    assert tokens.loc[("stage2", "gen"), "calls"] == 10
    assert counts.loc["1 candidate instructions", "total"] >= 10
    rejected = pd.read_csv(out / "instruction_rejections.csv")
    n_rejected = counts.loc["1 candidate instructions", "total"] - 10
    assert rejected["total"].sum() <= n_rejected  # target_reached candidates are left out
    for name in ("instruction_rejections", "instance_rejections", "novelty", "lengths"):
        assert_png(out / f"{name}.png")
    lengths = pd.read_csv(out / "lengths.csv")
    assert set(lengths["field"]) == {"instruction", "input", "output"}
    sample = pd.read_csv(out / "sample.csv", keep_default_na=False)
    assert len(sample) == valid if valid < 10 else len(sample) == 10
    assert (sample["output"].str.len() > 0).all()
    manifest = json.loads((out / "run" / "manifest.json").read_text())
    assert manifest["status"] == "done" and "stage4" in manifest["counts"]
    for name in ("ensembled.jsonl", "alpaca.jsonl", "alpaca_single_output.jsonl"):
        assert (out / "run" / name).exists()  # what notebooks 03 and 05 read
    single = (out / "run" / "alpaca_single_output.jsonl").read_text().splitlines()
    assert len(single) == valid

    out3 = tmp_path / "03"
    path3 = notebooks.run_notebook("03_ensembling", out3, {"run_dir": str(out / "run")})
    executed(path3)
    reasons = pd.read_csv(out3 / "run_reasons.csv")
    assert reasons["examples"].sum() == valid
    examples = pd.read_csv(out3 / "run_examples.csv")
    assert (
        len(examples) == valid and examples["kept"].sum() == reasons.query("kept")["examples"].sum()
    )
    chosen = pd.read_csv(out3 / "run_chosen.csv")
    assert chosen["model"].tolist() == ["gen", "extra-a", "extra-b"]
    assert chosen["chosen"].sum() == examples["kept"].sum()
    # whose output is kept, by member and reason, against the examples table
    sources = pd.read_csv(out3 / "run_sources.csv")
    assert sources["model"].tolist() == ["gen", "extra-a", "extra-b"]
    assert sources["role"].tolist() == ["generator (stage 2)"] + ["extra model (stage 3)"] * 2
    kept = examples[examples["kept"]]
    by_reason = pd.crosstab(kept["chosen_model"], kept["reason"])
    for reason in ("exact_match", "consensus"):
        expected = by_reason.get(reason, pd.Series(dtype=int))
        assert sources[reason].tolist() == [int(expected.get(m, 0)) for m in sources["model"]]
    assert sources["kept"].tolist() == chosen["chosen"].tolist()
    assert (sources["answered"] == valid).all() and (sources["missing"] == 0).all()
    # the agreement of each member pair, against the per-example pairwise table
    pair_table = pd.read_csv(out3 / "run_pair_agreement.csv")
    assert pair_table["pair"].tolist() == ["gen / extra-a", "gen / extra-b", "extra-a / extra-b"]
    assert (pair_table["examples"] == valid).all()
    per_example = pd.read_csv(out3 / "run_pairwise.csv").groupby("pair")["score"]
    means = per_example.mean()
    assert pair_table["mean"].tolist() == pytest.approx(means[pair_table["pair"]].tolist())
    run_threshold = manifest["config"]["consensus"]["threshold"]
    above = per_example.apply(lambda s: int((s > run_threshold).sum()))
    assert pair_table["above"].tolist() == above[pair_table["pair"]].tolist()
    ensembled = (out / "run" / "alpaca.jsonl").read_text().splitlines()
    assert len(ensembled) == examples["kept"].sum()  # stage 4 re-exported the run
    for name in ("reasons", "pairwise", "agreement_matrix", "chosen", "sources"):
        assert_png(out3 / f"run_{name}.png")
    assert_png(out3 / "run_threshold_curve.png")
    # the recorded part runs next to it, on the recorded answers with gold
    assert pd.read_csv(out3 / "reasons.csv")["examples"].sum() == 252
    assert not pd.read_csv(out3 / "gold.csv").empty
    assert not pd.read_csv(out3 / "selectors.csv").empty
    for name in ("reasons", "pairwise", "agreement_matrix", "chosen", "threshold_curve", "gold"):
        assert_png(out3 / f"{name}.png")


@pytest.mark.slow
def test_notebook_03_on_recorded_outputs(tmp_path):
    from ensemble_instruct_lib.analysis.recorded_ensemble import ensemble_recorded

    out = tmp_path / "03"
    models = ["text-davinci-003", "davinci-self-instruct", "davinci-t0-ft"]
    path = notebooks.run_notebook(
        "03_ensembling",
        out,
        {"run_dir": None, "models": models, "curve_points": 11, "threshold": 0.05},
    )
    nb = executed(path)
    assert outputs_of_type(nb, "image/png") >= 6
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
    sources = pd.read_csv(out / "sources.csv")
    assert sources["model"].tolist() == models
    assert sources["kept"].tolist() == chosen["chosen"].tolist()
    assert sources["exact_match"].sum() == reasons.loc["exact_match", "examples"]
    assert sources["consensus"].sum() == reasons.loc["consensus", "examples"]
    pair_table = pd.read_csv(out / "pair_agreement.csv").set_index("pair")
    by_pair = pd.read_csv(out / "pairwise.csv").groupby("pair")["score"]
    assert (pair_table["examples"] == 252).all()
    assert pair_table["mean"].to_dict() == pytest.approx(by_pair.mean().to_dict())
    share = by_pair.apply(lambda s: (s > 0.05).mean())  # the notebook's threshold
    assert pair_table["share_above"].to_dict() == pytest.approx(share.to_dict())
    # the table is displayed in the executed notebook, not only written
    html = [
        o["data"].get("text/html", "")
        for c in nb.cells
        for o in c.get("outputs", [])
        if "data" in o
    ]
    assert any("share_above" in h for h in html) and any("answered" in h for h in html)
    pairs = pd.read_csv(out / "pairwise.csv")
    assert len(pairs) == 3 * 252 and pairs["score"].between(0, 1).all()
    sel = pd.read_csv(out / "selectors.csv").set_index("selector")
    assert list(sel.index) == ["sum", "best_pair", "mbr:rouge_l", "mbr:chrf", "mbr:token_f1"]
    assert sel.loc["sum", "kept_fraction"] == pytest.approx(ref.kept / 252)
    assert sel.loc["sum", "gold_kept"] == pytest.approx(gold.loc["consensus", "kept_mean"])
    assert sel.loc["mbr:rouge_l", "agree_sum"] == 1.0
    for name in ("reasons", "pairwise", "agreement_matrix", "chosen", "sources", "gold"):
        assert_png(out / f"{name}.png")
    assert_png(out / "threshold_curve.png")
