"""The `reference` prompt set: the authors' text byte for byte, read from their pinned files.

The expected strings are assembled here from literals pulled out of the authors' files with a
separate, deliberately plain `ast` walk (not `data.reference`'s parser), following the authors'
code: `encode_prompt` for stage 1, the template plus " " + instruction + "\\n" for stage 2
(SOURCE.md), the `prompts = [...]` expression for stage 3. No template text is written here.
"""

from __future__ import annotations

import ast
import json
import random
import re
import shutil
from pathlib import Path

import pytest

from ensemble_instruct_lib import ConfigError, DataError, load_seed_tasks
from ensemble_instruct_lib.data.jsonl import read_jsonl
from ensemble_instruct_lib.data.public import REFERENCE_FILES
from ensemble_instruct_lib.data.reference import (
    fetch_reference,
    load_reference,
    parse_stage1,
    parse_stage3,
    verify_reference,
)
from ensemble_instruct_lib.method.prompts import (
    SET_VERSIONS,
    ReferencePromptSet,
    get_prompt_set,
    instruction_prompt,
    pick_instruction_demos,
)
from ensemble_instruct_lib.method.run_files import stage1_path, stage3_path
from ensemble_instruct_lib.runs.config import load_config
from ensemble_instruct_lib.runs.pipeline import run
from ensemble_instruct_lib.testing.fake import fake_backends

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def authors(data_root):
    """Literals of the authors' files, found by a plain walk of each syntax tree."""
    base = data_root / "ensemble_instruct" / "ensemble_instruct"
    fn = next(
        n
        for n in ast.walk(ast.parse((base / "gen_instructions.py").read_text()))
        if isinstance(n, ast.FunctionDef) and n.name == "encode_prompt"
    )
    assigns = [n for n in ast.walk(fn) if isinstance(n, ast.Assign)]
    header = assigns[0].value.value
    cleaning = next(n for n in assigns if n.targets[0].id == "instruction").value
    rstrip_chars = cleaning.args[0].value
    sub = cleaning.func.value.func.value  # re.sub(pattern, repl, instruction)
    pattern, repl = sub.args[0].value, sub.args[1].value
    fstrings = sorted(
        (n for n in ast.walk(fn) if isinstance(n, ast.JoinedStr)), key=lambda n: n.lineno
    )
    line_consts = [v.value for v in fstrings[0].values if isinstance(v, ast.Constant)]
    next_consts = [v.value for v in fstrings[1].values if isinstance(v, ast.Constant)]
    templates = {
        n.targets[0].id: n.value.value
        for n in ast.parse((base / "templates" / "instance_template.py").read_text()).body
        if isinstance(n, ast.Assign)
    }
    zs = next(
        n.value.elt
        for n in ast.walk(ast.parse((base / "gen_output_zeroshot.py").read_text()))
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "prompts"
    )
    return {
        "header": header,
        "clean": lambda s: re.sub(pattern, repl, s).strip().rstrip(rstrip_chars),
        "after_number": line_consts[0],
        "end_of_line": line_consts[1],
        "next_suffix": next_consts[0],
        "A": templates["input_output_template"],
        "B": templates["output_template"],
        "zs_sep": zs.left.right.value,  # (instruction.strip() + SEP) + input.strip()
    }


def _authors_stage1(a, demos):
    text = a["header"]
    for idx, d in enumerate(demos):
        text += f"{idx + 1}{a['after_number']}{a['clean'](d)}{a['end_of_line']}"
    return text + f"{len(demos) + 1}{a['next_suffix']}"


@pytest.fixture(scope="module")
def ref():
    return get_prompt_set("reference")


@pytest.fixture(scope="module")
def seeds(data_root):
    return load_seed_tasks(data_root / "self_instruct" / "seed_tasks.jsonl")


