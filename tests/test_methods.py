"""The Self-Instruct and Alpaca baselines: prompts and parsers on hand-worked cases, then each
method through `pipeline.run` end to end on fake LMs (files, filters, novelty against one pool,
resuming, determinism, the rounds budget)."""

from __future__ import annotations

import json
import random
import re

import pytest

from ensemble_instruct_lib.data.jsonl import read_jsonl
from ensemble_instruct_lib.data.public import load_seed_tasks, split_by_type
from ensemble_instruct_lib.engines.base import Generation
from ensemble_instruct_lib.engines.scripted import ScriptedBackend
from ensemble_instruct_lib.errors import ConfigError
from ensemble_instruct_lib.method.filters import instruction_rejection
from ensemble_instruct_lib.method.rouge import rouge_l
from ensemble_instruct_lib.method.run_files import STAGE2, stage1_path
from ensemble_instruct_lib.methods import alpaca as al
from ensemble_instruct_lib.methods import self_instruct as si
from ensemble_instruct_lib.methods.rounds import GROUP
from ensemble_instruct_lib.runs.config import load_config
from ensemble_instruct_lib.runs.pipeline import run
from ensemble_instruct_lib.runs.run_folder import load_run
from ensemble_instruct_lib.testing.fake import fake_backends

EI_STAGE1_FIELDS = {
    "candidate",
    "id",
    "task_type",
    "round",
    "round_size",
    "instruction",
    "raw",
    "accepted",
    "reason",
    "max_score",
    "most_similar",
    "mean_similarity",
    "prompt_version",
    "demo_seed_ids",
    "num_generated_demos",
    "position",
    "finish_reason",
}
EI_STAGE2_FIELDS = {
    "id",
    "task_type",
    "instruction",
    "valid",
    "reason",
    "input",
    "output",
    "raw",
    "finish_reason",
    "prompt_version",
    "harvested_from",
}


def _cfg(method: str, **over):
    base = {
        "name": "t",
        "method": method,
        "generator": {"kind": "scripted", "model": "gen"},
        "extra_models": [
            {"kind": "scripted", "model": "x1"},
            {"kind": "scripted", "model": "x2"},
        ],
        "num_instructions": 5,
    }
    return load_config({**base, **over})


def _calls(backends) -> int:
    return sum(len(b.calls) for b in backends.values())


@pytest.fixture(scope="module")
def seeds():
    return load_seed_tasks()


# ------------------------------------------------------------------------------------------
# Self-Instruct: prompts and parsers


def test_si_instruction_prompt_demos_and_fill_in(seeds):
    gen = ["Invent a riddle about the moon and its phases.", "List three uses of a paperclip."]
    p = si.instruction_prompt(seeds, gen, random.Random(0))
    lines = p.text.split("\n")
    assert lines[-1] == "Task 9:" and len(lines) == 10
    assert [ln.split(":")[0] for ln in lines[1:9]] == [f"Task {i}" for i in range(1, 9)]
    assert p.meta["num_seed"] == 6 and p.meta["num_generated"] == 2
    assert sum(g in p.text for g in gen) == 2 and len(p.meta["seed_ids"]) == 6
    # fewer generated ones than asked: seeds fill in
    p = si.instruction_prompt(seeds, gen[:1], random.Random(0))
    assert (p.meta["num_seed"], p.meta["num_generated"]) == (7, 1)
    assert p.text.endswith("\nTask 9:")
    assert (
        si.instruction_prompt(seeds, gen, random.Random(5)).text
        == si.instruction_prompt(seeds, gen, random.Random(5)).text
    )
    assert si.instruction_stops(8, 7) == ("\n\n", "Task 16:")


def test_si_parse_task_list():
    raw = " Name three birds that cannot fly.\nTask 10:  Say hi.\nTask 11: Explain\n  tides to a child.\nTask 12:"
    got = si.parse_task_list(raw)
    assert [(c.instruction, c.position, c.reason) for c in got] == [
        ("Name three birds that cannot fly.", 0, None),
        ("Say hi.", 1, None),
        ("Explain tides to a child.", 2, None),
    ]
    cut = si.parse_task_list(raw.rsplit("\nTask 12:", 1)[0], finish_reason="length")
    assert [c.reason for c in cut] == [None, None, "truncated"]
    assert si.parse_task_list("") == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(" Yes", True), (" no.", False), ("YES, it is", True), (" Maybe", None), ("", None)],
)
def test_si_parse_classification(raw, expected):
    assert si.parse_classification(raw) is expected


