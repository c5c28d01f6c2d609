"""Prompt builders: structure, demo counts, determinism, versions (METHOD.md stages 1-3)."""

from __future__ import annotations

import random
import re

import pytest

from ensemble_instruct_lib import ConfigError
from ensemble_instruct_lib.data.public import load_seed_tasks, split_by_type
from ensemble_instruct_lib.method.prompts import (
    END,
    KIT,
    PROMPT_SETS,
    SET_VERSIONS,
    VERSIONS,
    clean_instruction,
    get_prompt_set,
    instance_demos,
    instance_prompt,
    instruction_prompt,
    output_prompt,
    zero_shot_output_prompt,
)


@pytest.fixture(scope="module")
def seeds(data_root):
    return split_by_type(load_seed_tasks(data_root / "self_instruct" / "seed_tasks.jsonl"))


def _numbered(text):
    return re.findall(r"(?m)^(\d+)\. (.*) \|EoS\|$", text)


@pytest.mark.parametrize(("task_type", "n_seed", "n_gen"), [("A", 20, 4), ("B", 8, 2)])
def test_instruction_prompt_defaults(seeds, task_type, n_seed, n_gen):
    generated = [f"Generated task number {i} for type {task_type}." for i in range(10)]
    p = instruction_prompt(task_type, seeds[task_type], generated, random.Random(1))
    demos = _numbered(p.text)
    assert [int(n) for n, _ in demos] == list(range(1, n_seed + n_gen + 1))
    assert p.text.endswith(f"\n{n_seed + n_gen + 1}.")
    assert sum(d.startswith("Generated task") for _, d in demos) == n_gen
    assert p.meta["num_seed"] == n_seed and p.meta["num_generated"] == n_gen
    assert len(p.meta["seed_ids"]) == n_seed
    assert p.version == VERSIONS["instruction"]
    seed_text = {clean_instruction(s.instruction) for s in seeds[task_type]}
    assert all(d in seed_text for _, d in demos if not d.startswith("Generated task"))


def test_seeds_fill_in_for_missing_generated(seeds):
    p = instruction_prompt("A", seeds["A"], ["Only one generated task here."], random.Random(0))
    assert p.meta == {**p.meta, "num_seed": 23, "num_generated": 1}
    assert len(_numbered(p.text)) == 24
    p = instruction_prompt("B", seeds["B"], [], random.Random(0), num_seed=6, num_generated=4)
    assert p.meta["num_seed"] == 10 and len(_numbered(p.text)) == 10


def test_instruction_prompt_is_deterministic_and_shuffled(seeds):
    a = instruction_prompt("A", seeds["A"], ["x y z w"], random.Random(5)).text
    b = instruction_prompt("A", seeds["A"], ["x y z w"], random.Random(5)).text
    c = instruction_prompt("A", seeds["A"], ["x y z w"], random.Random(6)).text
    assert a == b and a != c
    positions = {
        _numbered(instruction_prompt("A", seeds["A"], ["x y z w"], random.Random(s)).text).index(
            next(
                d
                for d in _numbered(
                    instruction_prompt("A", seeds["A"], ["x y z w"], random.Random(s)).text
                )
                if d[1] == "x y z w"
            )
        )
        for s in range(8)
    }
    assert len(positions) > 1  # the generated demo is not always in the same place


def test_instruction_prompt_rejects_wrong_type(seeds):
    with pytest.raises(ValueError, match="another type"):
        instruction_prompt("A", seeds["B"], [], random.Random(0))
    with pytest.raises(ValueError, match="task_type"):
        instruction_prompt("C", seeds["A"], [], random.Random(0))


def test_clean_instruction():
    assert clean_instruction("  Sort   these\n numbers:  ") == "Sort these numbers"
    assert clean_instruction("Answer:") == "Answer"


@pytest.mark.parametrize(("task_type", "n"), [("A", 18), ("B", 15)])
def test_instance_prompt(seeds, task_type, n):
    demos = instance_demos(task_type, seeds[task_type], None, seed=3)
    assert len(demos) == n and all(d.task_type == task_type for d in demos)
    assert demos == instance_demos(task_type, seeds[task_type], None, seed=3)
    assert demos != instance_demos(task_type, seeds[task_type], None, seed=4)
    p = instance_prompt("Summarize the  paragraph:", task_type, demos)
    assert p.text.endswith("\n\ninstruction: Summarize the paragraph\n")
    assert p.text.count(END) == n
    assert p.text.count("\ninstruction: ") == n + 1
    assert ("\ninput: " in p.text) == (task_type == "A")
    assert p.text.count("\noutput: ") == n
    # demos are built from the seed data, not from text in the code
    for d in demos:
        assert d.instances[0].output.strip() in p.text
    assert p.version == VERSIONS["instance"]
    assert p.meta["seed_ids"] == [d.id for d in demos]


def test_output_prompts(seeds):
    assert zero_shot_output_prompt(" Add the numbers. ", " 2, 3 ") == "Add the numbers.\n2, 3"
    assert zero_shot_output_prompt("Tell me a joke.", "") == "Tell me a joke."
    p = output_prompt("Add the numbers.", "2, 3")
    assert p.text == "Add the numbers.\n2, 3" and p.version == VERSIONS["output_zero_shot"]
    demos = instance_demos("A", seeds["A"], 3, seed=0)
    fs = output_prompt("Add the numbers.", "2, 3", style="few_shot", demos=demos)
    assert fs.text.endswith("instruction: Add the numbers.\ninput: 2, 3\noutput:")
    assert fs.text.count(END) == 3 and fs.version == VERSIONS["output_few_shot"]
    demos_b = instance_demos("B", seeds["B"], 2, seed=0)
    fsb = output_prompt("Tell me a joke.", "", style="few_shot", demos=demos_b)
    assert fsb.text.endswith("instruction: Tell me a joke.\noutput:") and "\ninput:" not in fsb.text
    with pytest.raises(ValueError, match="demonstrations"):
        output_prompt("x", "y", style="few_shot")


def test_kit_set_is_the_module_builders(seeds):
    assert PROMPT_SETS == ("kit", "reference") and SET_VERSIONS["kit"] == VERSIONS
    assert get_prompt_set("kit") is KIT and KIT.versions == VERSIONS
    a = KIT.instruction_prompt("A", seeds["A"], ["Plan a trip."], random.Random(3))
    b = instruction_prompt("A", seeds["A"], ["Plan a trip."], random.Random(3))
    assert a == b
    demos = instance_demos("B", seeds["B"], None, 0)
    assert KIT.instance_prompt("Tell a joke.", "B", demos) == instance_prompt(
        "Tell a joke.", "B", demos
    )
    assert KIT.output_prompt("Add.", "1, 2") == output_prompt("Add.", "1, 2")


def test_unknown_prompt_set_names_the_choices():
    with pytest.raises(ConfigError, match=r"\['kit', 'reference'\].*'authors'"):
        get_prompt_set("authors")