def test_stage1_reference_text_byte_for_byte(ref, authors, seeds):
    demos = [s.instruction for s in seeds[:20]] + [
        "  Give   three\treasons\nfor it::",
        "Name a colour :",
        "Rewrite the text.",
    ]
    for t in ("A", "B"):  # the authors use one header for both types
        assert ref.instruction_text(t, demos) == _authors_stage1(authors, demos)
    assert ref.instruction_text("A", demos[-2:]).endswith(f"3{authors['next_suffix']}")


def test_stage1_reference_samples_the_kits_demo_list(ref, authors, seeds):
    pool = [s for s in seeds if s.task_type == "B"]
    generated = ["Plan a week of dinners for two.", "Summarize the plot of a film:"]
    p = ref.instruction_prompt("B", pool, generated, random.Random(7), 6, 4)
    demos = pick_instruction_demos("B", pool, generated, random.Random(7), 6, 4)
    kit = instruction_prompt("B", pool, generated, random.Random(7), 6, 4)
    assert p.text == _authors_stage1(authors, [d for _, d in demos])
    assert p.meta == kit.meta and p.meta["num_generated"] == 2
    assert p.version == SET_VERSIONS["reference"]["instruction"] != kit.version


def test_stage2_reference_is_one_fixed_text_per_type(ref, authors):
    for t in ("A", "B"):
        a = ref.instance_prompt("Write a haiku about rain.", t, ())
        b = ref.instance_prompt("List  two   prime numbers.", t, ())
        assert a.text == authors[t] + " " + "Write a haiku about rain." + "\n"
        assert b.text == authors[t] + " " + "List two prime numbers." + "\n"
        assert a.text.startswith(ref.instance_prefix(t)) and b.text.startswith(authors[t])
        assert a.version == SET_VERSIONS["reference"]["instance"]
    assert authors["A"] != authors["B"]


def test_stage3_zero_shot_reference_keeps_the_newline(ref, authors):
    p = ref.output_prompt(" Name a fruit. ", "", style="zero_shot")
    assert p.text == "Name a fruit." + authors["zs_sep"]
    q = ref.output_prompt("Translate to French.", " good morning ", style="zero_shot")
    assert q.text == "Translate to French." + authors["zs_sep"] + "good morning"
    assert p.version == SET_VERSIONS["reference"]["output_zero_shot"]
    assert get_prompt_set("kit").output_prompt(" Name a fruit. ", "").text == "Name a fruit."


def test_stage3_few_shot_reference_fills_the_stage2_text(ref, authors):
    p = ref.output_prompt("Sort the list.", "3, 1, 2", style="few_shot", task_type="A")
    assert p.text == authors["A"] + " Sort the list.\ninput: 3, 1, 2\noutput:"
    q = ref.output_prompt("Tell a joke.", "", style="few_shot")
    assert q.text == authors["B"] + " Tell a joke.\noutput:"


def test_versions_say_which_set():
    kit, ref = SET_VERSIONS["kit"], SET_VERSIONS["reference"]
    assert set(kit) == set(ref) and not set(kit.values()) & set(ref.values())
    assert all(v.startswith("ref-c65b4c5-") for v in ref.values())


def test_missing_and_tampered_files_are_clear_errors(tmp_path, data_root):
    src = data_root / "ensemble_instruct"
    folder = tmp_path / "authors"
    shutil.copytree(src, folder)
    assert isinstance(get_prompt_set("reference", folder=folder), ReferencePromptSet)
    target = folder / "ensemble_instruct" / "templates" / "instance_template.py"
    target.write_text(target.read_text() + "\n# edited\n")
    with pytest.raises(DataError, match=r"instance_template\.py.*sha256.*fetch-data --force"):
        load_reference(folder)
    target.unlink()
    with pytest.raises(DataError, match=r"instance_template\.py.*missing.*fetch-data"):
        load_reference(folder)
    with pytest.raises(DataError, match="fetch-data"):
        load_reference(root=tmp_path / "empty")


def test_unexpected_file_structure_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="encode_prompt"):
        parse_stage1("def encode_prompt(x):\n    return x\n", tmp_path / "g.py")
    with pytest.raises(DataError, match="zero-shot"):
        parse_stage3("prompts = [d['instruction'] for d in batch]\n", tmp_path / "z.py")