def test_si_parse_example_both_formats():
    assert si.parse_example("Input: 2 + 2\nOutput: 4\n", False) == ("2 + 2", "4", "ok")
    assert si.parse_example("Output: line one\nline two", False) == ("", "line one\nline two", "ok")
    # a second example starts where a field repeats: its input is not taken
    assert si.parse_example("Output: 4\nInput: 3 + 3\nOutput: 6", False) == ("", "4", "ok")
    assert si.parse_example("Input: x\n", False) == (None, None, "no_output")
    assert si.parse_example("Output:   \n", False) == (None, None, "empty_output")
    assert si.parse_example("Class label: Positive\nInput: What a day!", True) == (
        "What a day!",
        "Positive",
        "ok",
    )
    assert si.parse_example("Input: What a day!", True) == (None, None, "no_label")
    assert si.parse_example("class label:\nInput: x", True) == (None, None, "empty_label")


def test_si_classification_and_instance_prompts(seeds):
    demos = si.classification_demos(seeds, 12, 0)
    assert len(demos) == 12 and sum(s.is_classification for s in demos) == 6
    p = si.classification_prompt("Decide if the review is positive.", demos)
    assert p.text.endswith("\nTask: Decide if the review is positive.\nClassification:")
    assert p.text.count("Classification: Yes") == 6 and p.text.count("Classification: No") == 6
    cls = si.instance_demos(seeds, True, 8, 0)
    other = si.instance_demos(seeds, False, 8, 0)
    assert all(s.is_classification for s in cls) and not any(s.is_classification for s in other)
    out_first = si.instance_prompt("Tell if the tweet is sarcastic.", cls, True)
    in_first = si.instance_prompt("Write a haiku about rain.", other, False)
    assert out_first.text.count("Class label: ") == 8 and "Output:" not in out_first.text
    assert in_first.text.count("Output: ") == 8 and "Class label" not in in_first.text
    assert out_first.text.endswith("\n\nTask: Tell if the tweet is sarcastic.\n")
    assert out_first.version != in_first.version
    first = cls[0]
    assert f"Task: {' '.join(first.instruction.split())}\nClass label: " in out_first.text


# ------------------------------------------------------------------------------------------
# Alpaca: prompt and parser


def test_alpaca_batch_prompt(seeds):
    p = al.batch_prompt(seeds, random.Random(3))
    assert p.text.endswith("\n###\n4. Instruction:")
    assert [int(n) for n in re.findall(r"(?m)^(\d+)\. Instruction:", p.text)] == [1, 2, 3, 4]
    assert len(p.meta["seed_ids"]) == 3 and p.meta["first_number"] == 4
    assert "Write 20 varied tasks" in p.text
    by_id = {s.id: s for s in seeds}
    for k, sid in enumerate(p.meta["seed_ids"], start=1):
        inp = by_id[sid].instances[0].input.strip()
        assert f"{k}. Input:\n{inp or al.NO_INPUT}\n{k}. Output:\n" in p.text
    assert al.batch_stops(20) == ("21. Instruction:",)


def test_alpaca_parse_tasks():
    raw = (
        " Convert the temperature from Celsius to Fahrenheit.\n4. Input:\n25 C\n4. Output:\n77 F\n"
        "###\n5. Instruction: Name a primary color.\n5. Input:\n<noinput>\n5. Output:\nRed\n"
        "###\n6. Instruction: Give a synonym for happy.\n6. Input:\n<noinput>\n"
        "###\nsome chatter\n###\n7. Instruction: Suggest a name for a cat.\n7. Input:\n"
        "<noinput>\n7. Output:\nWhisk"
    )
    got = al.parse_tasks(raw, 4)
    assert [(c.instruction, c.reason, c.fields["input"], c.fields["output"]) for c in got] == [
        ("Convert the temperature from Celsius to Fahrenheit.", None, "25 C", "77 F"),
        ("Name a primary color.", None, "", "Red"),
        ("Give a synonym for happy.", "no_output", "", None),
        ("", "malformed", "", None),
        ("Suggest a name for a cat.", None, "", "Whisk"),
    ]
    assert got[0].fields["block"].startswith("4. Instruction: Convert")
    assert al.parse_tasks(raw, 4, "length")[-1].reason == "truncated"


