"""Evaluation (`train.evaluate.generate_predictions`) isolates failed calls: a poison prompt on
the fault server leaves that item without a prediction and a failed record, the rest is
answered, a re-run asks only the failed one, and a dead server stops with a clear error."""

from __future__ import annotations

import warnings

import pytest
from fault_server import FaultServer

from ensemble_instruct_lib.data.eval_items import EvalItem
from ensemble_instruct_lib.data.jsonl import read_jsonl
from ensemble_instruct_lib.engines.openai_compat import OpenAICompatBackend
from ensemble_instruct_lib.errors import TooManyFailures
from ensemble_instruct_lib.train.evaluate import evaluate_backend, generate_predictions

ITEMS = [
    EvalItem(id=f"q{i}", instruction=f"Task number {i}.", input=f"in{i}", references=[f"r{i}"])
    for i in range(6)
]


def make(url: str, **kw) -> OpenAICompatBackend:
    kw.setdefault("backoff_base", 0.001)
    kw.setdefault("backoff_max", 0.01)
    return OpenAICompatBackend("fake-model", url, api_key_env="EI_TEST_NO_KEY", **kw)


def test_poison_item_fails_alone_and_a_rerun_fills_it_in(tmp_path):
    with FaultServer() as srv:
        srv.poison("Task number 4.")
        be = make(srv.url)
        preds = generate_predictions(be, ITEMS, batch_size=4, run_dir=tmp_path)
        assert set(preds) == {f"q{i}" for i in range(6)} - {"q4"}
        recs = {r["id"]: r for r in read_jsonl(tmp_path / "predictions.jsonl")}
        assert recs["q4"]["status"] == "failed" and recs["q4"]["prediction"] is None
        assert recs["q4"]["reason"] == "prompt_too_long" and "too long" in recs["q4"]["error"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = evaluate_backend(be, ITEMS, batch_size=4, run_dir=tmp_path)
        assert res.n_missing == 1  # still poisoned: asked again, failed again, scored as ""
        srv.cure()
        srv.requests.clear()
        preds = generate_predictions(be, ITEMS, batch_size=4, run_dir=tmp_path)
        assert len(srv.requests) == 1 and set(preds) == {f"q{i}" for i in range(6)}
        recs = read_jsonl(tmp_path / "predictions.jsonl")
        assert sorted(r["id"] for r in recs) == sorted(it.id for it in ITEMS)  # none twice
        srv.requests.clear()
        assert generate_predictions(be, ITEMS, run_dir=tmp_path) == preds
        assert srv.requests == []
        be.close()


def test_retry_failed_false_keeps_the_failure(tmp_path):
    with FaultServer() as srv:
        srv.poison("Task number 1.")
        be = make(srv.url)
        generate_predictions(be, ITEMS, run_dir=tmp_path)
        srv.cure()
        srv.requests.clear()
        preds = generate_predictions(be, ITEMS, run_dir=tmp_path, retry_failed=False)
        assert srv.requests == [] and "q1" not in preds
        be.close()


def test_dead_server_stops_evaluation(tmp_path):
    with FaultServer() as srv:
        url = srv.url
    be = make(url, max_retries=0)
    with pytest.raises(TooManyFailures, match="evaluation \\(fake-model\\): 6 of 6 calls failed"):
        generate_predictions(be, ITEMS, batch_size=4, run_dir=tmp_path)
    assert all(r["status"] == "failed" for r in read_jsonl(tmp_path / "predictions.jsonl"))
    be.close()
