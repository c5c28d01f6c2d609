"""The resumable per-item stage loop (`engines.resumable`) on hand-worked cases, and a run that
builds its prompt set once and writes its manifest through one object."""

from __future__ import annotations

import json

import pytest

from ensemble_instruct_lib.data.jsonl import read_jsonl, write_jsonl
from ensemble_instruct_lib.engines.base import Generation
from ensemble_instruct_lib.engines.isolation import FailureBudget
from ensemble_instruct_lib.engines.resumable import batches, load_records, run_batches
from ensemble_instruct_lib.errors import TooManyFailures
from ensemble_instruct_lib.method import prompts
from ensemble_instruct_lib.runs.config import load_config
from ensemble_instruct_lib.runs.pipeline import run
from ensemble_instruct_lib.testing.fake import fake_backends


def test_batches_from_the_items_left_or_in_their_places():
    items = [{"id": c} for c in "abcdefg"]
    asked = {"b", "c", "f"}
    left = batches(items, 2, asked)
    assert [[x["id"] for x in b] for b in left] == [["a", "d"], ["e", "g"]]
    placed = batches(items, 2, asked, keep_places=True)
    assert [[x["id"] for x in b] for b in placed] == [["a"], ["d"], ["e"], ["g"]]
    assert [len(b) for b in batches(items, None, set())] == [7]
    assert batches([], None, set()) == []
    with pytest.raises(ValueError, match="batch size"):
        batches(items, 0, set())


def test_run_batches_skips_what_is_on_file_and_appends_the_rest(tmp_path):
    path = tmp_path / "stage.jsonl"
    write_jsonl(path, [{"id": "a", "n": 0}, {"id": "b", "status": "failed"}])
    records = load_records(path, retry_failed=True)
    assert [r["id"] for r in records] == ["a"]  # the failed one is asked again
    assert [r["id"] for r in read_jsonl(path)] == ["a"]
    seen = []

    def step(batch):
        seen.append([x["id"] for x in batch])
        for x in batch:
            yield [{"id": x["id"], "n": 1}] if x["id"] != "c" else []

    items = [{"id": c} for c in "abcd"]
    run_batches(items, step, asked={r["id"] for r in records}, batch_size=2, path=path)
    assert seen == [["b", "c"], ["d"]]
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b", "d"]


def test_run_batches_stops_after_the_batch_when_too_many_calls_failed(tmp_path):
    budget = FailureBudget("t", 0.0, min_calls=1)

    def step(batch):
        budget.add([Generation("", "failed", extra={"reason": "error"}) for _ in batch])
        for x in batch:
            yield [{"id": x["id"], "status": "failed"}]

    path = tmp_path / "s.jsonl"
    with pytest.raises(TooManyFailures):
        run_batches(
            [{"id": c} for c in "abc"], step, asked=set(), batch_size=2, path=path, budget=budget
        )
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b"]  # the batch was written first


def test_a_run_builds_its_prompt_set_once_and_saves_one_manifest(tmp_path, monkeypatch):
    built = []
    init = prompts.ReferencePromptSet.__init__

    def counting(self, templates):
        built.append(templates)
        init(self, templates)

    monkeypatch.setattr(prompts.ReferencePromptSet, "__init__", counting)
    models = [{"kind": "scripted", "model": m} for m in ("gen", "x1", "x2")]
    cfg = load_config(
        {"name": "t", "prompts": "reference", "generator": models[0], "extra_models": models[1:]}
    )
    res = run(cfg, tmp_path / "run", backends=fake_backends(cfg), progress=False)
    assert len(built) == 1  # not once for the check, stage 1, stage 2 and each stage-3 file
    on_disk = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert on_disk == res.manifest and on_disk["status"] == "done"