def test_fetch_reference_copies_and_downloads_with_sha256(tmp_path, data_root):
    res = fetch_reference(tmp_path / "a", source=data_root)
    assert set(res.values()) == {"copied"} and len(res) == 3
    assert set(verify_reference(tmp_path / "a").values()) == {"ok"}
    assert load_reference(root=tmp_path / "a").instance.keys() == {"A", "B"}

    by_url = {f.url: data_root / f.local for f in REFERENCE_FILES}

    def download(url, path):
        shutil.copyfile(by_url[url], path)
        if url.endswith("gen_output_zeroshot.py"):
            with open(path, "ab") as f:
                f.write(b"#")

    with pytest.raises(DataError, match="sha256"):
        fetch_reference(tmp_path / "b", download=download)
    status = verify_reference(tmp_path / "b")
    assert sorted(status.values()) == ["missing", "ok", "ok"]


def test_config_prompts_field():
    base = {"generator": {"kind": "scripted", "model": "g"}}
    assert load_config(base).prompts == "kit"
    assert load_config({**base, "prompts": "reference"}).prompts == "reference"
    with pytest.raises(ConfigError, match=r"prompts must be one of \['kit', 'reference'\]"):
        load_config({**base, "prompts": "authors"})
    assert load_config(REPO / "configs" / "paper.yaml").prompts == "reference"


def test_fixed_seed_run_with_reference_prompts_records_them(tmp_path, authors):
    cfg = load_config(
        {
            "name": "ref",
            "prompts": "reference",
            "generator": {"kind": "scripted", "model": "gen"},
            "extra_models": [
                {"kind": "scripted", "model": "x1"},
                {"kind": "scripted", "model": "x2"},
            ],
            "num_instructions": 4,
        }
    )
    backends = fake_backends(cfg)
    run(cfg, tmp_path, backends=backends, progress=False)
    ref = SET_VERSIONS["reference"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["prompt_versions"] == ref and manifest["config"]["prompts"] == "reference"
    for t in ("A", "B"):
        recs = read_jsonl(stage1_path(tmp_path, t))
        assert sum(r["accepted"] for r in recs) == 4
        assert {r["prompt_version"] for r in recs} == {ref["instruction"]}
    stage2 = read_jsonl(tmp_path / "stage2_instances.jsonl")
    assert {r["prompt_version"] for r in stage2} == {ref["instance"]}
    assert sum(r["valid"] for r in stage2) > 0
    for name in ("x1", "x2"):
        assert {r["prompt_version"] for r in read_jsonl(stage3_path(tmp_path, name))} == {
            ref["output_zero_shot"]
        }
    gen_calls = backends["gen"].calls
    assert all(c.startswith(authors["header"]) for c in gen_calls if c.endswith("."))
    stage2_calls = [c for c in gen_calls if c.endswith("\n")]
    assert stage2_calls and all(c.startswith((authors["A"], authors["B"])) for c in stage2_calls)


def test_resume_refuses_another_prompt_set_and_accepts_older_manifests(tmp_path):
    base = {
        "name": "r",
        "generator": {"kind": "scripted", "model": "gen"},
        "num_instructions": 2,
        "task_types": ["B"],
    }
    cfg = load_config(base)
    run(cfg, tmp_path, backends=fake_backends(cfg), progress=False, stages=(1,))
    manifest = tmp_path / "manifest.json"
    m = json.loads(manifest.read_text())
    del m["config"]["prompts"], m["config"]["instruction"]["min_new_tokens"]  # an older run
    manifest.write_text(json.dumps(m))
    run(cfg, tmp_path, backends=fake_backends(cfg), progress=False, stages=(1,))
    ref = load_config({**base, "prompts": "reference"})
    with pytest.raises(ConfigError, match="different prompts"):
        run(ref, tmp_path, backends=fake_backends(ref), progress=False, stages=(1,))
