"""Every bad input a user can give through a config or data file is ONE message naming the file,
the field and the fix, with no traceback, when run through the CLI.

The table holds the config text (``{d}`` is the case folder) and, per case, what the message must
name: the file, the field and a word of the fix. Each case runs in-process through `cli.main` (no
exception may escape) and, marked slow, as ``python -m ensemble_instruct_lib run`` in a subprocess
(stderr has no "Traceback" and one line).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ensemble_instruct_lib.cli import main

REPO = Path(__file__).resolve().parents[1]

# A generator that is never contacted: every case fails before any model call.
BASE = """name: bad
num_instructions: 1
generator: {kind: openai, model: m, name: g, options: {base_urls: "http://127.0.0.1:9"}}
extra_models: [{kind: openai, model: m2, name: e, options: {base_urls: "http://127.0.0.1:9"}}]
"""
GOOD_TASK = (
    '{"id": "a", "name": "x", "instruction": "Do it.", '
    '"instances": [{"input": "", "output": "y"}], "is_classification": false}'
)

# name -> (config text, extra files {name: text}, substrings the message must hold)
CASES: dict[str, tuple[str, dict[str, str], list[str]]] = {
    "unknown_top_key": (
        BASE + "nmu_instructions: 3\n",
        {},
        ["{cfg}", "nmu_instructions", "allowed"],
    ),
    "unknown_nested_key": (
        BASE + "instruction: {temprature: 0.5}\n",
        {},
        ["{cfg}", "instruction", "temprature", "allowed"],
    ),
    "wrong_type": (
        BASE.replace("num_instructions: 1", "num_instructions: ten"),
        {},
        ["{cfg}", "num_instructions", "expected an integer"],
    ),
    "bool_for_int": (BASE + "seed: true\n", {}, ["{cfg}", "seed", "expected an integer"]),
    "number_field": (
        BASE + "consensus: {threshold: high}\n",
        {},
        ["{cfg}", "consensus.threshold", "expected a number"],
    ),
    "bad_enum": (BASE + "consensus: {rule: median}\n", {}, ["{cfg}", "consensus.rule", "sum"]),
    "bad_method": (BASE + "method: foo\n", {}, ["{cfg}", "method", "self_instruct"]),
    "bad_model_kind": (
        BASE.replace("kind: openai, model: m,", "kind: gpt, model: m,"),
        {},
        ["{cfg}", "generator", "kind", "hf"],
    ),
    "missing_generator": ("name: x\n", {}, ["{cfg}", "generator", "missing"]),
    "null_generator": (
        "name: x\ngenerator: null\n",
        {},
        ["{cfg}", "generator", "expected a mapping"],
    ),
    "extra_models_not_a_list": (
        BASE.split("extra_models")[0] + "extra_models: {kind: hf}\n",
        {},
        ["{cfg}", "extra_models", "expected a list"],
    ),
    "bad_task_type": (BASE + "task_types: [C]\n", {}, ["{cfg}", "task_types", "A"]),
    "bad_num_demos": (
        BASE + "instance: {num_demos: {C: 3}}\n",
        {},
        ["{cfg}", "instance.num_demos", "A/B"],
    ),
    "method_options_unknown": (
        BASE + "method: self_instruct\nmethod_options: {foo: 1}\n",
        {},
        ["{cfg}", "method_options", "foo", "allowed"],
    ),
    "method_options_for_a_method_without": (
        BASE + "method_options: {foo: 1}\n",
        {},
        ["{cfg}", "method_options", "remove"],
    ),
    "bad_yaml": (BASE + "instruction: {a: [1, 2\n", {}, ["{cfg}", "line", "not valid YAML"]),
    "yaml_list_at_top": ("- a\n- b\n", {}, ["{cfg}", "top level", "mapping"]),
    "missing_config_file": ("", {}, ["not found", "nothing.yaml"]),
    "missing_seed_file": (
        BASE + "seed_file: {d}/nonexistent.jsonl\n",
        {},
        ["nonexistent.jsonl", "not found", "seed-task"],
    ),
    "missing_data_dir": (
        BASE + "data_dir: {d}/nodata\n",
        {},
        ["nodata", "not found", "fetch-data"],
    ),
    "malformed_jsonl_line": (
        BASE + "seed_file: {d}/seeds.jsonl\n",
        {"seeds.jsonl": GOOD_TASK + "\n{not json\n"},
        ["seeds.jsonl", "line 2", "JSON"],
    ),
    "seed_task_missing_field": (
        BASE + "seed_file: {d}/seeds.jsonl\n",
        {"seeds.jsonl": GOOD_TASK.replace('"instruction": "Do it.", ', "") + "\n"},
        ["seeds.jsonl", "line 1", "instruction"],
    ),
    "missing_model_path": (
        BASE.replace(
            "kind: openai, model: m, name: g, options: {base_urls: ", "kind: hf, "
        ).replace(
            'kind: hf, "http://127.0.0.1:9"}}', "kind: hf, model: {d}/no-such-model, name: g}"
        ),
        {},
        ["{cfg}", "generator.model", "no-such-model"],
    ),
}


def _case(tmp_path: Path, name: str) -> tuple[list[str], list[str]]:
    text, files, expect = CASES[name]
    d = tmp_path / "case"
    d.mkdir()
    for fname, content in files.items():
        (d / fname).write_text(content)
    cfg = d / ("nothing.yaml" if name == "missing_config_file" else "bad.yaml")
    if name != "missing_config_file":
        cfg.write_text(text.replace("{d}", str(d)))
    argv = ["run", "--config", str(cfg), "--out", str(tmp_path / "out"), "--no-progress"]
    return argv, [e.replace("{cfg}", str(cfg)) for e in expect]


def _check_message(err: str, expect: list[str]) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for e in expect:
        assert e.lower() in lines[0].lower(), f"{e!r} missing from: {lines[0]}"


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_message(name, tmp_path, capsys):
    argv, expect = _case(tmp_path, name)
    rc = main(argv)  # no exception may escape
    assert rc == 2
    out = capsys.readouterr()
    _check_message(out.err, expect)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [n for n in ("unknown_nested_key", "bad_yaml", "malformed_jsonl_line", "missing_model_path")],
)
def test_bad_input_through_the_cli_has_no_traceback(name, tmp_path):
    argv, expect = _case(tmp_path, name)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [sys.executable, "-m", "ensemble_instruct_lib", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert r.returncode == 2, r.stderr
    _check_message(r.stderr, expect)
