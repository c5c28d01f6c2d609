"""The ablations on the real recorded outputs, checked against direct `select_consensus` and
Rouge-L computations and hand-worked cases; run metrics on fake pipeline runs; notebook 04."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ensemble_instruct_lib.analysis import grid_summary
from ensemble_instruct_lib.analysis import recorded_grids as ab
from ensemble_instruct_lib.analysis import recorded_matrix as rm
from ensemble_instruct_lib.analysis import run_grids as mab
from ensemble_instruct_lib.analysis import selectors_on_recorded as sor
from ensemble_instruct_lib.analysis.recorded_ensemble import DEFAULT_MODELS, ensemble_recorded
from ensemble_instruct_lib.data.jsonl import read_jsonl
from ensemble_instruct_lib.data.public import PREDICTION_MODELS
from ensemble_instruct_lib.errors import ConfigError
from ensemble_instruct_lib.method.consensus import REASONS, RULES, select_consensus
from ensemble_instruct_lib.method.rouge import rouge_l
from ensemble_instruct_lib.nb.steps import ablations as steps_ab
from ensemble_instruct_lib.runs.config import load_config
from ensemble_instruct_lib.runs.pipeline import run
from ensemble_instruct_lib.testing.fake import fake_backends

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def mat():
    return rm.recorded_matrix()


def _cands(mat, e, names):
    return [mat.responses[e][mat.models.index(m)] for m in names]


def test_matrix_matches_direct_computation(mat):
    assert mat.models == PREDICTION_MODELS and mat.examples == 252
    assert mat.scores.shape == (252, 8, 8) and mat.gold.shape == (252, 8)
    rng = random.Random(0)
    for e in rng.sample(range(252), 5):
        res = select_consensus(_cands(mat, e, mat.models))
        np.testing.assert_array_equal(mat.scores[e], res.scores)
        i, j = rng.sample(range(8), 2)
        gold = rouge_l(mat.responses[e][i], mat.targets[e], stem=True) * 100
        assert mat.gold[e, i] == gold
        assert mat.equal[e, i, j] == (
            bool(mat.responses[e][i].strip())
            and select_consensus([mat.responses[e][i], mat.responses[e][j]]).reason == "exact_match"
        )
    assert rm.recorded_matrix() is mat  # cached


@pytest.mark.slow
def test_decisions_equal_select_consensus_on_every_three_member_list(mat):
    """All 56 three-member subsets (fixed order) x 252 examples, sum rule, and a sample of
    other sizes, orders, rules and thresholds."""
    cases = [(o, 0.01, "sum") for o in ab.member_orders(mat.models, 3, ordering="fixed")]
    rng = random.Random(1)
    for size in (2, 4, 5, 8):
        orders = ab.member_orders(mat.models, size, ordering="all")
        cases += [(o, t, r) for o in rng.sample(orders, 3) for t in (0.0, 0.2) for r in RULES]
    for names, threshold, rule in cases:
        idx, reason = rm.consensus_indices(mat, mat.index(names), threshold, rule)
        for e in range(mat.examples):
            res = select_consensus(_cands(mat, e, names), threshold, rule)
            assert idx[e] == (-1 if res.index is None else res.index), (names, e)
            assert REASONS[reason[e]] == res.reason, (names, e)


def test_default_trio_reproduces_ensemble_recorded(mat):
    rec = ensemble_recorded(DEFAULT_MODELS)
    rows = ab.threshold_sweep([0.01], model_sets=[DEFAULT_MODELS])
    (row,) = rows.to_dict("records")
    summary = rec.summary.set_index("system")
    assert row["kept"] == rec.kept == 225
    assert row["consensus_kept"] == pytest.approx(summary.loc["consensus", "kept_mean"], abs=1e-9)
    assert row["generator_kept"] == pytest.approx(
        summary.loc["text-davinci-003", "kept_mean"], abs=1e-9
    )
    members = summary.loc[list(DEFAULT_MODELS), "kept_mean"].mean()
    assert row["members_kept"] == pytest.approx(members, abs=1e-9)
    assert row["oracle_kept"] == pytest.approx(summary.loc["oracle", "kept_mean"], abs=1e-9)
    assert row["oracle_all"] == pytest.approx(summary.loc["oracle", "all_mean"], abs=1e-9)
    assert row["exact_fraction"] == pytest.approx(37 / 252)


def test_member_orders_counts_and_sampling():
    models = PREDICTION_MODELS
    assert len(ab.member_orders(models, 3, ordering="fixed")) == 56
    gen = ab.member_orders(models, 3)
    assert len(gen) == 56 * 3 and len(set(gen)) == 168
    assert gen[:3] == [
        ("davinci", "text-davinci-001", "text-davinci-002"),
        ("text-davinci-001", "davinci", "text-davinci-002"),
        ("text-davinci-002", "davinci", "text-davinci-001"),
    ]
    assert len(ab.member_orders(models, 4, ordering="all")) == 70 * 24
    a = ab.member_orders(models, 4, ordering="fixed", max_subsets=5, seed=0)
    assert len(a) == 5 and a == ab.member_orders(models, 4, ordering="fixed", max_subsets=5)
    assert a != ab.member_orders(models, 4, ordering="fixed", max_subsets=5, seed=1)
    assert len(ab.member_orders(models, 8, ordering="fixed", max_subsets=5)) == 1
    with pytest.raises(ValueError):
        ab.member_orders(models, 9)
    with pytest.raises(ValueError):
        ab.member_orders(models, 3, ordering="random")


def test_ensemble_size_rows_and_two_member_tie(mat):
    rows = ab.ensemble_size([2, 3, 8], max_subsets=4, seeds=[0, 1])
    counts = rows.groupby(["seed", "size"]).size().to_dict()
    assert counts == {(0, 2): 8, (0, 3): 12, (0, 8): 8, (1, 2): 8, (1, 3): 12, (1, 8): 8}
    # two members: F is symmetric, the sums tie, the sum rule keeps the generator's output
    two = rows[rows["size"] == 2]
    assert (two["consensus_kept"] == two["generator_kept"]).all()
    # one row, recomputed directly
    r = rows[rows["size"] == 3].iloc[0]
    names = r["order"].split("+")
    kept, gold, gen = 0, [], []
    for e in range(mat.examples):
        res = select_consensus(_cands(mat, e, names))
        if res.kept:
            kept += 1
            gold.append(rouge_l(res.output, mat.targets[e], stem=True) * 100)
            gen.append(rouge_l(_cands(mat, e, names)[0], mat.targets[e], stem=True) * 100)
    assert r["kept"] == kept and r["kept_fraction"] == kept / 252
    assert r["consensus_kept"] == pytest.approx(np.mean(gold), abs=1e-9)
    assert r["gain_vs_generator"] == pytest.approx(np.mean(gold) - np.mean(gen), abs=1e-9)
    assert r["members"] == "+".join(sorted(names, key=PREDICTION_MODELS.index))


def test_threshold_sweep_is_monotone_and_direct(mat):
    thresholds = [0.0, 0.05, 0.1, 0.3, 0.5]
    rows = ab.threshold_sweep(thresholds, size=3, max_subsets=6, ordering="fixed")
    assert len(rows) == 6 * 5
    for _, g in rows.groupby("order"):
        kept = g.sort_values("threshold")["kept"].tolist()
        assert kept == sorted(kept, reverse=True)
    one = rows[rows["order"] == rows["order"].iloc[0]].set_index("threshold")
    names = one["order"].iloc[0].split("+")
    for t in (0.0, 0.3):
        direct = sum(select_consensus(_cands(mat, e, names), t).kept for e in range(252))
        assert one.loc[t, "kept"] == direct


def test_selection_rules_direct(mat):
    rows = ab.selection_rules(size=3, ordering="fixed", seeds=[0, 1])
    assert set(rows["rule"]) == {"sum", "best_pair", "random", "first"}
    assert len(rows) == 2 * 56 * 4
    for _, g in rows.groupby(["seed", "order"]):  # the same examples for every rule
        assert g["eligible_fraction"].nunique() == 1
    order = rows["order"].iloc[0]
    r = rows[(rows["seed"] == 0) & (rows["order"] == order)].set_index("rule")
    names = order.split("+")
    eligible = [
        e for e in range(252) if select_consensus(_cands(mat, e, names)).reason != "below_threshold"
    ]
    first = np.mean([mat.gold[e, mat.models.index(names[0])] for e in eligible])
    assert r.loc["first", "gold_eligible"] == pytest.approx(first, abs=1e-9)
    sums = [select_consensus(_cands(mat, e, names)) for e in eligible]
    direct = np.mean(
        [
            rouge_l(s.output or "", mat.targets[e], stem=True) * 100
            for s, e in zip(sums, eligible, strict=True)
        ]
    )
    assert r.loc["sum", "gold_eligible"] == pytest.approx(direct, abs=1e-9)
    rand = rows[rows["rule"] == "random"].set_index(["seed", "order"])["gold_eligible"]
    assert rand.loc[0].tolist() != rand.loc[1].tolist()  # seeded draws differ
    assert len({ab.hash_name(m) for m in PREDICTION_MODELS}) == 8  # distinct random streams
    det = rows[rows["rule"] == "sum"].set_index(["seed", "order"])["gold_eligible"]
    assert det.loc[0].tolist() == det.loc[1].tolist()


def test_tuned_vs_vanilla_roles():
    assert ab.vanilla_role(("davinci", "a", "b")) == "vanilla_generator"
    assert ab.vanilla_role(("a", "davinci", "b")) == "vanilla_extra"
    assert ab.vanilla_role(("a", "b")) == "tuned_only"
    assert ab.vanilla_role(("a", "b"), vanilla=("a", "b")) == "vanilla_generator_and_extra"
    rows = ab.tuned_vs_vanilla()
    assert rows["role"].value_counts().to_dict() == {
        "tuned_only": 35 * 3,
        "vanilla_extra": 21 * 2,
        "vanilla_generator": 21,
    }
    # the paper's finding holds on these outputs: a vanilla extra member shrinks the gain
    gain = rows.groupby("role")["gain_vs_generator"].mean()
    assert gain["tuned_only"] > gain["vanilla_extra"]


def test_summarize_by_hand():
    rows = pd.DataFrame(
        {"g": ["a", "a", "a", "b"], "seed": [0, 0, 1, 0], "m": [1.0, 3.0, 5.0, 2.0]}
    )
    s = grid_summary.summarize(rows, ["g"], ["m"]).set_index("g")
    assert s.loc["a", "mean"] == 3.0 and s.loc["a", "std"] == pytest.approx(2.0)
    assert s.loc["a", "sem"] == pytest.approx(2.0 / np.sqrt(3)) and s.loc["a", "n"] == 3
    assert s.loc["b", "std"] == 0.0 and s.loc["b", "n"] == 1
    per_seed = grid_summary.summarize(rows, ["g"], ["m"], over="seed").set_index("g")
    assert per_seed.loc["a", "mean"] == 3.5 and per_seed.loc["a", "n"] == 2  # seeds: 2.0, 5.0
    assert grid_summary.summarize(rows, ["g"], ["missing"]).empty
    wide = grid_summary.format_summary(grid_summary.summarize(rows, ["g"], ["m"]), ["g"])
    assert wide.to_dict("records") == [{"g": "a", "m": "3 ± 2"}, {"g": "b", "m": "2 ± 0"}]


def test_ablations_config_validation(tmp_path):
    cfg = steps_ab.AblationsConfig(out_dir=str(tmp_path))
    assert cfg.sizes == list(range(2, 9)) and cfg.overrides == {}
    for bad in (
        {"models": ["davinci", "gpt-5"]},
        {"sizes": [1, 3]},
        {"ordering": "random"},
        {"rules": ["sum", "majority"]},
        {"threshold": 1.5},
        {"pipeline_config": "configs/nope.yaml"},
        {"methods": ["ensemble_instruct", "magic"]},
        {"trio": ["davinci"]},
    ):
        with pytest.raises(ConfigError):
            steps_ab.AblationsConfig(out_dir=str(tmp_path), **bad)


# ------------------------------------------------------------------------------------------
# pipeline run dirs


BASE = {
    "name": "t",
    "generator": {"kind": "scripted", "model": "gen"},
    "extra_models": [{"kind": "scripted", "model": "x1"}, {"kind": "scripted", "model": "x2"}],
    "num_instructions": 4,
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for method in ("ensemble_instruct", "self_instruct", "alpaca"):
        cfg = load_config({**BASE, "method": method})
        run(cfg, root / method, backends=fake_backends(cfg), progress=False)
        out[method] = root / method
    return out


def test_run_metrics_against_the_files(runs):
    for method, path in runs.items():
        m = mab.run_metrics(path)
        recs = [r for p in sorted(Path(path).glob("stage1_*.jsonl")) for r in read_jsonl(p)]
        judged = [r for r in recs if r["reason"] != "target_reached"]
        acc = [r for r in judged if r["accepted"]]
        inst = read_jsonl(Path(path) / "stage2_instances.jsonl")
        valid = [r for r in inst if r["valid"]]
        assert m["method"] == method and m["stage1_accepted"] == len(acc) == 8
        assert m["stage1_acceptance"] == pytest.approx(len(acc) / len(judged))
        assert m["stage1_rejected_novelty"] == pytest.approx(
            sum(r["reason"] == "not_novel" for r in judged) / len(judged)
        )
        total = m["stage1_acceptance"] + m["stage1_rejected_parse"]
        total += m["stage1_rejected_filters"] + m["stage1_rejected_novelty"]
        assert total == pytest.approx(1.0)
        scores = [r["max_score"] for r in judged if r["max_score"] is not None]
        assert m["novelty_mean"] == pytest.approx(np.mean(scores))
        assert m["stage2_valid"] == len(valid)
        kept = len(read_jsonl(Path(path) / "ensembled.jsonl"))
        assert m["stage4_kept_rate"] == pytest.approx(kept / len(valid))
        assert m["instruction_words"] == pytest.approx(
            np.mean([len(r["instruction"].split()) for r in acc])
        )
    ei, si, al = (
        mab.run_metrics(runs[k]) for k in ("ensemble_instruct", "self_instruct", "alpaca")
    )
    # generator calls: one per stage-1 prompt and per stage-2 call (Self-Instruct asks twice;
    # Alpaca makes none in stage 2)
    n_si = len(read_jsonl(Path(runs["self_instruct"]) / "stage2_instances.jsonl"))
    prompts_si = len(
        {
            r["candidate"].rsplit("-c", 1)[0]
            for r in read_jsonl(Path(runs["self_instruct"]) / "stage1_instructions_all.jsonl")
        }
    )
    assert si["generator_calls"] == prompts_si + 2 * n_si
    assert al["generator_calls"] == len(
        {
            r["candidate"].rsplit("-c", 1)[0]
            for r in read_jsonl(Path(runs["alpaca"]) / "stage1_instructions_all.jsonl")
        }
    )
    assert ei["generator_calls"] > 0


def test_method_comparison_novelty_and_verb_nouns(runs):
    table = mab.method_comparison(runs)
    assert table["run"].tolist() == list(runs) and table["method"].tolist() == list(runs)
    nov = mab.novelty_frame(runs)
    assert set(nov["method"]) == set(runs) and nov["max_score"].between(0, 1).all()
    vn = mab.verb_noun_runs(runs)
    assert (vn.groupby("method").size() == 8).all()
    tops = mab.verb_noun_tops(vn, top_verbs=3, top_nouns=2)
    assert set(tops) == set(runs) and all(len(t) <= 6 for t in tops.values())


def test_demo_count_sweep_changes_the_prompts(tmp_path):
    table = mab.demo_count_sweep(
        BASE, tmp_path, seed_demos=[3, 6], generated_demos=[0, 1], backends=fake_backends
    )
    assert table["status"].eq("done").all() and len(table) == 4
    assert table[["seed_demos", "generated_demos"]].values.tolist() == [
        [3, 0],
        [3, 1],
        [6, 0],
        [6, 1],
    ]
    for row in table.itertuples():
        recs = read_jsonl(Path(row.out_dir) / "stage1_instructions_A.jsonl")
        # seeds fill in while fewer generated ones exist: each prompt has seed + generated demos
        assert {len(r["demo_seed_ids"]) + r["num_generated_demos"] for r in recs} == {
            row.seed_demos + row.generated_demos
        }
        assert not (Path(row.out_dir) / "stage2_instances.jsonl").exists()  # stage 1 only


@pytest.mark.slow
def test_notebook_04_tiny_grid(tmp_path):
    from ensemble_instruct_lib.runs.notebooks import run_notebook

    cfg_path = tmp_path / "fake.yaml"
    cfg_path.write_text(json.dumps({**BASE, "num_instructions": 3}))
    out = tmp_path / "nb"
    run_notebook(
        "04_ablations",
        out,
        {
            "sizes": [2, 3],
            "max_subsets": 3,
            "thresholds": [0.0, 0.2],
            "seeds": [0, 1],
            "pipeline_config": str(cfg_path),
            "fake_lms": True,
            "method_seeds": [0, 1],
            "seed_demos": [4],
            "generated_demos": [0, 2],
            "selectors": ["sum", "best_pair", "mbr:token_f1"],
        },
    )
    assert (out / "04_ablations.ipynb").exists()
    for name in (
        "size",
        "threshold",
        "rules",
        "vanilla",
        "methods",
        "method_novelty",
        "verb_noun",
        "demos",
        "selectors",
    ):
        assert (out / f"{name}.png").read_bytes()[:8] == PNG, name
    sel = pd.read_csv(out / "selector_summary.csv")
    assert list(dict.fromkeys(sel["selector"])) == ["sum", "best_pair", "mbr:token_f1"]
    assert (sel[sel["metric"] == "gold_kept"]["n"] == 2 * 3 * 3).all()  # seeds x orders
    size = pd.read_csv(out / "size_summary.csv")
    assert sorted(set(size["size"])) == [2, 3] and set(size["metric"]) == set(ab.SIZE_METRICS)
    rows = pd.read_csv(out / "size_rows.csv")
    assert len(rows) == 2 * (3 * 2 + 3 * 3)  # seeds x (subsets x generators) per size
    assert sorted(set(pd.read_csv(out / "threshold_rows.csv")["threshold"])) == [0.0, 0.2]
    methods = pd.read_csv(out / "method_summary.csv")
    assert set(methods["method"]) == {"ensemble_instruct", "self_instruct", "alpaca"}
    assert (methods["n"] == 2).all()  # two seeds per method
    assert pd.read_csv(out / "methods" / "sweep.csv")["status"].eq("done").all()
    demos = pd.read_csv(out / "demo_summary.csv")
    assert sorted(set(demos["generated_demos"])) == [0, 2]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"size2_kept_fraction", "size3_gain_vs_generator", "rule_sum_gold_eligible"} <= set(
        metrics
    )
    assert metrics["size2_gain_vs_generator"] == 0.0
    assert 0 < metrics["selector_sum_gold_kept"] < 100
    assert {"selector_best_pair_kept_fraction", "selector_mbr:token_f1_gold_kept"} <= set(metrics)


# ------------------------------------------------------------------------------------------
# the selector grid


def test_selector_grid_equals_select_per_example(mat):
    from ensemble_instruct_lib.method.selectors import select

    def judge(instructions, inputs, responses):  # longer answers score higher; empty: none
        return [float(len(r)) if r.strip() else None for r in responses]

    names = ("text-davinci-003", "davinci", "text-davinci-001")
    rows = sor.selector_grid(
        [*sor.SELECTOR_GRID, "judge"], model_sets=[names], judge=judge, judge_name="length"
    ).set_index("selector")
    assert list(rows.index) == [*sor.SELECTOR_GRID, "judge:length"]
    for entry in rows.index:
        name, _, utility = entry.partition(":")
        kept, gold = 0, []
        for e in range(mat.examples):
            cands = _cands(mat, e, names)
            if name == "judge":
                s = select(cands, "judge", 0.01, candidate_scores=judge([], [], cands))
            else:
                s = select(cands, name, 0.01, utility=utility or "rouge_l")
            if s.kept:
                kept += 1
                gold.append(rouge_l(s.output, mat.targets[e], stem=True) * 100)
        r = rows.loc[entry]
        assert r["kept_fraction"] == kept / 252, entry
        assert r["gold_kept"] == pytest.approx(np.mean(gold), abs=1e-9), entry
        assert r["gold_all"] == pytest.approx(np.sum(gold) / 252, abs=1e-9), entry
    assert rows.loc["mbr:rouge_l", "agree_sum"] == 1.0  # MBR with Rouge-L is the sum rule
    assert rows.loc["sum", "agree_best_pair"] == rows.loc["best_pair", "agree_sum"]
    with pytest.raises(ValueError, match="judge function"):
        sor.selector_grid(["judge"])
    with pytest.raises(ValueError, match="mbr:<utility>"):
        sor.selector_grid(["mbr"])
    with pytest.raises(ConfigError, match="selectors"):
        steps_ab.AblationsConfig(out_dir="x", selectors=["mbr:bleu"])
