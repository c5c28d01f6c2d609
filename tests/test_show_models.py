"""`show` names every model of a run with the weights it ran, and counts the distinct weights (the
quickstart's output says a dataset came from two different real models)."""

from __future__ import annotations

import json

from ensemble_instruct_lib.runs.show import describe_run, model_lines

GEMMA = "sha256:" + "a" * 64
SMOL = "sha256:" + "b" * 64
MODELS = {
    "gen": {"role": "generator", "backend": "llama_cpp", "model_id": "gemma", "revision": GEMMA},
    "chat": {
        "role": "extra (zero_shot)",
        "backend": "llama_cpp",
        "model_id": "smol",
        "revision": SMOL,
    },
    "few": {
        "role": "extra (few_shot)",
        "backend": "llama_cpp",
        "model_id": "smol",
        "revision": SMOL,
    },
}


def test_model_lines_name_roles_weights_and_count_distinct_ones():
    lines = model_lines(MODELS)
    assert lines[0] == "  models:"
    assert lines[1] == f"    gen: generator, llama_cpp gemma ({GEMMA})"
    assert lines[2] == f"    chat: extra (zero_shot), llama_cpp smol ({SMOL})"
    assert lines[-1] == "  2 distinct weights"
    assert model_lines({}) == []


def test_describe_run_shows_them(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"status": "done", "models": MODELS}))
    text = describe_run(tmp_path)
    assert f"few: extra (few_shot), llama_cpp smol ({SMOL})" in text
    assert "2 distinct weights" in text
