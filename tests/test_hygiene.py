"""Data hygiene: decontamination against evaluation sets and degenerate (looping) text.

Through the pipeline on scripted LMs: an exact copy and a paraphrase of user-oriented tasks
planted among stage-1 candidates are rejected with the items they match; a stage-2 output copying
a gold output is invalid (n-gram); a looping stage-2 output is invalid; a looping stage-3 output
is left out of stage 4; with ``decontaminate.sets: []`` and ``degenerate.enabled: false`` the
same run keeps them. The checks against brute force (rouge-score, n-gram sets), and hand-worked
cases of the repeat share.
"""

from __future__ import annotations

import json
import random
import re

import pytest
from rouge_score import rouge_scorer
from rouge_score import tokenize as rs_tokenize

from ensemble_instruct_lib.data.eval_sets import eval_set, user_oriented_items
from ensemble_instruct_lib.data.jsonl import read_jsonl
from ensemble_instruct_lib.data.public import load_seed_tasks, seed_tasks_path
from ensemble_instruct_lib.engines.scripted import ScriptedBackend
from ensemble_instruct_lib.errors import ConfigError
from ensemble_instruct_lib.method.decontaminate import Decontaminator, EvalText, eval_texts
from ensemble_instruct_lib.method.degenerate import degeneracy, is_degenerate, repeat_share
from ensemble_instruct_lib.method.run_files import stage1_path
from ensemble_instruct_lib.runs.config import load_config
from ensemble_instruct_lib.runs.pipeline import run
from ensemble_instruct_lib.runs.show import describe_run
from ensemble_instruct_lib.testing.fake import fake_answerer, fake_generator

BASE = {
    "name": "t",
    "generator": {"kind": "scripted", "model": "gen"},
    "extra_models": [{"kind": "scripted", "model": "x1"}, {"kind": "scripted", "model": "x2"}],
    "num_instructions": 4,
}

# ------------------------------------------------------------------------------------------
# the pipeline with planted copies


def _uo() -> dict[str, object]:
    return {it.id: it for it in user_oriented_items()}


EXACT = "user_oriented_task_2"  # "Rewrite the given text and correct grammar, ..." (11 words)
PARAPHRASED = "user_oriented_task_25"
PARAPHRASE = "Compose a LinkedIn post announcing that you have accepted a new job offer."
GOLD_COPY = "user_oriented_task_5"  # its 37-word gold output becomes a stage-2 output
LOOP = "Create a new document. " * 8


def _planted_backends():
    """The fake LMs of tests/test_pipeline.py, with plants: stage-1 samples 0 and 1 of every
    round-0 prompt set are the exact copy and the paraphrase; the first stage-2 instruction gets
    the gold output of GOLD_COPY, the second a loop; x1's first stage-3 answer is a loop."""
    items = _uo()
    gen = fake_generator("gen")
    seen2: list[str] = []
    seen3: list[str] = []

    def generator(prompt, params, index):
        if re.search(r"\n\d+\.$", prompt) and index in (0, 1):
            text = items[EXACT].instruction if index == 0 else PARAPHRASE
            return f" {text} |EoS|"
        if prompt.endswith("\n") and "\ninstruction: " in prompt:
            instruction = prompt.rstrip("\n").rsplit("\ninstruction: ", 1)[1]
            if instruction not in seen2:
                seen2.append(instruction)
            k = seen2.index(instruction)
            body = "input: a b c\n" if "\ninput:" in prompt else ""
            if k == 0:
                return f"{body}output: {items[GOLD_COPY].references[0]}\n|EoS|"
            if k == 1:
                return f"{body}output: {LOOP}\n|EoS|"
        return gen._fn(prompt, params, index)

    x1 = fake_answerer("x1")

    def answerer(prompt, params, index):
        if prompt not in seen3:
            seen3.append(prompt)
        if seen3.index(prompt) == 0:
            return " " + LOOP
        return x1._fn(prompt, params, index)

    return {
        "gen": ScriptedBackend(generator, model_id="gen"),
        "x1": ScriptedBackend(answerer, model_id="x1"),
        "x2": fake_answerer("x2"),
    }


def _records(out, t):
    return read_jsonl(stage1_path(out, t))


@pytest.fixture(scope="module")
def planted_runs(tmp_path_factory):
    on = tmp_path_factory.mktemp("on")
    off = tmp_path_factory.mktemp("off")
    run(load_config(BASE), on, backends=_planted_backends(), progress=False)
    cfg_off = load_config({**BASE, "decontaminate": {"sets": []}, "degenerate": {"enabled": False}})
    run(cfg_off, off, backends=_planted_backends(), progress=False)
    return on, off


