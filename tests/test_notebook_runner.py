"""The notebook runner (`runs.notebooks`): finding notebook twins, the house-rule lint, the check
script, jupytext pairing, the runner's argument checks and kernel, and one tiny notebook executed
(the command line is tested in test_cli.py, the repository's notebooks in test_notebooks_*.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from notebook_checks import GOOD, REPO, executed, write_twin

from ensemble_instruct_lib.runs import notebooks

NAMES = [
    "01_prompt_design",
    "02_generation",
    "03_ensembling",
    "04_ablations",
    "05_finetune_eval",
]


# --------------------------------------------------------------------------------------------
# finding and checking notebooks


def test_list_notebooks_and_paths():
    assert set(NAMES) <= set(notebooks.list_notebooks())
    assert notebooks.notebook_path("03_ensembling") == REPO / "notebooks" / "03_ensembling.py"
    with pytest.raises(FileNotFoundError, match="01_prompt_design"):
        notebooks.notebook_path("99_missing")


@pytest.mark.parametrize("name", notebooks.list_notebooks())
def test_notebook_twins_follow_the_house_rules(name):
    path = REPO / "notebooks" / f"{name}.py"
    assert notebooks.lint_notebook(path) == []
    assert "out_dir" in notebooks.parameter_names(path)


def test_lint_accepts_a_good_notebook(tmp_path):
    assert notebooks.lint_notebook(write_twin(tmp_path / "good.py", GOOD)) == []
    assert notebooks.parameter_names(tmp_path / "good.py") == ["out_dir", "n", "names"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("print(sys.executable", "def f():\n    pass\nprint(sys.executable"), "`def`"),
        (("print(sys.executable", "class C:\n    pass\nprint(sys.executable"), "`class`"),
        (("print(sys.executable", "for k in names:\n    print(k)\nprint(sys.executable"), "`for`"),
        (("print(sys.executable", "while False:\n    pass\nprint(sys.executable"), "`while`"),
        (("n = 3  # how many", "n = len('abc')  # how many"), "not a literal"),
        (("n = 3  # how many", "n = 3"), "needs a comment"),
        (("n = 3  # how many", "n = 3  # n = three"), "only one '='"),
        (("n = 3  # how many", "import os  # a module"), "may only hold"),
        (('out_dir = "x"  # where things go\n', ""), "needs `out_dir`"),
        (('# %% tags=["parameters"]', "# %%"), "found 0"),
        (("# %%\nprint", '# %% tags=["parameters"]\nprint'), "found 2"),
        (("# # A title", "A title"), "markdown title"),
        (("print(sys.executable", "print((sys.executable"), "does not parse"),
    ],
)
def test_lint_catches(tmp_path, change, message):
    old, new = change
    assert old in GOOD
    path = write_twin(tmp_path / "bad.py", GOOD.replace(old, new, 1))
    problems = notebooks.lint_notebook(path)
    assert any(message in p for p in problems), problems


def test_check_script_passes_on_the_repo():
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "check_notebooks.py")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{len(notebooks.list_notebooks())} notebooks ok" in proc.stdout


def test_check_script_fails_with_a_clear_message(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    write_twin(folder / "01_bad.py", GOOD.replace("print(sys.executable", "for k in names:\n    1\nprint(sys.executable"))  # fmt: skip
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "check_notebooks.py"), str(folder)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "01_bad.py, cell 4, line 1: `for` in a notebook" in proc.stderr


def test_tracked_ipynb_is_reported(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import check_notebooks
    finally:
        sys.path.pop(0)
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    (repo / "notebooks" / "01_x.ipynb").write_text("{}")
    (repo / "notebooks" / "01_x.py").write_text(GOOD)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    assert check_notebooks.tracked_ipynb(repo, repo / "notebooks") == []
    subprocess.run([*git, "add", "notebooks"], check=True)
    assert check_notebooks.tracked_ipynb(repo, repo / "notebooks") == ["notebooks/01_x.ipynb"]


def test_jupytext_pairing_round_trip_keeps_tags(tmp_path):
    """With the repo's jupytext.toml, .py -> .ipynb -> .py gives the twin back byte for byte."""
    shutil.copy(REPO / "jupytext.toml", tmp_path / "jupytext.toml")
    twin = tmp_path / "01_prompt_design.py"
    shutil.copy(REPO / "notebooks" / "01_prompt_design.py", twin)
    original = twin.read_text()
    jt = [sys.executable, "-m", "jupytext", "-q"]
    subprocess.run([*jt, "--to", "ipynb", str(twin)], check=True, cwd=tmp_path)
    nb = nbformat.read(tmp_path / "01_prompt_design.ipynb", as_version=4)
    assert [c.metadata.get("tags") for c in nb.cells].count(["parameters"]) == 1
    twin.unlink()
    subprocess.run([*jt, "--to", "py:percent", "01_prompt_design.ipynb"], check=True, cwd=tmp_path)
    assert twin.read_text() == original


# --------------------------------------------------------------------------------------------
# the runner's argument checks


def test_run_notebook_refuses_unknown_parameters(tmp_path):
    twin = write_twin(tmp_path / "good.py", GOOD)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['m'\]; allowed"):
        notebooks.run_notebook(twin, tmp_path / "out", {"m": 1})
    with pytest.raises(TypeError, match="tuple cannot be passed"):
        notebooks.run_notebook(twin, tmp_path / "out", {"names": ("a",)})
    with pytest.raises(TypeError, match="dict keys must be strings"):
        notebooks.run_notebook(twin, tmp_path / "out", {"names": {1: "a"}})


def test_default_kernel_is_this_interpreter():
    assert notebooks.default_kernel() == "python3"


def test_resolve_path_is_anchored_on_the_repo():
    assert notebooks.resolve_path("configs/x.yaml") == REPO / "configs" / "x.yaml"
    assert notebooks.resolve_path("/abs/p") == Path("/abs/p")


@pytest.mark.slow
def test_runner_uses_this_interpreter(tmp_path):
    twin = write_twin(tmp_path / "good.py", GOOD)
    out = notebooks.run_notebook(twin, tmp_path / "out", {"n": 2, "names": ["z"]})
    assert out == tmp_path / "out" / "good.ipynb"
    nb = executed(out)
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    assert printed.split()[0] == sys.executable
    assert "2 ['z'] [0, 2]" in printed
    assert "injected-parameters" in nb.cells[3].metadata.get("tags", [])
    assert f'out_dir = "{tmp_path / "out"}"' in nb.cells[3].source  # defaults to the run's dir
