"""The rule-based verb-noun extraction and the diversity statistics, on hand-worked cases."""

from __future__ import annotations

import pandas as pd
import pytest

from ensemble_instruct_lib.data.public import load_seed_tasks
from ensemble_instruct_lib.method.diversity import (
    distinct_ngrams,
    diversity_summary,
    singular,
    top_verb_nouns,
    verb_noun,
    verb_noun_frame,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Write a short story about a dog.", ("write", "story")),
        ("Make a grocery list for a healthy meal.", ("make", "list")),  # head of the compound
        ("Brainstorm a list of possible New Year's resolutions.", ("brainstorm", "list")),
        ("Give me a joke about PhD.", ("give", "joke")),  # "me" is not the object
        ("Find the four smallest perfect numbers.", ("find", "number")),  # plural -> singular
        ("Given a list of numbers, find the largest one.", ("find", "largest")),
        ("You are given a story. Summarize it in one sentence.", ("summarize", None)),
        ("Explain why the sky is blue.", ("explain", None)),
        ("What is the capital of France?", (None, None)),
        ("Please briefly describe the water cycle.", ("describe", "cycle")),
        ("Can you give me some suggestions?", ("give", "suggestion")),
        ("You need to write a creative opening scene.", ("write", "scene")),
        ("Come up with a metaphor for time.", ("come", "metaphor")),
        ("Reply to the email politely.", ("reply", None)),
        ("Generate a response given the chat history.", ("generate", "response")),
        ("Suggest some games that can be played by a group.", ("suggest", "game")),
        ("", (None, None)),
    ],
)
def test_verb_noun_hand_cases(text, expected):
    assert verb_noun(text) == expected


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("stories", "story"),
        ("boxes", "box"),
        ("words", "word"),
        ("analysis", "analysis"),
        ("bias", "bias"),
        ("news", "news"),
        ("gas", "gas"),
        ("cat", "cat"),
    ],
)
def test_singular(word, expected):
    assert singular(word) == expected


def test_top_verb_nouns_counts_and_ties():
    frame = verb_noun_frame(
        [
            "Write a poem about rain.",
            "Write a poem about snow.",
            "Write a letter to a friend.",
            "List three colors.",
            "List the planets.",
            "Describe a sunset.",
            "What is love?",
        ]
    )
    top = top_verb_nouns(frame, top_verbs=2, top_nouns=1)
    assert top.to_dict("records") == [
        {"verb": "write", "noun": "poem", "count": 2, "verb_count": 3},
        {"verb": "list", "noun": "color", "count": 1, "verb_count": 2},  # tie: alphabetical
    ]
    assert top_verb_nouns(pd.DataFrame(columns=["verb", "noun"])).empty


def test_distinct_ngrams_by_hand():
    texts = ["a b a", "b a"]  # unigrams a b a b a: 2 distinct of 5; bigrams ab ba ba: 2 of 3
    assert distinct_ngrams(texts, 1) == pytest.approx(2 / 5)
    assert distinct_ngrams(texts, 2) == pytest.approx(2 / 3)
    assert distinct_ngrams([], 2) == 0.0


def test_diversity_summary_by_hand():
    s = diversity_summary(
        ["Write a poem.", "Write a song about cats.", "Sing a song.", "Why is it so?"]
    )
    assert s["instructions"] == 4
    assert s["with_verb"] == 0.75 and s["with_pair"] == 0.75
    assert s["distinct_verbs"] == 2 and s["distinct_pairs"] == 3
    assert s["top_verb"] == "write" and s["top_verb_share"] == pytest.approx(2 / 3)
    assert s["verbs_per_100"] == 50.0
    empty = diversity_summary([])
    assert empty["instructions"] == 0 and empty["top_verb"] is None


def test_seed_instructions_mostly_parse():
    """On the 175 real seeds the heuristic finds a verb for most and common verbs lead."""
    s = diversity_summary([t.instruction for t in load_seed_tasks()])
    assert s["with_verb"] > 0.85 and s["with_pair"] > 0.7
    assert s["top_verb"] == "write"
