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
