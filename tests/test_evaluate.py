"""The evaluation harness: SuperNI-style scoring, the user-oriented benchmark, generation runs.

Scores are checked against hand-worked cases and against `rouge-score` called directly on the
eight recorded GPT-3-family models' answers (exact float equality, per example and on average).
"""

from __future__ import annotations

import warnings

import pytest
from rouge_score import rouge_scorer

from ensemble_instruct_lib.data.jsonl import read_jsonl
from ensemble_instruct_lib.data.public import PREDICTION_MODELS, load_predictions
from ensemble_instruct_lib.engines.base import Backend, Generation
from ensemble_instruct_lib.engines.scripted import ScriptedBackend
from ensemble_instruct_lib.errors import DataError
from ensemble_instruct_lib.train.evaluate import (
    EvalItem,
    evaluate_backend,
    exact_match,
    generate_predictions,
    normalize_answer,
    rouge_l_score,
    score_example,
    score_predictions,
    score_recorded_model,
    score_recorded_models,
    user_oriented_items,
)
from ensemble_instruct_lib.train.formats import FORMAT_VERSION, build_prompt

# ---------------------------------------------------------------------------------------------
# scorers, by hand


def test_rouge_l_hand_worked():
    # tokens: the cat sat on the mat / the cat is on the mat; LCS = "the cat on the mat" = 5
    assert rouge_l_score("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # P = 2/2, R = 2/4: F = 2PR/(P+R) = 2/3
    assert rouge_l_score("quick fox", "the quick brown fox") == pytest.approx(2 / 3)
    assert rouge_l_score("Hello, World!", "hello world") == 1.0  # lowercase, punctuation
    assert rouge_l_score("running", "runs") == 1.0  # Porter stemming: both "run"
    assert rouge_l_score("", "anything") == 0.0
    assert rouge_l_score("cats", "dogs") == 0.0


def test_rouge_l_argument_order_matches_superni():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    pred, ref = "a b c d", "a b"
    direct = scorer.score(target=ref, prediction=pred)["rougeL"]
    assert rouge_l_score(pred, ref) == direct.fmeasure
    assert direct.precision == 0.5 and direct.recall == 1.0


def test_exact_match_normalization_keeps_articles():
    assert normalize_answer("  The   Cat!  ") == "the cat"
    assert exact_match("The Cat!", "the cat")
    assert exact_match("Yes.", "yes")
    assert not exact_match("a cat", "cat")  # SuperNI keeps articles
    assert not exact_match("cat\u2019", "cat")  # only ASCII punctuation is removed
    assert exact_match("", "")


def test_score_example_takes_the_best_reference():
    assert score_example("bottle", ["jug", "bottle"]) == (1.0, 1.0)
    r, em = score_example("a glass bottle", ["jug", "bottle"])
    assert r == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1)) and em == 0.0
    with pytest.raises(ValueError):
        score_example("x", [])
    with pytest.raises(ValueError):
        score_example("x", "bottle")


# ---------------------------------------------------------------------------------------------
# aggregation


REFS = [
    {"id": "1", "references": ["the cat is on the mat"], "task_id": "t1", "task_category": "Cat A"},
    {"id": "2", "references": ["yes"], "task_id": "t1", "task_category": "Cat A"},
    {"id": "3", "references": ["jug", "bottle"], "task_id": "t2", "task_category": "Word Analogy"},
]


def test_score_predictions_hand_worked_aggregates():
    preds = {"1": "the cat sat on the mat", "2": "Yes."}  # "3" is missing
    with pytest.warns(UserWarning, match="1 of 3"):
        res = score_predictions(preds, REFS)
    assert res.n == 3 and res.n_missing == 1
    assert res.rougeL == round(100 * (5 / 6 + 1 + 0) / 3, 4) == 61.1111
    assert res.exact_match == round(100 * 1 / 3, 4) == 33.3333
    assert res.per_example["rougeL"].tolist() == pytest.approx([5 / 6, 1.0, 0.0])
    assert res.per_example.loc[2, "prediction"] == ""
    assert res.per_task.loc["t1", "rougeL"] == round(100 * (5 / 6 + 1) / 2, 4)
    assert res.per_task.loc["t2", "exact_match"] == 0.0
    assert res.per_task.loc["t1", "n"] == 2
    assert res.per_category.loc["Cat A", "n_tasks"] == 1
    m = res.metrics()
    assert m["rougeL"] == res.rougeL and m["rougeL_for_t1"] == 91.6667
    assert m["exact_match_for_word_analogy"] == 0.0 and "rougeL_for_cat_a" in m


def test_prediction_shapes_agree():
    records = [{"id": "1", "prediction": "x"}, {"id": "2", "prediction": "yes"}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = score_predictions(records, REFS)
        b = score_predictions({"1": "x", "2": "yes"}, REFS)
    c = score_predictions(["x", "yes", ""], REFS)
    assert a.rougeL == b.rougeL == c.rougeL
    assert c.n_missing == 0 and a.n_missing == 1


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="align"):
        score_predictions(["x"], REFS)
    with pytest.raises(ValueError, match="duplicate"):
        score_predictions({}, [REFS[0], REFS[0]])
    with pytest.raises(ValueError, match="references"):
        score_predictions({}, [{"id": "z", "references": []}])
    with pytest.raises(ValueError, match="no references"):
        score_predictions({}, [])
    with pytest.warns(UserWarning, match="not in the references"):
        score_predictions({"1": "a", "2": "b", "3": "c", "zzz": "d"}, REFS)