def test_planted_copies_are_rejected_in_stage1_with_their_items(planted_runs):
    on, _ = planted_runs
    for t in ("A", "B"):
        recs = _records(on, t)
        bad = [r for r in recs if r["reason"] == "contaminated"]
        got = {r["instruction"]: r["contamination"] for r in bad}
        exact = _uo()[EXACT].instruction
        assert set(got) == {exact, PARAPHRASE}, t
        assert got[exact]["item"] == EXACT and got[exact]["set"] == "user_oriented"
        assert got[exact]["kind"] == "rouge_l" and got[exact]["score"] == 1.0
        assert got[PARAPHRASE]["item"] == PARAPHRASED and got[PARAPHRASE]["kind"] == "rouge_l"
        assert 0.7 < got[PARAPHRASE]["score"] < 1.0
        assert not any(r["accepted"] for r in bad)
        # never in the pool: no accepted instruction is a planted one
        assert not {r["instruction"] for r in recs if r["accepted"]} & {exact, PARAPHRASE}


def test_contaminated_and_looping_instances_are_invalid(planted_runs):
    on, _ = planted_runs
    inst = {r["id"]: r for r in read_jsonl(on / "stage2_instances.jsonl")}
    contaminated = [r for r in inst.values() if r["reason"] == "contaminated"]
    assert len(contaminated) == 1 and not contaminated[0]["valid"]
    c = contaminated[0]["contamination"]
    assert (c["set"], c["item"], c["kind"], c["field"]) == (
        "user_oriented",
        GOLD_COPY,
        "ngram",
        "output",
    )
    gold = _uo()[GOLD_COPY].references[0]
    assert c["eval_field"] == "output" and c["score"] == 1.0
    assert c["shared"] == len(_ngrams(gold, 13)) > 0
    loops = [r for r in inst.values() if r["reason"] == "degenerate"]
    assert len(loops) == 1 and loops[0]["degenerate_field"] == "output"
    assert loops[0]["repeat_share"] >= 0.5
    m = json.loads((on / "manifest.json").read_text())
    assert m["hygiene"]["stage1"]["contaminated"] == {"user_oriented": 4}
    assert m["hygiene"]["stage2"]["contaminated"] == {"user_oriented": 1}
    assert m["hygiene"]["stage2"]["degenerate"] == 1
    assert m["counts"]["stage1"]["A"]["rejected"]["contaminated"] == 2
    assert "contaminated" in m["counts"]["stage2"]["A"]["invalid"]


def test_a_looping_member_output_is_left_out_of_stage4(planted_runs):
    on, _ = planted_runs
    x1 = read_jsonl(on / "stage3_outputs_x1.jsonl")
    loop_id = x1[0]["id"]
    assert is_degenerate(x1[0]["output"])
    recs = {
        r["id"]: r for r in read_jsonl(on / "ensembled.jsonl") + read_jsonl(on / "dropped.jsonl")
    }
    r = recs[loop_id]
    assert r["missing_models"] == ["x1"] and r["missing_reasons"] == {"x1": "degenerate"}
    assert r["models"] == ["gen", "x2"] and LOOP.strip() not in r["candidates"]
    others = [v for k, v in recs.items() if k != loop_id]
    assert all(v["missing_models"] == [] for v in others)
    m = json.loads((on / "manifest.json").read_text())
    assert m["hygiene"]["stage3"]["x1"]["degenerate"] == 1
    assert m["hygiene"]["stage4"]["degenerate_left_out"] == {"x1": 1}
    text = describe_run(on, examples=0)
    assert "stage 1: 4 instructions rejected as contaminated" in text
    assert "stage 3 x1: 1 of" in text and "1 left out of stage 4" in text
    card = (on / "README.md").read_text()
    assert "## Hygiene" in card and "Decontaminated against user_oriented, superni" in card


def test_with_the_checks_off_the_plants_are_kept(planted_runs):
    _, off = planted_runs
    exact = _uo()[EXACT].instruction
    for t in ("A", "B"):
        acc = {r["instruction"] for r in _records(off, t) if r["accepted"]}
        assert {exact, PARAPHRASE} <= acc
    inst = read_jsonl(off / "stage2_instances.jsonl")
    assert not [r for r in inst if r["reason"] in ("contaminated", "degenerate")]
    gold = _uo()[GOLD_COPY].references[0]
    assert any(r["valid"] and r["output"] == gold for r in inst)
    assert any(r["valid"] and r["output"] == LOOP.strip() for r in inst)
    recs = read_jsonl(off / "ensembled.jsonl") + read_jsonl(off / "dropped.jsonl")
    assert all(r["missing_models"] == [] for r in recs)
    m = json.loads((off / "manifest.json").read_text())
    assert m["hygiene"]["decontaminate"]["sets"] == []
    assert m["hygiene"]["stage3"]["x1"]["degenerate"] == 1  # counted, not dropped


def test_config_sections_are_validated():
    with pytest.raises(ConfigError, match="unknown key"):
        load_config({**BASE, "decontaminate": {"ngrams": 13}})
    with pytest.raises(ConfigError, match="decontaminate.sets"):
        load_config({**BASE, "decontaminate": {"sets": ["mmlu"]}})
    with pytest.raises(ConfigError, match="degenerate.threshold"):
        load_config({**BASE, "degenerate": {"threshold": 0}})
    cfg = load_config(BASE)
    assert cfg.decontaminate.sets == ["user_oriented", "superni"] and cfg.decontaminate.ngram == 13
    assert cfg.degenerate.enabled


