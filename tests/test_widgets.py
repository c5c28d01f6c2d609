"""Widget builders: they return ipywidgets objects whose filters and buttons work without a
browser, and every LM text they render is HTML-escaped (a `<script>` shows as text)."""

from __future__ import annotations

import ipywidgets as w
import pandas as pd
import pytest

from ensemble_instruct_lib.data.public import load_seed_tasks
from ensemble_instruct_lib.method.consensus import select_consensus
from ensemble_instruct_lib.nb import tables, widgets

EVIL = "<script>alert('x')</script>"
MODELS = ["gen", "x", "y"]


def _frame(candidate_sets, threshold=0.01):
    rows = []
    for k, cands in enumerate(candidate_sets):
        res = select_consensus(cands, threshold=threshold)
        rows.append(
            {
                "id": f"A-{k:05d}",
                "task_type": "A",
                "instruction": f"Instruction {k} {EVIL}",
                "input": f"input {k}",
                "output": res.output,
                "reason": res.reason,
                "chosen_index": res.index,
                "chosen_model": None if res.index is None else MODELS[res.index],
                "min_score": res.min_score,
                "scores": res.scores.tolist(),
                "candidates": list(cands),
                "models": MODELS,
                "rule": "sum",
                "threshold": threshold,
                "kept": res.kept,
            }
        )
    return pd.DataFrame(rows)


@pytest.fixture()
def frame():
    return _frame(
        [
            [f"run {EVIL} now", f"run {EVIL} now", "walk"],  # exact match
            ["red green blue", "red green", "green blue red"],  # consensus
            ["alpha beta", "gamma delta", "epsilon"],  # below threshold
            ["one two three four", "one two three", "three four five"],  # consensus, low agreement
        ]
    )


def test_escaping_helpers():
    assert widgets.esc(EVIL) == "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"
    assert widgets.esc(None) == ""
    assert "<script>" not in widgets.pre(EVIL) and "&lt;script&gt;" in widgets.pre(EVIL)


def test_render_example_escapes_and_highlights(frame):
    html = widgets.render_example_html(frame.iloc[0])
    assert "<script>" not in html
    assert html.count("&lt;script&gt;") >= 3  # instruction and two candidates
    assert html.count("chosen") == 1 and "exact match" in html
    assert html.index("&#10004; chosen") > html.index("<b>gen</b>")  # the generator's card
    dropped = widgets.render_example_html(frame.iloc[2])
    assert "dropped" in dropped and "at or below" in dropped and "&#10004;" not in dropped
    heat = widgets.render_heatmap_html(frame.iloc[1]["scores"], MODELS)
    assert heat.count("<tr>") == 4 and "rgba(" in heat  # header + 3 rows, coloured cells


def test_render_example_shows_gold_when_present(frame):
    row = frame.iloc[1].copy()
    row["target"] = f"gold {EVIL}"
    row["gold:gen"] = 55.5
    html = widgets.render_example_html(row)
    assert "<script>" not in html and "gold &lt;script&gt;" in html and "55.5" in html


def test_ensemble_inspector_filters_and_steps(frame):
    insp = widgets.ensemble_inspector(frame)
    assert isinstance(insp, w.VBox)
    assert len(insp.positions) == len(frame)
    insp.filters["reason"].value = "consensus"
    assert insp.positions == [1, 3]
    assert "red green blue" in insp.html.value
    insp.next.click()
    assert insp.slider.value == 1 and "one two three four" in insp.html.value
    insp.next.click()  # already at the last one: stays
    assert insp.slider.value == 1
    insp.prev.click()
    assert insp.slider.value == 0
    low = float(frame.iloc[3]["min_score"])
    insp.filters["agreement"].value = (0.0, low)
    assert insp.positions == [3]
    insp.filters["reason"].value = "dropped"
    insp.filters["agreement"].value = (0.0, 1.0)
    assert insp.positions == [2] and "1 of 1 matching" in insp.status.value
    insp.filters["agreement"].value = (0.9, 1.0)
    assert insp.positions == [] and "no example" in insp.html.value
    assert "<script>" not in insp.html.value


def test_example_html_static(frame):
    html = widgets.example_html(frame, reason="below_threshold").data
    assert "alpha beta" in html and "<script>" not in html
    assert "red green" in widgets.example_html(frame, reason="empty", index=1).data  # fallback


