"""Which member each kept output came from (`tables.kept_sources`) and the agreement of every
member pair (`tables.pair_agreement`, `mean_agreement`, the heatmap), on hand-made stage-4
records whose answers are worked out by hand below.

The members are ``gen`` (the generator's stage-2 output) and the extra models ``a`` and ``b``.
Five records, in id order:

- r0, dropped, too_few_candidates: ``a`` and ``b`` failed, only ``gen`` is left (1x1 matrix).
- r1, kept by consensus on ``gen``: ``b`` failed (2x2 matrix over gen, a; gen/a 0.6).
- r2, kept by consensus on ``a``: 3x3, gen/a 0.5, gen/b 0.2, a/b 0.4 (sums 0.7, 0.9, 0.6).
- r3, kept on an exact match, the copy stored being ``gen``'s: gen/a 1.0, gen/b 0.1, a/b 0.1.
- r4, dropped below the threshold: gen/a 0.0, gen/b 0.3, a/b 0.05.

The first record lacks two members and the second one, so nothing may take the member list
from the first record or stack the matrices by position.

By pair (threshold 0.3; a score equal to it is not above it):
gen/a: r1 0.6, r2 0.5, r3 1.0, r4 0.0 -> 4 examples, mean 0.525, above 3, share 0.75;
gen/b: r2 0.2, r3 0.1, r4 0.3 -> 3, mean 0.2, above 0, share 0;
a/b: r2 0.4, r3 0.1, r4 0.05 -> 3, mean 0.55/3, above 1, share 1/3.

Kept (3: r1, r2, r3): gen exact 1 + consensus 1 = 2 (2/3), answered 5, missing 0; a consensus
1 (1/3), answered 4 (r1-r4), missing 1 (r0); b nothing, answered 3 (r2-r4), missing 2 (r0, r1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ensemble_instruct_lib.nb import plots, tables
from ensemble_instruct_lib.nb.steps import ensembling as steps

MEMBERS = ["gen", "a", "b"]


def _matrix(ga: float, gb: float, ab: float) -> list[list[float]]:
    return [[1.0, ga, gb], [ga, 1.0, ab], [gb, ab, 1.0]]


def _record(k, reason, chosen, models, scores, missing=(), min_score=None):
    return {
        "id": f"A-{k:05d}",
        "task_type": "A",
        "instruction": f"instruction {k}",
        "input": "",
        "output": None if chosen is None else f"output of {chosen}",
        "reason": reason,
        "chosen_index": None if chosen is None else models.index(chosen),
        "chosen_model": chosen,
        "min_score": min_score,
        "scores": scores,
        "candidates": [f"candidate {m}" for m in models],
        "models": list(models),
        "rule": "sum",
        "threshold": 0.01,
        "missing_models": list(missing),
    }


@pytest.fixture()
def frame():
    kept = [
        _record(1, "consensus", "gen", ["gen", "a"], [[1.0, 0.6], [0.6, 1.0]], ["b"], 0.6),
        _record(2, "consensus", "a", MEMBERS, _matrix(0.5, 0.2, 0.4), min_score=0.2),
        _record(3, "exact_match", "gen", MEMBERS, _matrix(1.0, 0.1, 0.1), min_score=0.1),
    ]
    dropped = [
        _record(0, "too_few_candidates", None, ["gen"], [[1.0]], ["a", "b"]),
        _record(4, "below_threshold", None, MEMBERS, _matrix(0.0, 0.3, 0.05), min_score=0.0),
    ]
    # dropped first: ensemble_frame must put them back in id order (r0, the one-member record,
    # first)
    out = tables.ensemble_frame(pd.DataFrame(kept), pd.DataFrame(dropped))
    assert out["id"].tolist() == [f"A-{k:05d}" for k in range(5)]
    return out


def test_kept_sources_by_member_and_reason(frame):
    src = tables.kept_sources(frame)
    assert src.columns.tolist() == [
        "model",
        "role",
        "exact_match",
        "consensus",
        "kept",
        "share",
        "answered",
        "missing",
    ]
    assert src["model"].tolist() == MEMBERS
    assert src["role"].tolist() == [tables.GENERATOR_ROLE, tables.EXTRA_ROLE, tables.EXTRA_ROLE]
    assert src["exact_match"].tolist() == [1, 0, 0]
    assert src["consensus"].tolist() == [1, 1, 0]
    assert src["kept"].tolist() == [2, 1, 0]
    assert src["share"].tolist() == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert src["answered"].tolist() == [5, 4, 3]
    assert src["missing"].tolist() == [0, 1, 2]


def test_kept_sources_member_order_and_roles(frame):
    src = tables.kept_sources(frame, ["gen", "b", "a"], generator_first=False)
    assert src["model"].tolist() == ["gen", "b", "a"]
    assert set(src["role"]) == {tables.EXTRA_ROLE}
    assert src["kept"].tolist() == [2, 0, 1]
    # a member named but never seen in a record still gets its (zero) row
    src = tables.kept_sources(frame, [*MEMBERS, "c"])
    assert src.set_index("model").loc["c", ["kept", "answered", "missing"]].tolist() == [0, 0, 0]


def test_chosen_counts_does_not_take_members_from_the_first_record(frame):
    chosen = tables.chosen_counts(frame)
    assert chosen["model"].tolist() == MEMBERS
    assert chosen["chosen"].tolist() == [2, 1, 0]


def test_pair_agreement_by_hand(frame):
    pairs = tables.pair_agreement(frame, 0.3)
    assert pairs.columns.tolist() == tables.PAIR_COLUMNS
    assert pairs["pair"].tolist() == ["gen / a", "gen / b", "a / b"]
    assert pairs["examples"].tolist() == [4, 3, 3]
    assert pairs["mean"].tolist() == pytest.approx([2.1 / 4, 0.6 / 3, 0.55 / 3])
    assert pairs["above"].tolist() == [3, 0, 1]  # gen/b's 0.3 is at the threshold, not above
    assert pairs["share_above"].tolist() == pytest.approx([0.75, 0.0, 1 / 3])
    # lower the threshold below 0.3: gen/b's r4 counts
    assert tables.pair_agreement(frame, 0.29)["above"].tolist() == [3, 1, 1]


def test_pair_agreement_reads_cells_by_member_name():
    # an asymmetric matrix over (b, gen): cell [0][1] is b against gen, stored as gen / b
    rec = _record(0, "consensus", "b", ["b", "gen"], [[1.0, 0.7], [0.9, 1.0]])
    frame = tables.ensemble_frame(pd.DataFrame([rec]), pd.DataFrame())
    pairs = tables.pair_agreement(frame, 0.8, ["gen", "b"])
    assert pairs["pair"].tolist() == ["gen / b"]
    assert pairs["mean"].item() == pytest.approx(0.9)
    assert pairs["above"].item() == 1


def test_mean_agreement_with_missing_members(frame):
    agreement = tables.mean_agreement(frame)
    assert agreement.index.tolist() == MEMBERS and agreement.columns.tolist() == MEMBERS
    m = agreement.to_numpy()
    assert np.isnan(np.diag(m)).all()
    np.testing.assert_allclose(m, m.T)
    assert agreement.loc["gen", "a"] == pytest.approx(0.525)
    assert agreement.loc["b", "gen"] == pytest.approx(0.2)
    assert agreement.loc["a", "b"] == pytest.approx(0.55 / 3)


def test_pair_matrix_and_heatmap_are_labelled_by_member(frame):
    pairs = tables.pair_agreement(frame, 0.3)
    mean = tables.pair_matrix(pairs)
    pd.testing.assert_frame_equal(mean, tables.mean_agreement(frame))
    share = tables.pair_matrix(pairs, "share_above")
    assert share.loc["b", "a"] == pytest.approx(1 / 3) and np.isnan(share.loc["a", "a"])
    (ax, _colorbar) = plots.plot_pair_agreement(pairs, 0.3).axes
    (image,) = ax.images
    np.testing.assert_allclose(np.asarray(image.get_array().filled(np.nan)), mean.to_numpy())
    assert [t.get_text() for t in ax.get_xticklabels()] == MEMBERS
    assert [t.get_text() for t in ax.get_yticklabels()] == MEMBERS
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 6
    assert texts.count("0.20\n0%") == 2 and texts.count("0.18\n33%") == 2
    assert "0.3" in ax.get_title()


def test_kept_sources_bars(frame):
    src = tables.kept_sources(frame)
    (ax,) = plots.plot_kept_sources(src).axes
    exact, consensus = ax.containers  # one stacked series per kept reason, members bottom-up
    assert [b.get_width() for b in exact] == [0, 0, 1]
    assert [b.get_width() for b in consensus] == [0, 1, 1]
    assert [b.get_x() for b in consensus] == [0, 0, 1]  # stacked on the exact matches
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["b\nextra", "a\nextra", "gen\ngenerator"]
    assert sorted(t.get_text() for t in ax.texts) == [" 0%", " 33%", " 67%"]


def test_empty_frame():
    empty = tables.ensemble_frame(pd.DataFrame(), pd.DataFrame())
    assert tables.kept_sources(empty).empty
    assert tables.pair_agreement(empty, 0.01).empty
    for fig in (
        plots.plot_kept_sources(tables.kept_sources(empty)),
        plots.plot_pair_agreement(tables.pair_agreement(empty, 0.01)),
    ):
        assert "no " in fig.axes[0].texts[0].get_text()


def test_study_steps_pass_the_members_and_threshold(frame):
    study = steps.EnsembleStudy(frame, ["gen", "a", "b"], 0.3, "sum", "hand-made")
    assert steps.kept_sources(study)["role"].iloc[0] == tables.GENERATOR_ROLE
    assert steps.member_pairs(study)["above"].tolist() == [3, 0, 1]
    samples = steps.EnsembleStudy(frame, MEMBERS, 0.3, "sum", "x", generator_first=False)
    assert set(steps.kept_sources(samples)["role"]) == {tables.EXTRA_ROLE}
