"""The sweep runner: grid expansion, folders, the tidy table (CSV + Parquet), resuming, failures,
parallel workers, the pipeline and notebook kinds, and the command line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from ensemble_instruct_lib.cli import main as cli_main
from ensemble_instruct_lib.runs.sweep import (
    CSV,
    ERROR,
    PARQUET,
    POINT,
    flatten,
    grid_points,
    point_slug,
    run_sweep,
    set_dotted,
    write_metrics,
)
from ensemble_instruct_lib.testing.fake import fake_backends

PNG = b"\x89PNG\r\n\x1a\n"


# functions swept below (module level: worker processes import them by name)


def square(x: int, shift: int = 0, out_dir: str = "") -> dict:
    with open(Path(out_dir) / "calls.txt", "a") as f:
        f.write("1\n")
    if x == 3:
        raise ValueError("three is not allowed")
    return {"y": x * x + shift, "pid": os.getpid()}


def two_rows(x: int) -> pd.DataFrame:
    return pd.DataFrame({"k": [0, 1], "y": [x, 10 * x]})


def writes_metrics(x: int, out_dir: str) -> None:
    write_metrics(out_dir, {"nested": {"a": x, "b": [x, x]}})


def test_grid_points_product_and_seeds():
    pts = grid_points({"a": [1, 2], "b": ["x"]}, seeds=[0, 7])
    assert pts == [
        {"a": 1, "b": "x", "seed": 0},
        {"a": 1, "b": "x", "seed": 7},
        {"a": 2, "b": "x", "seed": 0},
        {"a": 2, "b": "x", "seed": 7},
    ]
    assert grid_points({}) == [{}]
    with pytest.raises(ValueError, match="non-empty list"):
        grid_points({"a": []})
    with pytest.raises(ValueError, match="non-empty list"):
        grid_points({"a": "abc"})
    with pytest.raises(ValueError, match="both a grid key"):
        grid_points({"seed": [1]}, seeds=[0])


def test_slug_is_readable_stable_and_unique():
    a = point_slug({"threshold": 0.1, "rule": "sum"})
    assert a.startswith("threshold-0.1__rule-sum-") and a == point_slug(
        {"threshold": 0.1, "rule": "sum"}
    )
    assert a != point_slug({"threshold": 0.1, "rule": "best_pair"})
    d = point_slug({"instruction.num_seed_demos": {"A": 4, "B": 4}})
    assert d.startswith("num_seed_demos-A=4_B=4-")
    long = point_slug({"x": "y" * 300})
    assert len(long) <= 80 + 9 and "/" not in point_slug({"p": "a/b c"})


def test_set_dotted_and_flatten():
    data = {"instruction": {"max_rounds": 2}}
    set_dotted(data, "instruction.num_seed_demos.A", 5)
    set_dotted(data, "seed", 1)
    assert data == {"instruction": {"max_rounds": 2, "num_seed_demos": {"A": 5}}, "seed": 1}
    with pytest.raises(ValueError, match="not a mapping"):
        set_dotted(data, "seed.x", 1)
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": [1]}) == {"a.b": 1, "a.c.d": 2, "e": [1]}


def test_function_sweep_table_files_failure_and_resume(tmp_path):
    out = tmp_path / "sw"
    table = run_sweep(
        square, {"x": [1, 2, 3]}, out, kind="function", base_params={"shift": 1}, progress=False
    )
    assert list(table.columns[:6]) == [
        "point",
        "status",
        "error",
        "resumed",
        "duration_s",
        "out_dir",
    ]
    assert table["x"].tolist() == [1, 2, 3] and table["shift"].tolist() == [1, 1, 1]
    assert table["status"].tolist() == ["done", "done", "failed"]
    assert table["y"].tolist()[:2] == [2, 5] and pd.isna(table["y"].iloc[2])
    assert table["error"].iloc[2] == "ValueError: three is not allowed"
    failed_dir = Path(table["out_dir"].iloc[2])
    assert "three is not allowed" in (failed_dir / ERROR).read_text()
    assert not (failed_dir / POINT).exists()
    done = json.loads((Path(table["out_dir"].iloc[0]) / POINT).read_text())
    assert done["params"] == {"shift": 1, "x": 1} and done["rows"][0]["y"] == 2
    # the saved tables are the returned one
    pd.testing.assert_frame_equal(pd.read_parquet(out / PARQUET), table)
    csv = pd.read_csv(out / CSV)
    assert csv["y"].tolist()[:2] == [2, 5] and csv["status"].tolist() == table["status"].tolist()
    assert json.loads((out / "sweep.json").read_text())["grid"] == {"x": [1, 2, 3]}
    # resuming: done points are not run again, the failed one is
    again = run_sweep(
        square, {"x": [1, 2, 3]}, out, kind="function", base_params={"shift": 1}, progress=False
    )
    calls = [len((Path(d) / "calls.txt").read_text().split()) for d in table["out_dir"]]
    assert calls == [1, 1, 2]
    assert again["resumed"].tolist() == [True, True, False]
    assert again["y"].tolist()[:2] == [2, 5]
    # changed base parameters make a done point stale: it runs again
    third = run_sweep(
        square, {"x": [1]}, out, kind="function", base_params={"shift": 5}, progress=False
    )
    assert third["y"].tolist() == [6] and not third["resumed"].iloc[0]


def test_function_returning_rows_or_writing_metrics(tmp_path):
    table = run_sweep(two_rows, {"x": [1, 2]}, tmp_path / "a", kind="function", progress=False)
    assert table[["x", "k", "y"]].values.tolist() == [[1, 0, 1], [1, 1, 10], [2, 0, 2], [2, 1, 20]]
    table = run_sweep(
        f"{__name__}:writes_metrics", {"x": [4]}, tmp_path / "b", kind="function", progress=False
    )
    assert table["nested.a"].tolist() == [4]
    assert json.loads(table["nested.b"].iloc[0]) == [4, 4]  # lists stored as JSON text


def test_parallel_workers(tmp_path):
    table = run_sweep(
        square, {"x": [1, 2, 3, 4]}, tmp_path, kind="function", workers=2, progress=False
    )
    assert table["status"].tolist() == ["done", "done", "failed", "done"]
    assert table["y"].tolist()[:2] == [1, 4] and table["y"].iloc[3] == 16
    pids = set(table["pid"].dropna().astype(int))
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    again = run_sweep(
        square, {"x": [1, 2, 3, 4]}, tmp_path, kind="function", workers=2, progress=False
    )
    assert again["resumed"].tolist() == [True, True, False, True]


def test_pipeline_sweep_with_fake_lms(tmp_path):
    cfg = {
        "name": "s",
        "generator": {"kind": "scripted", "model": "gen"},
        "extra_models": [{"kind": "scripted", "model": "x1"}, {"kind": "scripted", "model": "x2"}],
        "num_instructions": 3,
    }
    table = run_sweep(
        cfg,
        {"method": ["ensemble_instruct", "alpaca"], "instruction.prompts_per_round": [2]},
        tmp_path,
        kind="pipeline",
        seeds=[0, 1],
        backends=fake_backends,
        progress=False,
    )
    assert table["status"].tolist() == ["done"] * 4
    assert table[["method", "seed"]].values.tolist() == [
        ["ensemble_instruct", 0],
        ["ensemble_instruct", 1],
        ["alpaca", 0],
        ["alpaca", 1],
    ]
    for row in table.itertuples():
        manifest = json.loads((Path(row.out_dir) / "manifest.json").read_text())
        assert manifest["config"]["method"] == row.method and manifest["config"]["seed"] == row.seed
        assert manifest["config"]["instruction"]["prompts_per_round"] == 2
        assert row.stage1_accepted == 6  # 3 per type x 2 types
        assert "run dir:" in (Path(row.out_dir) / "log.txt").read_text()  # prints kept aside
    bad = run_sweep(
        cfg, {"num_instructions": [0]}, tmp_path / "bad", kind="pipeline", progress=False
    )
    assert bad["status"].tolist() == ["failed"] and "num_instructions" in bad["error"].iloc[0]


def main(argv: list[str]) -> int:
    return cli_main(["sweep", *argv])


def test_command_line(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(
        [
            "function",
            f"{__name__}:square",
            "--out",
            str(out),
            "--grid",
            "x=[1, 2]",
            "--set",
            "shift=10",
            "--quiet",
        ]
    )
    assert code == 0
    assert pd.read_csv(out / CSV)["y"].tolist() == [11, 14]
    assert main(["function", f"{__name__}:square", "--out", str(out), "--grid", "x=3"]) == 1
    assert "FAILED" in capsys.readouterr().out
    assert main(["pipeline", str(tmp_path / "missing.yaml"), "--out", str(out)]) in (1, 2)
    capsys.readouterr()
    assert main(["function", f"{__name__}:square", "--out", str(out), "--set", "shift"]) == 2
    assert "--set 'shift': expected KEY=VALUE" in capsys.readouterr().err
    assert main(["kernel", "x", "--out", str(out)]) == 2
    assert "kind must be one of" in capsys.readouterr().err
    grid = tmp_path / "grid.yaml"
    grid.write_text("x: [1, 2]\n")
    assert main(["function", f"{__name__}:square", "--out", str(out), "--grid-file", str(grid),
                 "--set", "shift=10", "--quiet"]) == 0  # fmt: skip


@pytest.mark.slow
def test_notebook_sweep(tmp_path):
    nb = tmp_path / "99_tiny.py"
    nb.write_text(
        "# %% [markdown]\n# # Tiny\n# A notebook for the sweep test.\n\n"
        "# %%\nfrom ensemble_instruct_lib.runs.sweep import write_metrics\n\n"
        '# %% tags=["parameters"]\nout_dir = "x"  # where\nk = 1  # a number\n\n'
        "# %%\nwrite_metrics(out_dir, {'twice': 2 * k})\n"
    )
    table = run_sweep(nb, {"k": [2, 5]}, tmp_path / "sw", kind="notebook", progress=False)
    assert table["status"].tolist() == ["done", "done"]
    assert table["twice"].tolist() == [4, 10]
    for d in table["out_dir"]:
        assert (Path(d) / "99_tiny.ipynb").exists()
    bad = run_sweep(nb, {"nope": [1]}, tmp_path / "bad", kind="notebook", progress=False)
    assert bad["status"].tolist() == ["failed"] and "unknown parameter" in bad["error"].iloc[0]