def test_instruction_browser():
    instructions = pd.DataFrame(
        {
            "id": ["A-00000", None, "B-00000"],
            "candidate": ["A-r0000-p0", "A-r0000-p1", "B-r0000-p0"],
            "task_type": ["A", "A", "B"],
            "instruction": [f"Explain {EVIL}.", "Draw a map.", "Name a fruit."],
            "accepted": [True, False, True],
            "reason": [None, "keyword:draw", None],
            "max_score": [0.31, None, 0.42],
            "mean_similarity": [0.1, None, 0.2],
            "most_similar": [[[f"Seed {EVIL}", 0.31], ["Other seed", 0.2]], [], [["Fruit", 0.42]]],
        }
    )
    browser = widgets.instruction_browser(instructions)
    assert isinstance(browser, w.VBox)
    assert browser.positions == [0, 2]  # accepted by default
    html = browser.html.value
    assert "<script>" not in html and html.count("&lt;script&gt;") == 2
    assert "0.310" in html and "Other seed" in html
    browser.filters["type"].value = "B"
    assert browser.positions == [2]
    browser.filters["type"].value = "all"
    browser.filters["verdict"].value = "rejected: keyword:draw"
    assert browser.positions == [1]
    assert "rejected: keyword:draw" in browser.html.value
    assert "no neighbours" in browser.html.value


def test_probe_html_escapes():
    probe = pd.DataFrame(
        [
            {"stage": "instruction", "task_type": "A", "raw": f" {EVIL} |", "parsed": EVIL,
             "verdict": "starts_with_punctuation", "detail": f"1 parsed {EVIL}"},
            {"stage": "instance", "task_type": "A", "raw": "input: a\noutput: b", "parsed": "x",
             "verdict": "valid", "detail": "first block parsed"},
        ]
    )  # fmt: skip
    html = widgets.render_probe_html(probe)
    assert "<script>" not in html and html.count("&lt;script&gt;") == 3
    assert "starts_with_punctuation" in html and "valid" in html
    assert "no backend" in widgets.render_probe_html(probe.iloc[0:0])
    assert isinstance(widgets.probe_view(probe), w.HTML)


@pytest.fixture(scope="module")
def tiny_tokenizer_dir(tmp_path_factory):
    from ensemble_instruct_lib.testing.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "gpt2", "gpt2")


def test_prompt_explorer_follows_controls(tiny_tokenizer_dir):
    from ensemble_instruct_lib.nb.steps.prompt_design import length_unit, load_tokenizer

    seeds = load_seed_tasks()
    tok = load_tokenizer(str(tiny_tokenizer_dir))
    ex = widgets.prompt_explorer(
        seeds,
        tokenizer=tok,
        unit=length_unit(tok),
        generated=[f"Rewrite {EVIL} politely."],
        instructions={"A": f"Fix {EVIL}.", "B": "Name a color."},
    )
    assert isinstance(ex, w.VBox)
    first = ex.html.value
    assert "ei-instruction-v1" in first and "tokens (gpt2)" in first
    # METHOD.md's 20 + 4 for type A; with one generated instruction seeds fill the other 3
    assert "23 seed demos + 1 generated" in first
    assert "<script>" not in first and "&lt;script&gt;" in first  # the generated demo
    ex.n_seed.value = 5
    ex.n_generated.value = 0
    assert "5 seed demos:" in ex.html.value
    ex.seed.value = 7
    assert ex.html.value != first
    ex.kind.value = "B"
    assert "9 seed demos + 1 generated" in ex.html.value  # type B defaults (8 + 2) restored
    ex.stage.value = "instance"
    assert "ei-instance-v1" in ex.html.value and "15 seed demos" in ex.html.value
    assert "instruction: Name a color." in ex.html.value
    ex.kind.value = "A"
    assert "instruction: Fix &lt;script&gt;" in ex.html.value


def test_stepper_on_an_empty_frame():
    empty = tables.ensemble_frame(pd.DataFrame(), pd.DataFrame())
    insp = widgets.ensemble_inspector(empty.assign(min_score=pd.Series(dtype=float)))
    assert insp.positions == [] and "no example" in insp.html.value
