"""Instruction post-filters and the novelty filter (METHOD.md stage 1)."""

from __future__ import annotations

import numpy as np
import pytest
from rouge_score import rouge_scorer

from ensemble_instruct_lib.method.filters import NoveltyFilter, instruction_rejection


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Sort these numbers ascending.", None),
        ("Tell me a joke", "too_short"),  # 4 words pass; see below
        ("Sort numbers now", "too_short"),
        (" ".join(["word"] * 151), "too_long"),
        (" ".join(["word"] * 150), None),
        ("Describe the image in detail.", "keyword:image"),
        ("Summarize these FILES for me.", "keyword:files"),
        ("Please go to the store and buy milk.", "keyword:go to"),
        ("Plot the function y = x squared.", "keyword:plot"),
        ("Explain the mapping between the two sets.", None),  # 'map' only as a whole word
        ("Describe the graphic design trends.", None),
        ("Write a program that reverses a list.", "write_a_program"),
        ("write a program that reverses a list.", None),  # the check is case-sensitive
        ('"Quote" the first line of the poem.', "starts_with_punctuation"),
        ("Élaborez une liste de courses.", "starts_non_ascii"),
        ("", "empty"),
    ],
)
def test_instruction_rejection(text, reason):
    if text == "Tell me a joke":
        assert instruction_rejection(text) is None  # exactly 4 words is allowed
        return
    assert instruction_rejection(text) == reason


def test_novelty_filter_matches_rouge_score(data_root):
    from ensemble_instruct_lib.data.public import load_seed_tasks, split_by_type

    seeds = split_by_type(load_seed_tasks(data_root / "self_instruct" / "seed_tasks.jsonl"))
    pools = {t: [s.instruction for s in v] for t, v in seeds.items()}
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    cands = [
        pools["A"][0],  # identical to a seed: rejected
        pools["A"][1] + " Be brief.",
        "Compose a limerick about a cat who loves jazz music.",
    ]
    for with_mean in (True, False):
        f = NoveltyFilter(pools, with_mean=with_mean)
        for c in cands:
            exp = np.array([scorer.score(t, c)["rougeL"].fmeasure for t in pools["A"]])
            d = f.check(c, "A")
            assert d.max_score == exp.max()
            assert d.accepted == (exp.max() <= 0.7)
            assert d.reason == (None if d.accepted else "not_novel")
            if d.accepted:
                assert [s for _, s in d.most_similar] == sorted(exp, reverse=True)[:10]
                if with_mean:
                    assert d.mean_similarity == pytest.approx(exp.mean())
        # an accepted instruction joins its type's pool and blocks its near-duplicates
        f.add(cands[2], "A")
        assert not f.check("Compose a limerick about a cat who loves jazz.", "A").accepted
        assert f.check("Compose a limerick about a cat who loves jazz.", "B").accepted


def _seeds_users_and_recombinations(data_root, seed: int, n: int):
    """The seed instructions, the user-oriented ones, and candidates: the user-oriented ones
    then n recombinations of halves of two real instructions (many near-duplicates)."""
    import json
    import random

    si = data_root / "self_instruct"
    with open(si / "seed_tasks.jsonl") as f:
        seeds = [json.loads(line)["instruction"] for line in f if line.strip()]
    with open(si / "user_oriented_instructions.jsonl") as f:
        user = [json.loads(line)["instruction"] for line in f if line.strip()]
    rng = random.Random(seed)
    cands = list(user)
    for _ in range(n):
        a, b = rng.sample(seeds + user, 2)
        wa, wb = a.split(), b.split()
        cands.append(" ".join(wa[: len(wa) // 2] + wb[len(wb) // 2 :]))
    return seeds, user, cands


def test_growing_novelty_filter_equals_brute_force(data_root):
    """Build a novel set incrementally: every decision, maximum and top-10 list of the bounded
    search equals the brute-force one (every pair scored; rouge-score itself on a sample)."""
    import random

    from ensemble_instruct_lib.method.rouge import rouge_l_many

    seeds, user, cands = _seeds_users_and_recombinations(data_root, seed=0, n=150)
    cands += [seeds[3], seeds[3] + " Now.", "", "Ünïcödé text with émphasis and ＦＵＬＬ width"]
    random.Random(0).shuffle(cands)
    f = NoveltyFilter({"A": seeds}, with_mean=False)
    pool = list(seeds)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    accepted = 0
    for n, c in enumerate(cands):
        exp = rouge_l_many(c, pool)
        if n % 10 == 0:
            assert (exp == [scorer.score(p, c)["rougeL"].fmeasure for p in pool]).all()
        d = f.check(c, "A")
        assert d.max_score == exp.max()
        assert d.accepted == (exp.max() <= 0.7)
        if d.accepted:
            order = np.lexsort((np.arange(len(exp)), -exp))
            order = order[exp[order] > 0][:10]
            assert d.most_similar == [(pool[i], float(exp[i])) for i in order]
            f.add(c, "A")
            pool.append(c)
            accepted += 1
    assert 200 < accepted < len(cands)  # both outcomes occur


@pytest.mark.parametrize("with_mean", [False, True])
def test_add_novel_equals_check_then_add(data_root, with_mean):
    """The bulk call gives the decisions, maxima, lists and pool of checking and adding one
    text at a time (near-duplicates of each other inside one call included)."""
    seeds, user, cands = _seeds_users_and_recombinations(data_root, seed=1, n=120)
    cands += [user[5], user[5] + " Now.", ""]
    one = NoveltyFilter({"A": seeds[:60]}, with_mean=with_mean)
    expected = []
    for c in cands:
        d = one.check(c, "A")
        if d.accepted:
            one.add(c, "A")
        expected.append(d)
    bulk = NoveltyFilter({"A": seeds[:60]}, with_mean=with_mean)
    got = bulk.add_novel(cands, "A")
    assert got == expected
    assert bulk.pools["A"].texts == one.pools["A"].texts
    assert 0 < sum(not d.accepted for d in got) < len(cands)