def test_superni_offline_is_references_only(data_root):
    items, note = eval_set("superni", data_root)
    assert len(items) == 11810 and "references only" in note
    assert all(not it.instruction and not it.input for it in items)


# ------------------------------------------------------------------------------------------
# the checks against brute force


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    t = rs_tokenize.tokenize(text, None)
    return {tuple(t[i : i + n]) for i in range(len(t) - n + 1)}


def _queries(rng: random.Random, pool: list[str], k: int) -> list[str]:
    """Recombined texts: halves of two pool texts, a pool text with words dropped, or a seed."""
    out = []
    for _ in range(k):
        a, b = rng.sample(pool, 2)
        wa, wb = a.split(), b.split()
        r = rng.random()
        if r < 0.4:
            out.append(" ".join(wa[: len(wa) // 2] + wb[len(wb) // 2 :]))
        elif r < 0.8:
            out.append(" ".join(w for w in wa if rng.random() > 0.15))
        else:
            out.append(" ".join(wb[::-1]))
    return out


@pytest.mark.parametrize("n", [4, 13])
def test_ngram_and_rouge_checks_match_brute_force(data_root, n):
    items = user_oriented_items()[:60]
    texts = eval_texts("user_oriented", items)
    dec = Decontaminator(texts, ngram=n, rouge_l=0.7)
    seeds = [s.instruction for s in load_seed_tasks(seed_tasks_path(data_root))]
    pool = [t.text for t in texts] + seeds
    rng = random.Random(n)
    queries = _queries(rng, pool, 300)
    eval_grams = set().union(*(_ngrams(t.text, n) for t in texts))
    instructions = [it.instruction for it in items]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    flagged = {"ngram": 0, "rouge": 0}
    for q in queries:
        shared = _ngrams(q, n) & eval_grams
        m = dec.ngram_match(q, "output")
        assert (m is not None) == bool(shared), q
        if m is not None:
            flagged["ngram"] += 1
            assert m.shared == len(shared)
            assert m.score == len(shared) / len(_ngrams(q, n))
            assert any(_ngrams(q, n) & _ngrams(t.text, n) for t in texts if t.item == m.item)
        best = max(scorer.score(ref, q)["rougeL"].fmeasure for ref in instructions)
        r = dec.rouge_match(q)
        assert (r is not None) == (best > 0.7), q
        if r is not None:
            flagged["rouge"] += 1
            assert r.score == best
            item = next(it for it in items if it.id == r.item)
            assert scorer.score(item.instruction, q)["rougeL"].fmeasure == best
    assert flagged["ngram"] >= 20 and flagged["rouge"] >= 20  # both sides of each rule seen


def test_min_shared_and_short_texts():
    dec = Decontaminator(
        [EvalText("s", "i1", "output", " ".join(f"w{k}" for k in range(20)))], ngram=5, min_shared=3
    )
    assert dec.ngram_match("w0 w1 w2 w3 w4") is None  # one shared 5-gram < 3
    m = dec.ngram_match("x w0 w1 w2 w3 w4 w5 w6 y")
    assert m is not None and m.shared == 3 and m.item == "i1" and m.score == 3 / 5
    assert dec.ngram_match("w0 w1 w2") is None  # shorter than n: no n-gram
    assert dec.check("W0, w1! w2 w3 w4 w5 w6") is not None  # case and punctuation do not hide it
    assert dec.rouge_match("anything") is None  # no evaluation instruction


# ------------------------------------------------------------------------------------------
# the degenerate criterion, by hand


def test_repeat_share_hand_worked():
    assert repeat_share("a b c d e a b c d e") == 0.5  # the second half repeats the first
    assert is_degenerate("a b c d e a b c d e")
    assert repeat_share("x x x x x x x x x x") == 0.9  # every position after the first
    assert repeat_share("one two three four five six seven eight nine ten") == 0.0
    assert repeat_share("a b c d e a b c d") == 0.0 and not is_degenerate("a b c d e a b c d")
    # 11 tokens, one repeated 5-gram at the end: 5 of 11 covered
    assert repeat_share("a b c d e f a b c d e") == 5 / 11
    assert not is_degenerate("a b c d e f a b c d e")
    d = degeneracy(LOOP)
    assert d.degenerate and d.tokens == 32 and d.share == 28 / 32
    assert not is_degenerate("")
    assert not is_degenerate(None)
    # a numbered list repeating one item: the numbers break no 5-gram of the item
    listed = " ".join(f"{k}. Create a new empty document now." for k in range(1, 6))
    assert is_degenerate(listed)
    # thresholds and n are parameters
    assert not is_degenerate("a b c d e a b c d e", threshold=0.6)
    assert is_degenerate("a b a b", n=2)


def test_no_gold_or_seed_output_is_degenerate(data_root):
    gold = [it.references[0] for it in user_oriented_items()]
    seeds = [i.output for s in load_seed_tasks(seed_tasks_path(data_root)) for i in s.instances]
    assert len(gold) == 252 and not [g for g in gold if is_degenerate(g)]
    assert not [s for s in seeds if is_degenerate(s)]
