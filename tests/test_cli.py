"""The one command line: its subcommands, the KEY=VALUE parser they share, lazy imports, and the
`notebook` subcommand's argument checks (running notebooks is tested in test_notebook_runner.py;
`sweep` and `finetune` in test_sweep.py and test_finetune.py; `ensemble-recorded` in
test_cli_recorded.py)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from ensemble_instruct_lib import cli
from ensemble_instruct_lib.errors import ConfigError
from ensemble_instruct_lib.runs.keyvalue import parse_assignment, parse_assignments

EXPECTED = [
    "fetch-data",
    "verify-data",
    "run",
    "ensemble",
    "ensemble-recorded",
    "make-tiny-models",
    "sweep",
    "finetune",
    "notebook",
]


# --------------------------------------------------------------------------------------------
# KEY=VALUE


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("n=3", ("n", 3)),
        ("x=0.5", ("x", 0.5)),
        ("lr=2.0e-5", ("lr", 2e-5)),
        ("flag=true", ("flag", True)),
        ("m=null", ("m", None)),
        ("m=", ("m", None)),
        ("xs=[1, 2]", ("xs", [1, 2])),
        ("d={a: 1, b: [x]}", ("d", {"a": 1, "b": ["x"]})),
        ("name=gpt2", ("name", "gpt2")),
        ("path=outputs/a=b.jsonl", ("path", "outputs/a=b.jsonl")),  # only the first '=' splits
        ("s='3'", ("s", "3")),
        ("instruction.num_generated_demos.A=2", ("instruction.num_generated_demos.A", 2)),
    ],
)
def test_values_are_read_as_yaml(item, expected):
    assert parse_assignment(item) == expected


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("novalue", "-p 'novalue': expected KEY=VALUE"),
        ("=3", "-p '=3': expected KEY=VALUE"),
        ("xs=[1,", "-p 'xs=[1,': the value is not valid YAML"),
        ("d={a: ", "-p 'd={a: ': the value is not valid YAML"),
    ],
)
def test_a_bad_item_is_one_clear_error(item, message):
    with pytest.raises(ConfigError) as e:
        parse_assignment(item, "-p")
    assert str(e.value).startswith(message)


def test_assignments_keep_order_and_a_later_key_wins():
    assert parse_assignments(["b=1", "a=2", "b=3"]) == {"b": 3, "a": 2}
    assert list(parse_assignments(["b=1", "a=2"])) == ["b", "a"]
    assert parse_assignments([]) == {}


# --------------------------------------------------------------------------------------------
# the registry and the parser


def test_every_subcommand_is_registered_once():
    assert list(cli.SUBCOMMANDS)[: len(EXPECTED)] == EXPECTED
    with pytest.raises(ValueError, match="registered twice"):
        cli.subcommand("run", "again")(lambda args: 0)


def test_a_new_subcommand_is_one_block(capsys, monkeypatch):
    monkeypatch.setattr(cli, "SUBCOMMANDS", dict(cli.SUBCOMMANDS))

    def arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--name", default="world")

    @cli.subcommand("hello", "greet someone", arguments)
    def hello(args: argparse.Namespace) -> int:
        print(f"hello {args.name}")
        return 3

    assert cli.main(["hello", "--name", "you"]) == 3
    assert capsys.readouterr().out == "hello you\n"
    cli.build_parser()  # every subcommand's arguments can be set up together


def test_errors_are_one_line_with_status_2(capsys, monkeypatch):
    monkeypatch.setattr(cli, "SUBCOMMANDS", dict(cli.SUBCOMMANDS))

    @cli.subcommand("fail", "fails")
    def fail(args: argparse.Namespace) -> int:
        raise ConfigError("field 'x' must be > 0, got -1")

    assert cli.main(["fail"]) == 2
    assert capsys.readouterr().err == "error: field 'x' must be > 0, got -1\n"


def test_unknown_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["nope"])
    assert e.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("heavy", ["torch", "pandas", "transformers", "yaml", "papermill"])
def test_importing_the_cli_and_parsing_light_subcommands_is_light(heavy):
    code = (
        "import sys; from ensemble_instruct_lib import cli; "
        "cli.build_parser(only='notebook').parse_args(['notebook', '--list']); "
        "cli.build_parser(only='finetune').parse_args(['finetune', 'c.yaml', '--set', 'a=1']); "
        "cli.build_parser(only='sweep').parse_args(['sweep', 'function', 'm:f', '--out', 'o']); "
        f"print({heavy!r} in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_python_dash_m_runs_the_cli():
    proc = subprocess.run(
        [sys.executable, "-m", "ensemble_instruct_lib", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    for name in EXPECTED:
        assert name in proc.stdout


@pytest.mark.parametrize("module", ["runs.notebooks", "runs.sweep", "train.finetune"])
def test_no_second_entry_point(module):
    """The old `python -m ensemble_instruct_lib.<module>` programs are gone: one CLI."""
    import importlib

    mod = importlib.import_module(f"ensemble_instruct_lib.{module}")
    assert not hasattr(mod, "main")


# --------------------------------------------------------------------------------------------
# notebook


def test_notebook_list_and_argument_errors(capsys, tmp_path):
    assert cli.main(["notebook", "--list"]) == 0
    listed = capsys.readouterr().out
    assert "03_ensembling: out_dir, run_dir, models" in listed
    out = str(tmp_path / "unused")
    assert cli.main(["notebook", "03_ensembling", out, "-p", "bogus=1"]) == 2
    assert "unknown parameter(s) ['bogus']" in capsys.readouterr().err
    assert cli.main(["notebook", "03_ensembling", out, "-p", "threshold"]) == 2
    assert "-p 'threshold': expected KEY=VALUE" in capsys.readouterr().err
    assert cli.main(["notebook", "99_missing", out]) == 2
    assert "no notebook '99_missing'" in capsys.readouterr().err
    assert cli.main(["notebook", "03_ensembling"]) == 2
    assert "give a notebook name and an output folder" in capsys.readouterr().err


def test_notebook_cells_have_no_time_limit_unless_asked(monkeypatch, tmp_path):
    """A fine-tuning cell runs for hours: a default per-cell limit killed it mid-run."""
    import papermill

    from ensemble_instruct_lib.runs import notebooks

    seen = []
    monkeypatch.setattr(
        papermill, "execute_notebook", lambda *a, **kw: seen.append(kw["execution_timeout"])
    )
    out = str(tmp_path / "nb")
    assert cli.main(["notebook", "03_ensembling", out]) == 0
    assert cli.main(["notebook", "03_ensembling", out, "--timeout", "30"]) == 0
    notebooks.run_notebook("03_ensembling", out)
    assert seen == [None, 30, None]
