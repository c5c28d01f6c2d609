"""One builder for run and fine-tuning configs (`data.config_builder`): a bad value names the
file, the line of its key, the field and what to do."""

from __future__ import annotations

import pytest

from ensemble_instruct_lib.data.config_builder import FieldError, read_mapping
from ensemble_instruct_lib.runs.config import load_config
from ensemble_instruct_lib.train.finetune import FinetuneConfig

RUN = """name: x
generator: {kind: scripted, model: g}
extra_models:
  - {kind: scripted, model: e1}
  - {kind: gpt, model: e2}
instruction:
  temperature: 0.5
  prompts_per_round: 0
"""


def _error(fn, *args, **kwargs) -> FieldError:
    with pytest.raises(FieldError) as e:
        fn(*args, **kwargs)
    return e.value


def test_a_bad_run_config_value_names_file_line_and_field(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text(RUN)
    e = _error(load_config, p)
    assert (e.file, e.line, e.field) == (str(p), 5, "extra_models[1].kind")
    assert str(e).startswith(f"{p}, line 5: extra_models[1].kind: model kind must be one of")
    p.write_text(RUN.replace("kind: gpt", "kind: hf"))
    e = _error(load_config, p)
    assert str(e) == f"{p}, line 8: instruction.prompts_per_round must be >= 1"
    e = _error(load_config, p, instruction={"temperature": "hot"})  # an override: no line
    assert str(e) == f"{p}: instruction.temperature: expected a number, got 'hot'"
    p.write_text(
        RUN.replace("kind: gpt", "kind: hf").replace("prompts_per_round: 0", "temprature: 1")
    )
    e = _error(load_config, p)
    assert e.line == 8 and "instruction: unknown key(s) ['temprature']; allowed:" in str(e)


def test_a_bad_finetune_config_value_names_file_line_and_field(tmp_path):
    p = tmp_path / "ft.yaml"
    p.write_text("model: m\ndata: d.jsonl\nrun_dir: r\nlearning_rate: 2e-5\nwarmup_ratio: 1.5\n")
    e = _error(FinetuneConfig.from_yaml, p)
    assert (e.file, e.line, e.field) == (str(p), 5, "warmup_ratio")
    assert str(e) == f"{p}, line 5: warmup_ratio must be in [0, 1), got 1.5"
    assert FinetuneConfig.from_yaml(p, warmup_ratio=0.1).learning_rate == 2e-5
    e = _error(FinetuneConfig.from_yaml, p, warmup_ratio="x")
    assert str(e) == f"{p}: warmup_ratio: expected a number, got 'x'"
    with pytest.raises(FieldError, match="resume: expected true or false"):
        FinetuneConfig(model="m", data="d", run_dir="r", resume="yes")


def test_key_lines_follow_nesting_and_lists(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("a:\n  b:\n    - x\n    - {c: 1}\nd: 2\n")
    data, source = read_mapping(p, "a, d", "nothing")
    assert data == {"a": {"b": ["x", {"c": 1}]}, "d": 2}
    assert [source.line(k) for k in ("a", "a.b", "a.b[1]", "a.b[1].c", "a.b[1].z", "d")] == [
        1,
        2,
        4,
        4,
        4,
        5,
    ]
    assert source.without(["a"]).line("a.b") is None and source.without(["a"]).line("d") == 5
    assert read_mapping({"k": 1}, "", "")[1].file == ""