def test_method_options_are_validated():
    cfg = _cfg("self_instruct")
    cfg.method_options = {"num_seed_demoz": 3}
    with pytest.raises(ConfigError, match="num_seed_demoz"):
        si.stage1_instructions(_Ctx(cfg), None)
    cfg.method_options = {"tasks_per_call": 0}
    with pytest.raises(ConfigError, match="tasks_per_call"):
        si.stage1_instructions(_Ctx(cfg), None)
    cfg = _cfg("alpaca")
    cfg.method_options = {"num_seed_demos": 5, "tasks_per_call": 5}
    with pytest.raises(ConfigError, match="tasks_per_call"):
        al.stage1_instructions(_Ctx(cfg), None)


class _Ctx:
    def __init__(self, config):
        self.config = config


# ------------------------------------------------------------------------------------------
# end to end


@pytest.mark.parametrize("method", ["self_instruct", "alpaca"])
def test_full_run_files_filters_and_novelty(tmp_path, seeds, method):
    cfg = _cfg(method)
    backends = fake_backends(cfg)
    res = run(cfg, tmp_path, backends=backends, progress=False)
    assert res.manifest["status"] == "done"
    assert [p.name for p in tmp_path.glob("stage1_instructions_*.jsonl")] == [
        f"stage1_instructions_{GROUP}.jsonl"
    ]
    recs = read_jsonl(stage1_path(tmp_path, GROUP))
    assert all(set(r) >= EI_STAGE1_FIELDS for r in recs)
    acc = [r for r in recs if r["accepted"]]
    assert [r["id"] for r in acc] == [f"all-{i:05d}" for i in range(10)]  # 5 per type x 2 types
    for r in recs:  # round_size is what the round wrote
        assert r["round_size"] == sum(x["round"] == r["round"] for x in recs)
    reasons = {r["reason"] for r in recs if not r["accepted"]}
    assert "not_novel" in reasons and len(reasons - {"not_novel", "target_reached"}) >= 1
    assert reasons <= {
        "not_novel",
        "target_reached",
        "too_short",
        "keyword:draw",
        "keyword:map",
        "truncated",
        "no_output",
    }
    # the novelty decisions, recomputed directly: one pool of every seed + accepted so far
    pool = [s.instruction for s in seeds]
    for r in recs:
        if r["reason"] in ("target_reached", "truncated", "malformed", "no_output"):
            continue
        if instruction_rejection(r["instruction"]) is not None:
            assert r["reason"] == instruction_rejection(r["instruction"])
            continue
        best = max(rouge_l(r["instruction"], p) for p in pool)
        assert r["max_score"] == pytest.approx(best, abs=1e-12)
        assert r["accepted"] == (best <= 0.7)
        if r["accepted"]:
            pool.append(r["instruction"])
    # stage 2: the same record fields; the type follows the input
    inst = read_jsonl(tmp_path / STAGE2)
    assert [r["id"] for r in inst] == [r["id"] for r in acc]
    assert all(set(r) >= EI_STAGE2_FIELDS for r in inst)
    for r in inst:
        assert r["task_type"] == ("A" if r["input"] else "B")
    valid = [r for r in inst if r["valid"]]
    assert valid and {r["task_type"] for r in valid} == {"A", "B"}
    # stages 3-4 and the exports ran unchanged
    for name in ("x1", "x2"):
        assert len(read_jsonl(tmp_path / f"stage3_outputs_{name}.jsonl")) == len(valid)
    kept = read_jsonl(tmp_path / "ensembled.jsonl")
    assert kept and len(kept) + len(read_jsonl(tmp_path / "dropped.jsonl")) == len(valid)
    assert len(read_jsonl(tmp_path / "alpaca.jsonl")) == len(kept)
    tables = load_run(tmp_path)
    assert len(tables.instructions) == len(recs) and len(tables.instances) == len(inst)
    counts = res.counts
    assert counts["stage1"][GROUP]["accepted"] == 10
    assert sum(c["instructions"] for c in counts["stage2"].values()) == 10


