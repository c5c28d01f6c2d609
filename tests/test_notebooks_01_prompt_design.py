"""Notebook 01 (prompt design): its steps (the pipeline's own prompts, lengths, a probe judged by
the method's filters) and the notebook executed on the session's tiny GPT-2 (slow)."""

from __future__ import annotations

import random

import pandas as pd
import pytest
from notebook_checks import assert_png, executed, outputs_of_type

from ensemble_instruct_lib.data.public import load_seed_tasks, split_by_type
from ensemble_instruct_lib.engines.scripted import ScriptedBackend
from ensemble_instruct_lib.method.prompts import instruction_prompt
from ensemble_instruct_lib.nb.steps import configs, prompt_design
from ensemble_instruct_lib.runs import notebooks


def test_design_prompt_is_the_pipeline_prompt():
    seeds = load_seed_tasks()
    p = prompt_design.design_prompt(
        "instruction", "A", seeds, random_seed=3, generated=["Do x now."]
    )
    ref = instruction_prompt("A", split_by_type(seeds)["A"], ["Do x now."], random.Random(3))
    assert p.text == ref.text and p.meta == ref.meta
    inst = prompt_design.design_prompt(
        "instance", "B", seeds, num_instance_demos=2, instruction="Go."
    )
    assert inst.text.endswith("instruction: Go.\n") and len(inst.meta["seed_ids"]) == 2
    with pytest.raises(ValueError, match="stage"):
        prompt_design.design_prompt("output", "A", seeds)


def test_render_prompts_in_words(tmp_path):
    seeds = load_seed_tasks()
    cfg = configs.PromptDesignConfig(
        out_dir=str(tmp_path), num_seed=3, num_generated=1, num_instance_demos=2,
        instance_instructions={"A": "Do it.", "B": "Say it."},
    )  # fmt: skip
    table = prompt_design.render_prompts(seeds, cfg)
    assert list(zip(table["stage"], table["task_type"], strict=True)) == [
        ("instruction", "A"), ("instruction", "B"), ("instance", "A"), ("instance", "B"),
    ]  # fmt: skip
    assert (table["tokens"] == table["text"].str.split().str.len()).all()
    assert set(table["unit"]) == {"words"}
    assert table.loc[0, "demos"] == 4 and len(table.loc[0, "seed_ids"]) == 4  # 3 + 1 filling in
    overview = prompt_design.seed_overview(seeds)
    assert overview.set_index("task_type")["seeds"].to_dict() == {"A": 125, "B": 50}


def _probe_backend(stage1: str, stage2: str) -> ScriptedBackend:
    return ScriptedBackend([(r"\n\d+\.$", stage1), (r"instruction: .*\n$", stage2)])


@pytest.mark.parametrize(
    ("stage1", "stage2", "verdict1", "verdict2"),
    [
        (" Draw a picture of a cat. |EoS|", "input: a cat\noutput: a drawing\n|EoS|",
         "keyword:draw", "valid"),
        (" Estimate how many beekeepers live in a mid-sized coastal town.\n26. Count windows.",
         "output: 42\n|EoS|", "accepted", "no_input"),
        (" Give three examples of renewable energy sources. |EoS|", "input: x\noutput: \n|EoS|",
         "not_novel", "empty_output"),
    ],
)  # fmt: skip
def test_probe_backend_parses_and_judges(tmp_path, stage1, stage2, verdict1, verdict2):
    seeds = load_seed_tasks()
    seeds_a = [s.instruction for s in split_by_type(seeds)["A"]]
    if verdict1 == "not_novel":  # make the answer a copy of a real type-A seed
        stage1 = f" {seeds_a[0]} |EoS|"
    cfg = configs.PromptDesignConfig(
        out_dir=str(tmp_path), num_seed=4, num_generated=0, num_instance_demos=2,
        instance_instructions={"A": "Do it.", "B": "Say it."},
    )  # fmt: skip
    prompts = prompt_design.render_prompts(seeds, cfg)
    lm = _probe_backend(stage1, stage2)
    probe = prompt_design.probe_backend(lm, prompts, seeds, "A", max_new_tokens=32)
    assert list(probe["stage"]) == ["instruction", "instance"]
    assert list(probe["verdict"]) == [verdict1, verdict2]
    assert lm.calls == [prompts.loc[0, "text"], prompts.loc[2, "text"]]  # type A's two prompts
    if verdict1 == "accepted":
        assert probe.loc[0, "parsed"].startswith("Estimate how many")
        assert "2 instruction(s) parsed" in probe.loc[0, "detail"]
    if verdict2 == "valid":
        assert probe.loc[1, "parsed"] == "input: a cat\noutput: a drawing"
    assert prompt_design.probe_backend(None, prompts, seeds, "A").empty


@pytest.mark.slow
def test_notebook_01_prompt_design(tmp_path, tiny_gpt2_dir):
    out = tmp_path / "01"
    path = notebooks.run_notebook(
        "01_prompt_design",
        out,
        {
            "num_seed": 4,
            "num_generated": 1,
            "num_instance_demos": 3,
            "generated": ["Rewrite the sentence in the passive voice."],
            "tokenizer": str(tiny_gpt2_dir),
            "backend": {"kind": "hf", "model": str(tiny_gpt2_dir), "device": "cpu"},
            "max_new_tokens": 16,
        },
    )
    nb = executed(path)
    assert outputs_of_type(nb, "image/png") >= 1
    overview = pd.read_csv(out / "seed_overview.csv").set_index("task_type")
    assert overview["seeds"].to_dict() == {"A": 125, "B": 50}
    prompts = pd.read_csv(out / "prompts.csv")
    assert len(prompts) == 4 and set(prompts["unit"]) == {"tokens (gpt2)"}
    words = prompts["text"].str.split().str.len()
    assert (prompts["tokens"] > words).all()  # a 512-token BPE splits words
    assert prompts.query("stage == 'instruction'")["demos"].tolist() == [5, 5]
    assert prompts.query("stage == 'instance'")["demos"].tolist() == [3, 3]
    assert_png(out / "prompt_lengths.png")
    probe = pd.read_csv(out / "probe.csv", keep_default_na=False)
    assert probe["stage"].tolist() == ["instruction", "instance"]
    assert probe["verdict"].str.len().min() > 0
    assert probe.loc[1, "verdict"] in {"valid", "no_output", "no_input", "empty_output",
                                       "empty_input"}  # fmt: skip
