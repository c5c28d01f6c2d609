"""Figures show their data: the artists of the `nb.plots` figures (bars, lines, image, labels)
carry exactly the input table's values, an empty table gives a "no ..." panel with no data
artists, and a saved PNG is not blank (its pixel values vary; a blank canvas fails the check).

test_plots.py checks the tables behind the figures; this file checks what is drawn from them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from notebook_checks import BLANK_STD, assert_png, pixel_std

from ensemble_instruct_lib.nb import plots


def _bars(ax) -> list:
    """The bar rectangles of an axes, in drawing order."""
    return [p for c in ax.containers for p in c]


def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def _data_artists(fig: Figure) -> int:
    return sum(len(ax.lines) + len(ax.patches) + len(ax.images) for ax in fig.axes)


REASONS = pd.DataFrame(
    {
        "reason": ["exact_match", "consensus", "below_threshold", "empty"],
        "examples": [7, 12, 5, 1],
        "kept": [True, True, False, False],
    }
)


def test_consensus_reason_bars_are_the_counts():
    fig = plots.plot_consensus_reasons(REASONS)
    (ax,) = fig.axes
    bars = _bars(ax)
    assert [b.get_width() for b in bars] == [1, 5, 12, 7]  # drawn bottom-up
    assert [t.get_text() for t in ax.get_yticklabels()] == REASONS["reason"][::-1].tolist()
    assert ax.get_title() == "Stage 4: 19 of 25 examples kept (76%)"


def test_chosen_bars_and_their_shares():
    chosen = pd.DataFrame(
        {"model": ["gen", "x", "y"], "chosen": [6, 3, 1], "share": [0.6, 0.3, 0.1]}
    )
    (ax,) = plots.plot_chosen(chosen).axes
    assert [b.get_width() for b in _bars(ax)] == [1, 3, 6]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["y", "x", "gen"]
    assert _texts(ax) == [" 10%", " 30%", " 60%"]
    assert [t.get_position()[0] for t in ax.texts] == [1, 3, 6]  # each share at its bar's end


def test_threshold_curve_line_is_the_table():
    curve = pd.DataFrame(
        {
            "threshold": [0.0, 0.1, 0.2, 0.3],
            "kept_fraction": [1.0, 0.75, 0.5, 0.125],
            "examples": [8] * 4,
        }
    )
    (ax,) = plots.plot_threshold_curve(curve, current=0.1).axes
    line, marker = ax.lines
    np.testing.assert_array_equal(line.get_xdata(), curve["threshold"])
    np.testing.assert_array_equal(line.get_ydata(), curve["kept_fraction"])
    assert list(marker.get_xdata()) == [0.1, 0.1]  # the threshold in use, a vertical line
    assert "8 examples" in ax.get_title()


def test_gold_summary_bars_are_both_means():
    summary = pd.DataFrame(
        {
            "system": ["consensus", "gen", "random", "oracle"],
            "kept_mean": [40.0, 38.0, 36.0, 45.0],
            "all_mean": [np.nan, 36.0, 35.0, 44.0],
        }
    )
    (ax,) = plots.plot_gold_summary(summary).axes
    kept, every = ax.containers
    np.testing.assert_array_equal([b.get_height() for b in kept], summary["kept_mean"])
    np.testing.assert_array_equal([b.get_height() for b in every], summary["all_mean"])
    assert [t.get_text() for t in ax.get_xticklabels()] == summary["system"].tolist()
    assert [b.get_x() + b.get_width() / 2 for b in kept] == pytest.approx([-0.2, 0.8, 1.8, 2.8])


def test_agreement_heatmap_is_the_matrix():
    m = np.array([[np.nan, 0.25, 0.5], [0.25, np.nan, 0.75], [0.5, 0.75, np.nan]])
    agreement = pd.DataFrame(m, index=["gen", "x", "y"], columns=["gen", "x", "y"])
    heat_ax = plots.plot_agreement_matrix(agreement).axes[0]
    (image,) = heat_ax.images
    np.testing.assert_array_equal(np.asarray(image.get_array().filled(np.nan)), m)
    assert sorted(_texts(heat_ax)) == ["0.25", "0.25", "0.50", "0.50", "0.75", "0.75"]


def test_pairwise_histograms_count_the_scores():
    pairs = pd.DataFrame(
        {
            "pair": ["gen / x"] * 4 + ["gen / y"] * 2,
            "score": [0.02, 0.03, 0.5, 0.97, 0.41, 0.42],
        }
    )
    (ax,) = plots.plot_pairwise(pairs, threshold=0.1).axes
    bins = np.linspace(0, 1, 26)
    step_counts = []
    for patch in ax.patches:  # histtype="step": one outline per pair, its top edge = the counts
        xy = patch.get_xy()
        tops = {round(float(x), 6): y for x, y in xy[1:-1:2]}
        step_counts.append([tops.get(round(float(b), 6), 0.0) for b in bins[:-1]])
    for (_, part), counts in zip(pairs.groupby("pair", sort=False), step_counts, strict=True):
        expected, _ = np.histogram(part["score"], bins=bins)
        np.testing.assert_array_equal(counts, expected)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["gen / x", "gen / y", "threshold 0.1"]


def test_benchmark_bars_per_panel():
    comparison = pd.DataFrame(
        {
            "system": ["ens", "single", "davinci", "ens", "single"],
            "kind": ["tuned", "tuned", "recorded", "tuned", "tuned"],
            "benchmark": ["user_oriented"] * 3 + ["superni"] * 2,
            "rougeL": [30.0, 25.0, 3.0, 12.5, 10.0],
        }
    )
    axes = plots.plot_benchmark_scores(comparison).axes
    assert len(axes) == 2
    for ax, bench in zip(axes, ["user_oriented", "superni"], strict=True):
        part = comparison[comparison["benchmark"] == bench].iloc[::-1]
        assert [b.get_width() for b in _bars(ax)] == part["rougeL"].tolist()
        assert [t.get_text() for t in ax.get_yticklabels()] == part["system"].tolist()
        assert ax.get_title().startswith(bench)


def test_loss_curves_are_the_logged_losses():
    losses = pd.DataFrame(
        {
            "system": ["ens"] * 4 + ["single"] * 2,
            "step": [1, 2, 3, 3, 1, 2],
            "loss": [3.0, 2.5, 2.0, np.nan, 3.1, 2.9],
            "eval_loss": [np.nan, np.nan, np.nan, 2.2, np.nan, np.nan],
        }
    )
    (ax,) = plots.plot_loss_curves(losses).axes
    by_label = {ln.get_label(): ln for ln in ax.lines}
    assert set(by_label) == {"ens train", "ens held-out", "single train"}
    assert list(by_label["ens train"].get_xydata().tolist()) == [[1, 3.0], [2, 2.5], [3, 2.0]]
    assert list(by_label["ens held-out"].get_xydata().tolist()) == [[3, 2.2]]
    assert list(by_label["single train"].get_ydata()) == [3.1, 2.9]


def test_empty_tables_draw_no_data_but_say_so():
    fig = plots.plot_consensus_reasons(REASONS.assign(examples=0))
    assert _data_artists(fig) == 0 and _texts(fig.axes[0]) == ["no examples"]
    fig = plots.plot_loss_curves(pd.DataFrame())
    assert _data_artists(fig) == 0 and _texts(fig.axes[0]) == ["no loss logs"]


def test_a_saved_figure_is_not_blank_and_a_blank_one_fails(tmp_path):
    shown = plots.save_figure(plots.plot_consensus_reasons(REASONS), tmp_path, "reasons")
    assert_png(shown)
    assert pixel_std(shown) > 5 * BLANK_STD
    blank = tmp_path / "blank.png"
    Figure(figsize=(6, 3)).savefig(blank, dpi=110)  # a white canvas of the same size
    assert pixel_std(blank) < BLANK_STD
    with pytest.raises(AssertionError):
        assert_png(blank)
