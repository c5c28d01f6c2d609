"""Tables (`nb/tables.py`) and figures (`nb/plots.py`) from hand-made frames with the pipeline's
columns.

The threshold curve is checked against `select_consensus` run afresh at every threshold, on
hand-made candidates (ties, exact matches, empty outputs) and on real recorded GPT-3 outputs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from ensemble_instruct_lib.method.consensus import select_consensus
from ensemble_instruct_lib.nb import plots, tables

MODELS = ["gen", "x", "y"]


def _stage4_rows(candidate_sets, threshold=0.01, rule="sum", models=MODELS):
    """Records shaped like stage4.stage4_consensus output, split into (ensembled, dropped)."""
    kept, dropped = [], []
    for k, cands in enumerate(candidate_sets):
        res = select_consensus(cands, threshold=threshold, rule=rule)
        rec = {
            "id": f"A-{k:05d}",
            "task_type": "A" if k % 2 else "B",
            "instruction": f"instruction {k}",
            "input": "",
            "output": res.output,
            "reason": res.reason,
            "chosen_index": res.index,
            "chosen_model": None if res.index is None else models[res.index],
            "min_score": res.min_score,
            "scores": res.scores.tolist(),
            "candidates": list(cands),
            "models": list(models),
            "rule": rule,
            "threshold": threshold,
        }
        (kept if res.kept else dropped).append(rec)
    return pd.DataFrame(kept), pd.DataFrame(dropped)


CANDIDATES = [
    ["The cat sat.", "the cat sat", "A dog."],  # exact match (normalized)
    ["red green blue", "red green", "green blue red"],  # consensus
    ["alpha beta", "gamma delta", "epsilon"],  # nothing shared: below threshold
    ["", "one two three", "one two"],  # empty generator output
    ["one two three four", "one two", "three four five"],  # partial overlaps
    ["x y", "x y z", ""],  # an empty extra output
    ["same words here", "same words here", "same words here"],  # all equal
    ["a b c d e", "a b x y z", "q r s t a"],  # low but non-zero agreement
    ["", "", "something"],  # two empties are not an exact match
    ["   ", "hello world", "hello world again"],  # whitespace-only generator output
]


@pytest.fixture()
def frame():
    return tables.ensemble_frame(*_stage4_rows(CANDIDATES))


def test_ensemble_frame_merges_kept_and_dropped(frame):
    assert len(frame) == len(CANDIDATES)
    assert frame["kept"].dtype == bool
    assert list(frame["id"]) == sorted(frame["id"])
    assert set(frame.loc[frame["kept"], "reason"]) <= {"exact_match", "consensus"}
    assert set(frame.loc[~frame["kept"], "reason"]) <= {"below_threshold", "empty"}


@pytest.mark.parametrize("rule", ["sum", "best_pair"])
def test_threshold_curve_matches_select_consensus(rule):
    frame = tables.ensemble_frame(*_stage4_rows(CANDIDATES, rule=rule))
    # a negative threshold keeps every non-empty choice: the only way to reach "empty"
    thresholds = [-1.0, 0.0, 0.01, 0.1, 0.25, 0.4, 0.5, 0.8, 0.99]
    curve = tables.threshold_curve(frame, thresholds, rule)
    for reason in ("exact_match", "consensus", "below_threshold", "empty"):
        assert curve[reason].sum() > 0, f"the cases never reach {reason}"
    for row in curve.itertuples():
        fresh = [
            select_consensus(c, threshold=row.threshold, rule=rule) for c in frame["candidates"]
        ]
        assert row.kept == sum(r.kept for r in fresh), row.threshold
        for reason in ("exact_match", "consensus", "below_threshold", "empty"):
            assert getattr(row, reason) == sum(r.reason == reason for r in fresh), (row, reason)
        assert row.kept_fraction == pytest.approx(row.kept / len(frame))


def test_threshold_curve_on_real_recorded_outputs():
    from ensemble_instruct_lib.analysis.recorded_ensemble import ensemble_recorded

    rec = ensemble_recorded(["text-davinci-003", "davinci-t0-ft", "davinci"])
    frame = pd.DataFrame(
        {
            "scores": [r.scores.tolist() for r in rec.results],
            "candidates": rec.examples[[f"response:{m}" for m in rec.models]].values.tolist(),
        }
    )
    thresholds = [0.0, 0.01, 0.05, 0.2, 0.5]
    curve = tables.threshold_curve(frame, thresholds)
    for row in curve.itertuples():
        fresh = [select_consensus(c, threshold=row.threshold) for c in frame["candidates"]]
        assert row.kept == sum(r.kept for r in fresh)
        assert row.empty == sum(r.reason == "empty" for r in fresh)
    assert curve.loc[curve["threshold"] == 0.01, "kept"].item() == rec.kept


def test_threshold_curve_rejects_unknown_rule(frame):
    with pytest.raises(ValueError, match="rule"):
        tables.threshold_curve(frame, [0.1], "vote")


def test_pairwise_chosen_reasons_agreement(frame):
    pairs = tables.pairwise_scores(frame)
    assert len(pairs) == 3 * len(frame)  # three pairs of three candidates
    assert set(pairs["pair"]) == {"gen / x", "gen / y", "x / y"}
    row = frame.iloc[0]
    assert (
        pairs[(pairs["id"] == row["id"]) & (pairs["pair"] == "gen / x")]["score"].item()
        == (row["scores"][0][1])
    )
    chosen = tables.chosen_counts(frame)
    assert list(chosen["model"]) == MODELS
    assert chosen["chosen"].sum() == frame["kept"].sum()
    reasons = tables.consensus_reasons(frame)
    assert reasons["examples"].sum() == len(frame)
    assert reasons.loc[reasons["kept"], "examples"].sum() == frame["kept"].sum()
    agreement = tables.mean_agreement(frame)
    assert agreement.shape == (3, 3) and np.isnan(np.diag(agreement.to_numpy())).all()
    expected = np.mean([s[0][2] for s in frame["scores"]])
    assert agreement.loc["gen", "y"] == pytest.approx(expected)


def _instructions():
    return pd.DataFrame(
        {
            "id": ["A-00000", None, None, "B-00000", None, None],
            "task_type": ["A", "A", "A", "B", "B", "B"],
            "instruction": ["Sort the list of numbers.", "Draw a map.", "Hi", "Name a fruit.",
                            "Name a fruit please.", "Say something nice."],
            "accepted": [True, False, False, True, False, False],
            "reason": [None, "keyword:draw", "too_short", None, "not_novel", "target_reached"],
            "max_score": [0.3, None, None, 0.4, 0.8, None],
            "most_similar": [[["Sort numbers.", 0.3]], [], [], [["Name a color.", 0.4]], [], []],
            "mean_similarity": [0.1, None, None, 0.2, None, None],
        }
    )  # fmt: skip


def _instances():
    return pd.DataFrame(
        {
            "id": ["A-00000", "B-00000", "A-00001"],
            "task_type": ["A", "B", "A"],
            "instruction": ["Sort the list of numbers.", "Name a fruit.", "Add two numbers."],
            "valid": [True, True, False],
            "reason": ["ok", "ok", "no_input"],
            "input": ["3 1 2", "", None],
            "output": ["1 2 3", "Apple.", None],
        }
    )


def _outputs():
    return pd.DataFrame(
        {"id": ["A-00000", "B-00000", "A-00000"], "model": ["x", "x", "y"], "output": ["1 2 3"] * 3}
    )


def test_stage_counts_and_reasons():
    counts = tables.stage_counts(_instructions(), _instances(), _outputs())
    assert counts.loc["1 candidate instructions", "total"] == 6
    assert counts.loc["1 accepted instructions", "A"] == 1
    assert counts.loc["2 valid instances"].to_dict() == {"A": 1, "B": 1, "total": 2}
    assert counts.loc["3 outputs x", "total"] == 2 and counts.loc["3 outputs y", "B"] == 0
    rej = tables.reason_counts(_instructions(), ok_column="accepted")
    assert "target_reached" not in rej.index  # never judged: not a rejection
    assert rej.loc["keyword:draw", "A"] == 1 and rej.loc["not_novel", "B"] == 1
    assert rej["total"].sum() == 3
    inv = tables.reason_counts(_instances(), ok_column="valid")
    assert inv.loc["no_input", "total"] == 1


def test_lengths_and_sample():
    lengths = tables.text_lengths(_instructions(), _instances())
    assert set(lengths["field"]) == {"instruction", "input", "output"}
    assert (lengths["field"] == "instruction").sum() == 2  # accepted only
    assert lengths.query("field == 'input'")["words"].tolist() == [3]  # type A only
    summary = tables.length_summary(lengths)
    assert {"count", "mean", "median", "max"} <= set(summary.columns)
    sample = tables.sample_rows(_instances(), n=5, seed=1)
    assert len(sample) == 2 and sample["id"].is_unique  # only valid instances
    assert tables.sample_rows(_instances(), n=5, seed=1).equals(sample)


def _assert_figure(fig, tmp_path, name):
    assert isinstance(fig, Figure)
    path = plots.save_figure(fig, tmp_path, name)
    assert path.exists() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_figure_renders(frame, tmp_path):
    pairs = tables.pairwise_scores(frame)
    figs = {
        "reasons": plots.plot_consensus_reasons(tables.consensus_reasons(frame)),
        "pairwise": plots.plot_pairwise(pairs, 0.01),
        "agreement": plots.plot_agreement_matrix(tables.mean_agreement(frame)),
        "chosen": plots.plot_chosen(tables.chosen_counts(frame)),
        "curve": plots.plot_threshold_curve(tables.threshold_curve(frame, [0, 0.1, 0.5]), 0.01),
        "novelty": plots.plot_novelty(_instructions(), 0.7),
        "rejections": plots.plot_reason_bars(
            tables.reason_counts(_instructions(), ok_column="accepted"), "stage 1"
        ),
        "lengths": plots.plot_lengths(tables.text_lengths(_instructions(), _instances())),
        "prompt_lengths": plots.plot_prompt_lengths(
            pd.DataFrame(
                {
                    "stage": ["instruction", "instance"] * 2,
                    "task_type": ["A", "A", "B", "B"],
                    "tokens": [300, 900, 150, 700],
                    "unit": ["words"] * 4,
                }
            )  # fmt: skip
        ),
        "gold": plots.plot_gold_summary(
            pd.DataFrame(
                {
                    "system": ["consensus", "gen", "random", "oracle"],
                    "kept_mean": [40.0, 38.0, 36.0, 45.0],
                    "all_mean": [np.nan, 36.0, 35.0, 44.0],
                }
            )  # fmt: skip
        ),
        "scores": plots.plot_benchmark_scores(
            pd.DataFrame(
                {
                    "system": ["ens", "single", "davinci"],
                    "kind": ["tuned", "tuned", "recorded"],
                    "benchmark": ["user_oriented"] * 3,
                    "rougeL": [30.0, 25.0, 3.0],
                }
            )  # fmt: skip
        ),
        "categories": plots.plot_category_scores(
            pd.DataFrame(
                {
                    "system": ["ens", "single"] * 2,
                    "kind": ["tuned"] * 4,
                    "benchmark": ["user_oriented"] * 4,
                    "category": ["Gmail", "Gmail", "Yelp", "Yelp"],
                    "n": [3, 3, 2, 2],
                    "rougeL": [20.0, 10.0, 30.0, 5.0],
                }
            )  # fmt: skip
        ),
        "loss": plots.plot_loss_curves(
            pd.DataFrame(
                {
                    "system": ["ens"] * 3,
                    "step": [1, 2, 2],
                    "loss": [3.0, 2.0, np.nan],
                    "eval_loss": [np.nan, np.nan, 2.5],
                }
            )  # fmt: skip
        ),
    }
    for name, fig in figs.items():
        _assert_figure(fig, tmp_path, name)


def test_figures_accept_empty_frames(tmp_path):
    empty = tables.ensemble_frame(pd.DataFrame(), pd.DataFrame())
    figs = [
        plots.plot_consensus_reasons(tables.consensus_reasons(empty)),
        plots.plot_pairwise(tables.pairwise_scores(empty)),
        plots.plot_agreement_matrix(tables.mean_agreement(empty)),
        plots.plot_chosen(tables.chosen_counts(empty)),
        plots.plot_threshold_curve(tables.threshold_curve(empty, [0.1])),
        plots.plot_reason_bars(tables.reason_counts(pd.DataFrame(), ok_column="accepted"), "t"),
        plots.plot_novelty(pd.DataFrame(columns=["task_type", "max_score"])),
        plots.plot_lengths(tables.text_lengths(pd.DataFrame(), pd.DataFrame())),
        plots.plot_gold_summary(pd.DataFrame(columns=["system", "kept_mean", "all_mean"])),
        plots.plot_benchmark_scores(pd.DataFrame()),
        plots.plot_category_scores(pd.DataFrame()),
        plots.plot_loss_curves(pd.DataFrame()),
    ]
    for k, fig in enumerate(figs):
        _assert_figure(fig, tmp_path, f"empty{k}")
    assert tables.stage_counts(pd.DataFrame(), pd.DataFrame(), pd.DataFrame()).empty


def test_save_table_roundtrip(tmp_path):
    df = pd.DataFrame({"a": [1, 2], "b": ["x", "<script>"]})
    path = tables.save_table(df, tmp_path / "sub", "t")
    assert path.name == "t.csv"
    assert pd.read_csv(path).equals(df)