def test_self_instruct_classification_routes_the_instance_prompt(tmp_path):
    cfg = _cfg("self_instruct")
    backends = fake_backends(cfg)
    run(cfg, tmp_path, backends=backends, progress=False, stages=(1, 2))
    inst = read_jsonl(tmp_path / STAGE2)
    cls_calls = [c for c in backends["gen"].calls if c.endswith("\nClassification:")]
    assert len(cls_calls) == len(inst)  # one classification question per instruction
    for r in inst:
        assert r["is_classification"] == (si.parse_classification(r["classification_raw"]) is True)
        expected = "output_first" if r["is_classification"] else "input_first"
        assert r["instance_format"] == expected
        assert r["prompt_version"] == si.VERSIONS[f"instance_{expected}"]
    assert {r["instance_format"] for r in inst} == {"output_first", "input_first"}
    # with classification off, no question is asked and every prompt is input-first
    cfg2 = _cfg("self_instruct")
    cfg2.method_options = {"classification": "none"}
    b2 = fake_backends(cfg2)
    run(cfg2, tmp_path / "off", backends=b2, progress=False, stages=(1, 2))
    assert not any(c.endswith("\nClassification:") for c in b2["gen"].calls)
    assert {r["instance_format"] for r in read_jsonl(tmp_path / "off" / STAGE2)} == {"input_first"}


def test_self_instruct_on_a_hand_scripted_lm(tmp_path):
    """One call, four candidates: a new one, a too-short one, a repeat of the first (not novel
    against the pool it just joined) and a truncated last one."""
    cfg = _cfg(
        "self_instruct",
        num_instructions=2,
        task_types=["A"],
        instruction={"prompts_per_round": 1, "max_rounds": 1},
    )
    cfg.method_options = {"num_seed_demos": 2, "num_generated_demos": 0}
    first = "Invent a tongue twister about purple penguins skating on ice."

    def stage1(prompt, params, index):
        text = f" {first}\nTask 4: Say hi.\nTask 5: {first}\nTask 6: Compose a limerick ab"
        return Generation(text, finish_reason="length")

    gen = ScriptedBackend(
        [
            (r"\nTask \d+:$", stage1),
            (r"\nClassification:$", " No"),
            (r"\nTask: .*\n$", "Input: penguins\nOutput: Purple penguins pirouette.\n"),
        ],
        model_id="gen",
    )
    backends = {**fake_backends(cfg), "gen": gen}
    run(cfg, tmp_path, backends=backends, progress=False, stages=(1, 2))
    recs = read_jsonl(stage1_path(tmp_path, GROUP))
    assert [(r["instruction"], r["reason"], r["accepted"]) for r in recs] == [
        (first, None, True),
        ("Say hi.", "too_short", False),
        (first, "not_novel", False),
        ("Compose a limerick ab", "truncated", False),
    ]
    assert recs[2]["max_score"] == 1.0 and recs[2]["most_similar"][0] == [first, 1.0]
    assert all(r["round_size"] == 4 and r["finish_reason"] == "length" for r in recs)
    assert gen.calls[0].endswith("\nTask 3:")  # 2 seed demos
    (inst,) = read_jsonl(tmp_path / STAGE2)
    assert (inst["task_type"], inst["input"], inst["output"]) == (
        "A",
        "penguins",
        "Purple penguins pirouette.",
    )


def test_alpaca_stage2_makes_no_call(tmp_path):
    cfg = _cfg("alpaca")
    backends = fake_backends(cfg)
    run(cfg, tmp_path, backends=backends, progress=False, stages=(1,))
    n = len(backends["gen"].calls)
    run(cfg, tmp_path, backends=backends, progress=False, stages=(2,))
    assert len(backends["gen"].calls) == n
    acc = {r["id"]: r for r in read_jsonl(stage1_path(tmp_path, GROUP)) if r["accepted"]}
    for r in read_jsonl(tmp_path / STAGE2):
        assert (r["input"], r["output"], r["raw"]) == (
            acc[r["id"]]["input"],
            acc[r["id"]]["output"],
            acc[r["id"]]["block"],
        )
        assert r["valid"] and r["prompt_version"] == al.VERSIONS["batch"]


