"""The notebooks' config dataclasses (`nb.steps.configs`): each validates its fields with a
`ConfigError` (a `FieldError` naming the notebook twin, the parameter's line and the field) and
anchors relative paths on the repository root."""

from __future__ import annotations

import json

import pytest
from notebook_checks import REPO

from ensemble_instruct_lib.errors import ConfigError
from ensemble_instruct_lib.nb.steps import configs


def test_prompt_design_config_validates(tmp_path):
    ok = {"out_dir": str(tmp_path), "instance_instructions": {"A": "Do it.", "B": "Say it."}}
    cfg = configs.PromptDesignConfig(**ok)
    assert cfg.out_path == tmp_path
    bad = [
        {"task_type": "C"},
        {"num_seed": -1},
        {"num_instance_demos": 0},
        {"instance_instructions": {"A": "x"}},
        {"backend": {"model": "gpt2"}},
        {"generated": "not a list"},
        {"out_dir": ""},
    ]
    for b in bad:
        with pytest.raises(ConfigError):
            configs.PromptDesignConfig(**{**ok, **b})


def test_ensembling_config_validates(tmp_path):
    cfg = configs.EnsemblingConfig(out_dir=str(tmp_path), curve_max=0.5, curve_points=6)
    assert cfg.thresholds == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    for b in [
        {"models": ["davinci"]},
        {"models": ["davinci", "gpt-4"]},
        {"models": ["davinci", "davinci"]},
        {"rule": "vote"},
        {"threshold": 1.5},
        {"stop": "all"},
        {"run_dir": ""},
        {"curve_points": 1},
    ]:
        with pytest.raises(ConfigError):
            configs.EnsemblingConfig(out_dir=str(tmp_path), **b)


def test_ensembling_without_a_run_names_the_command(tmp_path, capsys):
    from ensemble_instruct_lib.nb.steps import ensembling

    # the default run dir is notebook 02's; under an empty root there is no run in it
    root = tmp_path / "root"
    root.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EI_NOTEBOOK_ROOT", str(root))
        cfg = configs.EnsemblingConfig(out_dir="outputs/nb03")
        assert cfg.out_path == root / "outputs" / "nb03"
        assert ensembling.run_study(cfg) is None
        message = capsys.readouterr().out.strip()
        assert message.count("\n") == 0 and configs.NOTEBOOK_02_COMMAND in message
        assert cfg.run_dir in message
        other = configs.EnsemblingConfig(out_dir="o", run_dir="elsewhere/run")
        assert "-p run_dir=elsewhere/run" in ensembling.missing_run_message(other)
        none = configs.EnsemblingConfig(out_dir="o", run_dir=None)
        assert ensembling.run_study(none) is None
    assert "skipped" in capsys.readouterr().out


def test_finetune_eval_missing_default_dataset_names_notebook_02(tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EI_NOTEBOOK_ROOT", str(tmp_path))
        with pytest.raises(ConfigError, match="run notebook 02 first") as e:
            configs.FinetuneEvalConfig(
                out_dir="o",
                base_model="gemma-3-270m",
                datasets={"ensembled": f"{configs.DEFAULT_RUN_DIR}/alpaca.jsonl"},
            )
    assert configs.NOTEBOOK_02_COMMAND in str(e.value)


def test_generation_config_loads_and_anchors(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text(
        "generator: {kind: hf, model: outputs, name: gen}\n"  # a folder that exists in the repo
        "extra_models: [{kind: hf, model: Org/hub-id, name: x}]\n"
    )
    cfg = configs.GenerationConfig(out_dir=str(tmp_path), config_path=str(conf),
                                     overrides={"num_instructions": 3})  # fmt: skip
    assert cfg.run_config.num_instructions == 3
    assert cfg.run_config.generator.model == str(REPO / "outputs")
    assert cfg.run_config.extra_models[0].model == "Org/hub-id"
    assert cfg.run_path == tmp_path / "run"
    with pytest.raises(ConfigError, match="no such file"):
        configs.GenerationConfig(out_dir=str(tmp_path), config_path="configs/none.yaml")
    with pytest.raises(ConfigError, match="unknown key"):
        configs.GenerationConfig(out_dir=str(tmp_path), config_path=str(conf),
                                   overrides={"num_instruction": 3})  # fmt: skip


def test_finetune_eval_config_validates(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"instruction": "i", "input": "", "output": "o"}) + "\n")
    ok = {"out_dir": str(tmp_path), "base_model": "gpt2", "datasets": {"ens": str(data)},
          "finetune_overrides": {"max_steps": 2}}  # fmt: skip
    cfg = configs.FinetuneEvalConfig(**ok)
    ft = cfg.finetune_config_for("ens")
    assert ft.max_steps == 2 and ft.run_dir == str(tmp_path / "finetune" / "ens")
    for b in [
        {"datasets": {}},
        {"datasets": {"ens": str(tmp_path / "missing.jsonl")}},
        {"datasets": {"bad name": str(data)}},
        {"finetune_overrides": {"data": "x"}},
        {"finetune_overrides": {"max_step": 2}},
        {"benchmarks": ["mmlu"]},
        {"reference_models": ["gpt-4"]},
        {"max_items": 0},
        {"evaluate_base": "yes"},
    ]:
        with pytest.raises(ConfigError):
            configs.FinetuneEvalConfig(**{**ok, **b})


def test_a_bad_parameter_names_the_notebook_file_line_and_field(tmp_path):
    from ensemble_instruct_lib.data.config_builder import FieldError
    from ensemble_instruct_lib.nb.steps.ablations import AblationsConfig
    from ensemble_instruct_lib.runs.notebooks import parameter_lines

    twin = REPO / "notebooks" / "01_prompt_design.py"
    line = parameter_lines(twin)["task_type"]
    assert twin.read_text().splitlines()[line - 1].startswith("task_type = ")
    with pytest.raises(FieldError) as e:
        configs.PromptDesignConfig(out_dir=str(tmp_path), task_type="C")
    assert (e.value.file, e.value.line, e.value.field) == (
        "notebooks/01_prompt_design.py",
        line,
        "task_type",
    )
    assert str(e.value) == (
        f"notebooks/01_prompt_design.py, line {line}: task_type must be 'A' or 'B', got 'C'"
    )
    # a recorded-model check (data.public's) and notebook 04's config the same way
    with pytest.raises(FieldError) as e:
        AblationsConfig(out_dir=str(tmp_path), models=["davinci", "gpt-4"])
    models_line = parameter_lines(REPO / "notebooks" / "04_ablations.py")["models"]
    assert (e.value.file, e.value.line, e.value.field) == (
        "notebooks/04_ablations.py",
        models_line,
        "models",
    )
    assert "unknown recorded models ['gpt-4']" in str(e.value)
