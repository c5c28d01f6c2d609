"""The stage-1 round loop shared by every method (`methods.rounds.run_rounds`) on hand-scripted
LMs: every item of an Ensemble-Instruct answer in order (or the first only, as an option), the
origin of each candidate, and the record builders' schema shared by all methods."""

from __future__ import annotations

import re

import pytest

from ensemble_instruct_lib.data.jsonl import read_jsonl
from ensemble_instruct_lib.engines.scripted import ScriptedBackend
from ensemble_instruct_lib.method import records
from ensemble_instruct_lib.method.rouge import rouge_l
from ensemble_instruct_lib.method.run_files import stage1_path
from ensemble_instruct_lib.methods.rounds import GROUP
from ensemble_instruct_lib.runs.config import load_config
from ensemble_instruct_lib.runs.pipeline import run
from ensemble_instruct_lib.testing.fake import fake_backends

FIRST = "Invent a tongue twister about purple penguins skating on ice."
COPY = "Invent a tongue twister about purple penguins skating on the ice."
THIRD = "Explain why the sky looks red at sunset to a curious child."
# a run-on answer after "25.": three numbered items before the end marker
RUN_ON = f" {FIRST}\n26. {COPY}\n27. {THIRD} |EoS|"


def _cfg(num_instructions=5, **instruction):
    return load_config(
        {
            "name": "t",
            "generator": {"kind": "scripted", "model": "gen"},
            "extra_models": [{"kind": "scripted", "model": "x1"}],
            "num_instructions": num_instructions,
            "task_types": ["A"],
            "instruction": {"prompts_per_round": 2, "max_rounds": 1, **instruction},
        }
    )


def _stage1(tmp_path, cfg, answers):
    """Stage 1 with a generator answering the round's prompts with `answers` in turn."""
    it = iter(answers)
    gen = ScriptedBackend([(r"\n\d+\.$", lambda p, params, i: next(it))], model_id="gen")
    run(cfg, tmp_path, backends={**fake_backends(cfg), "gen": gen}, progress=False, stages=(1,))
    return read_jsonl(stage1_path(tmp_path, "A"))


def test_every_item_of_an_answer_is_judged_in_order(tmp_path):
    assert rouge_l(COPY, FIRST) > 0.7  # the second item copies the first
    recs = _stage1(tmp_path, _cfg(), [RUN_ON, " Say hi. |EoS|"])
    got = [(r["candidate"], r["position"], r["instruction"], r["reason"]) for r in recs]
    assert got == [
        ("A-r0000-p0-c00", 0, FIRST, None),
        ("A-r0000-p0-c01", 1, COPY, "not_novel"),  # against the first, accepted just before
        ("A-r0000-p0-c02", 2, THIRD, None),
        ("A-r0000-p1-c00", 0, "Say hi.", "too_short"),
    ]
    assert [r["accepted"] for r in recs] == [True, False, True, False]
    assert [r["id"] for r in recs if r["accepted"]] == ["A-00000", "A-00001"]
    assert recs[1]["most_similar"][0] == [FIRST, pytest.approx(rouge_l(COPY, FIRST))]
    assert all(r["round_size"] == 4 for r in recs)
    assert [r["raw"] for r in recs] == [RUN_ON.removesuffix("|EoS|")] * 3 + [" Say hi. "]


def test_first_item_only_keeps_the_first_of_each_answer(tmp_path):
    recs = _stage1(tmp_path, _cfg(first_item_only=True), [RUN_ON, " Say hi. |EoS|"])
    got = [(r["candidate"], r["position"], r["instruction"], r["reason"]) for r in recs]
    assert got == [
        ("A-r0000-p0-c00", 0, FIRST, None),
        ("A-r0000-p1-c00", 0, "Say hi.", "too_short"),
    ]
    assert all(r["round_size"] == 2 for r in recs)


def test_target_reached_inside_an_answer(tmp_path):
    recs = _stage1(tmp_path, _cfg(num_instructions=1), [RUN_ON, RUN_ON])
    assert [r["reason"] for r in recs] == [None] + ["target_reached"] * 5
    assert sum(r["accepted"] for r in recs) == 1


def test_an_answer_without_items_is_one_empty_candidate(tmp_path):
    recs = _stage1(tmp_path, _cfg(), ["   |EoS|", f" {THIRD} |EoS|"])
    assert [(r["candidate"], r["instruction"], r["reason"]) for r in recs] == [
        ("A-r0000-p0-c00", "", "empty"),
        ("A-r0000-p1-c00", THIRD, None),
    ]


@pytest.mark.parametrize("method", ["ensemble_instruct", "self_instruct", "alpaca"])
def test_every_method_writes_the_same_stage1_schema(tmp_path, method):
    cfg = load_config(
        {
            "name": "t",
            "method": method,
            "generator": {"kind": "scripted", "model": "gen"},
            "extra_models": [{"kind": "scripted", "model": "x1"}],
            "num_instructions": 3,
        }
    )
    run(cfg, tmp_path, backends=fake_backends(cfg), progress=False, stages=(1,))
    groups = ["A", "B"] if method == "ensemble_instruct" else [GROUP]
    base = list(
        records.stage1_candidate(
            candidate="c",
            group="g",
            round_no=0,
            instruction="",
            raw="",
            prompt_version="v",
            demo_seed_ids=[],
            num_generated_demos=0,
            position=0,
            finish_reason="stop",
        )
    )
    for g in groups:
        for r in read_jsonl(stage1_path(tmp_path, g)):
            assert list(r)[: len(base)] == base
            pattern = rf"{g}-r{r['round']:04d}-p\d+-c{r['position']:02d}"
            assert re.fullmatch(pattern, r["candidate"])


def test_record_builders():
    inst = {"id": "A-00001", "task_type": "A", "instruction": "Add them.", "input": "2, 3"}
    inst["output"] = "5"
    rec = records.consensus_record(
        inst,
        output="5",
        reason="consensus",
        chosen_index=1,
        min_score=0.5,
        scores=[[1.0]],
        candidates=["5", "5."],
        models=["gen", "x1"],
        rule="sum",
        threshold=0.01,
    )
    assert rec["chosen_model"] == "x1" and rec["candidates"] == ["5", "5."]
    assert list(rec)[:5] == ["id", "task_type", "instruction", "input", "output"]
    assert records.single_output_record(inst) == inst
    h = records.harvested_instance(
        parent="A-00001",
        index=2,
        task_type="B",
        instruction="Name a color.",
        input="",
        output="Red",
        prompt_version="v",
    )
    assert (h["id"], h["harvested_from"], h["valid"], h["reason"], h["raw"]) == (
        "A-00001-h2",
        "A-00001",
        True,
        "ok",
        None,
    )
    assert records.candidate_id("all", 3, 2, 1) == "all-r0003-p2-c01"