@pytest.mark.parametrize("method", ["self_instruct", "alpaca"])
def test_rerun_makes_zero_calls_and_same_config_same_prompts(tmp_path, method):
    cfg = _cfg(method)
    first = fake_backends(cfg)
    run(cfg, tmp_path / "a", backends=first, progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "a").glob("*.jsonl")}
    again = fake_backends(cfg)
    res = run(cfg, tmp_path / "a", backends=again, progress=False)
    assert _calls(again) == 0 and res.manifest["cache"] == {"hits": 0, "misses": 0}
    assert {p.name: p.read_bytes() for p in (tmp_path / "a").glob("*.jsonl")} == before
    twin = fake_backends(cfg)
    run(cfg, tmp_path / "b", backends=twin, progress=False)
    assert twin["gen"].calls == first["gen"].calls
    assert (tmp_path / "b" / "ensembled.jsonl").read_bytes() == before["ensembled.jsonl"]
    other = fake_backends(cfg)
    run(_cfg(method, seed=1), tmp_path / "c", backends=other, progress=False)
    assert other["gen"].calls[0] != first["gen"].calls[0]


@pytest.mark.filterwarnings("ignore:.*discarding an incomplete last line")
@pytest.mark.parametrize("method", ["self_instruct", "alpaca"])
def test_partly_written_round_is_redone_from_cache(tmp_path, method):
    cfg = _cfg(method, num_instructions=12, instruction={"prompts_per_round": 2})
    run(cfg, tmp_path / "full", backends=fake_backends(cfg), progress=False, stages=(1,))
    full = stage1_path(tmp_path / "full", GROUP).read_text().splitlines(keepends=True)
    rounds = [json.loads(line)["round"] for line in full]
    assert max(rounds) >= 1, "the test needs two rounds"
    cut = rounds.index(1) + 2  # round 1 half written, then a torn line
    out = tmp_path / "killed"
    run(cfg, out, backends=fake_backends(cfg), progress=False, stages=(1,))
    path = stage1_path(out, GROUP)
    path.write_text("".join(full[:cut]) + full[cut][:15])
    again = fake_backends(cfg)
    run(cfg, out, backends=again, progress=False, stages=(1,))
    assert path.read_text().splitlines(keepends=True) == full
    assert _calls(again) == 0


@pytest.mark.parametrize("method", ["self_instruct", "alpaca"])
def test_budget_ends_stage1_that_yields_nothing(tmp_path, capsys, method):
    cfg = _cfg(method, num_instructions=2, instruction={"max_rounds": 3, "prompts_per_round": 2})
    useless = ScriptedBackend(lambda p, params, i: " Draw a map of the old city.", model_id="gen")
    backends = {**fake_backends(cfg), "gen": useless}
    res = run(cfg, tmp_path, backends=backends, progress=False)
    assert len(useless.calls) == 3 * 2  # rounds x prompts, one pool
    assert f"stage 1 ({method}): stopped after 3 rounds (the budget) with 0 of 4" in (
        capsys.readouterr().out
    )
    assert res.counts["stage1"][GROUP]["accepted"] == 0
    assert read_jsonl(tmp_path / "ensembled.jsonl") == []


def test_baselines_use_the_seeds_of_the_config_types(tmp_path, seeds):
    cfg = _cfg("alpaca", task_types=["B"])
    backends = fake_backends(cfg)
    run(cfg, tmp_path, backends=backends, progress=False, stages=(1,))
    b_ids = {s.id for s in split_by_type(seeds)["B"]}
    recs = read_jsonl(stage1_path(tmp_path, GROUP))
    assert all(set(r["demo_seed_ids"]) <= b_ids for r in recs)
    assert sum(r["accepted"] for r in recs) == 5  # num_instructions x one type