# ---------------------------------------------------------------------------------------------
# the recorded GPT-3-family models: must equal rouge-score called directly


@pytest.mark.parametrize("model", PREDICTION_MODELS)
def test_recorded_model_scores_equal_rouge_score(model):
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rows = load_predictions(model)
    direct = [
        scorer.score(target=r["target"], prediction=r["response"])["rougeL"].fmeasure for r in rows
    ]
    res = score_recorded_model(model)
    assert res.n == 252 and res.n_missing == 0
    assert res.per_example["rougeL"].tolist() == direct  # exact, per example
    assert res.rougeL == round(100.0 * sum(direct) / len(direct), 4)
    assert res.per_example["id"].tolist()[:2] == ["user_oriented_task_0", "user_oriented_task_1"]


def test_score_recorded_models_table():
    table = score_recorded_models(["davinci", "text-davinci-003"])
    assert list(table.index) == ["davinci", "text-davinci-003"]
    assert list(table.columns) == ["rougeL", "exact_match", "n"]
    assert (table["n"] == 252).all()
    assert table.loc["davinci", "rougeL"] == score_recorded_model("davinci").rougeL
    assert table["rougeL"].between(0, 100).all() and table["rougeL"].nunique() == 2


# ---------------------------------------------------------------------------------------------
# the user-oriented benchmark


def test_user_oriented_items(data_root):
    items = user_oriented_items()
    assert len(items) == 252 and len({it.id for it in items}) == 252
    raw = read_jsonl(data_root / "self_instruct/user_oriented_instructions.jsonl")
    assert items[0].id == raw[0]["id"] and items[0].instruction == raw[0]["instruction"]
    assert items[0].references == (raw[0]["instances"][0]["output"],)
    assert items[0].input == raw[0]["instances"][0]["input"]
    assert items[0].task_category == raw[0]["motivation_app"]


def test_user_oriented_items_bad_file(tmp_path):
    p = tmp_path / "uo.jsonl"
    p.write_text(
        '{"id": "a", "instruction": "x", "instances": [{"input": "", "output": "y"}]}\n'
        '{"id": "b", "instances": [{"input": "", "output": "y"}]}\n'
    )
    with pytest.raises(DataError) as e:
        user_oriented_items(p)
    assert str(p) in str(e.value) and "record 2" in str(e.value) and e.value.field == "instruction"


# ---------------------------------------------------------------------------------------------
# generation through a backend


ITEMS = [
    EvalItem("a", "Give the capital.", "France", ("Paris",), "t", "c"),
    EvalItem("b", "Say yes.", "", ("yes",), "t", "c"),
    EvalItem("c", "Give the capital.", "Italy", ("Rome",), "t", "c"),
]
GOLD = {"France": "Paris", "Italy": "Rome"}


def _answer(prompt, params, index):
    assert not params.do_sample and params.stop == ("\n### ",)
    for k, v in GOLD.items():
        if k in prompt:
            return f" {v}\n### Instruction:\nmore"  # run-on is cut at the stop string
    return "yes"


def test_generate_predictions_uses_the_documented_format():
    backend = ScriptedBackend(_answer)
    preds = generate_predictions(backend, ITEMS, batch_size=2, max_new_tokens=16)
    assert preds == {"a": "Paris", "b": "yes", "c": "Rome"}
    assert list(preds) == ["a", "b", "c"]
    assert sorted(backend.calls) == sorted(build_prompt(it.instruction, it.input) for it in ITEMS)
    assert max(len(b) for b in backend.batches) == 2
    generate_predictions(backend, ITEMS[:1], with_definition=False)
    assert (
        backend.calls[-1] == build_prompt("", "France") == "### Input:\nFrance\n\n### Response:\n"
    )


def test_evaluate_backend_scores_gold_answers_100():
    res = evaluate_backend(ScriptedBackend(_answer), ITEMS)
    assert res.rougeL == 100.0 and res.exact_match == 100.0


class _Flaky(Backend):
    """Answers one batch, then stops like a killed job (a failed call would be isolated)."""

    name = "flaky"
    model_id = "flaky"

    def __init__(self, fail_after: int) -> None:
        self.fail_after = fail_after
        self.seen: list[str] = []

    def _generate(self, prompts, params, sample_indices):
        if len(self.seen) >= self.fail_after:
            raise KeyboardInterrupt("killed")
        self.seen += prompts
        return [Generation(text="out") for _ in prompts]


def test_generation_run_resumes_and_refuses_other_settings(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        generate_predictions(_Flaky(fail_after=2), ITEMS, batch_size=2, run_dir=tmp_path)
    lines = read_jsonl(tmp_path / "predictions.jsonl")
    assert len(lines) == 2 and lines[0]["format_version"] == FORMAT_VERSION
    second = _Flaky(fail_after=99)
    preds = generate_predictions(second, ITEMS, batch_size=2, run_dir=tmp_path)
    assert len(second.seen) == 1 and set(preds) == {"a", "b", "c"}
    assert len(read_jsonl(tmp_path / "predictions.jsonl")) == 3
    with pytest.raises(ValueError, match="with_definition"):
        generate_predictions(second, ITEMS, with_definition=False, run_dir=tmp_path)
    with pytest.raises(ValueError, match="model"):
        generate_predictions(ScriptedBackend(_answer), ITEMS, run_dir=tmp_path)
