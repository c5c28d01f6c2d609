"""RecordedBackend: real recorded GPT-3-family answers served as a stage-3 LM."""

from __future__ import annotations

import pytest

from ensemble_instruct_lib.data.public import PREDICTION_MODELS, load_predictions, sha256_of
from ensemble_instruct_lib.engines import DecodingParams, RecordedBackend, make_backend
from ensemble_instruct_lib.engines.recorded import UnknownPromptError, default_prompt_builder

P = DecodingParams(max_new_tokens=256, stop=("\n\n", "|EoS|"))


@pytest.fixture(scope="module")
def rows(data_root):
    return load_predictions("text-davinci-003", data_root)


def _prompt(row):
    inst, inp = row["instruction"].strip(), row["input"].strip()
    return f"{inst}\n{inp}" if inp else inst


def test_answers_every_recorded_prompt(data_root, rows):
    be = RecordedBackend("text-davinci-003", data_root=data_root)
    assert len(be) == len(rows) == 252
    prompts = [_prompt(r) for r in rows]
    out = be.generate(prompts, P)
    for r, g in zip(rows, out, strict=True):
        want = r["response"].lstrip()
        for s in P.stop:
            want = want.split(s)[0]
        assert g.text == want.strip()
        assert g.finish_reason == "stop"
    assert all(g.text for g in out)  # a leading blank line does not empty the answer
    assert any("\n\n" in r["response"].strip() for r in rows)  # the stop cut is exercised
    assert sum(r["response"].startswith("\n\n") for r in rows) > 50


def test_default_builder_is_the_zero_shot_format(rows):
    build = default_prompt_builder()
    assert build("  Do X. \n", " in ") == "Do X.\nin"
    assert build("Do X.", "   ") == "Do X."
    assert build(rows[0]["instruction"], rows[0]["input"]) == _prompt(rows[0])


def test_models_differ_and_revision_is_file_digest(data_root, rows):
    a = RecordedBackend("davinci", data_root=data_root)
    b = RecordedBackend("text-davinci-003", data_root=data_root)
    prompts = [_prompt(r) for r in rows[:40]]
    ta = [g.text for g in a.generate(prompts, P)]
    tb = [g.text for g in b.generate(prompts, P)]
    assert ta != tb
    assert b.revision == sha256_of(b.path)[:12] and a.revision != b.revision
    assert b.describe()["backend"] == "recorded" and b.describe()["model_id"] == "text-davinci-003"


def test_unknown_prompt_says_what_to_do(data_root):
    be = RecordedBackend("davinci", data_root=data_root)
    with pytest.raises(UnknownPromptError, match="no answer for prompt 0") as err:
        be.generate(["Write a haiku about SQLite."], P)
    assert "user-oriented instructions" in str(err.value)
    assert isinstance(err.value, KeyError)


def test_custom_prompt_builder(data_root, rows):
    be = RecordedBackend(
        "davinci-t0-ft",
        data_root=data_root,
        prompt_builder=lambda i, x: f"instruction: {i.strip()}\ninput: {x.strip()}\noutput:",
    )
    r = rows[3]
    [g] = be.generate(
        [f"instruction: {r['instruction'].strip()}\ninput: {r['input'].strip()}\noutput:"], P
    )
    assert isinstance(g.text, str)
    assert _prompt(r) not in be


def test_unknown_model_and_factory(data_root):
    with pytest.raises(ValueError, match="text-davinci-003"):
        RecordedBackend("gpt-4", data_root=data_root)
    be = make_backend({"kind": "recorded", "model": PREDICTION_MODELS[0], "data_root": data_root})
    assert isinstance(be, RecordedBackend)
