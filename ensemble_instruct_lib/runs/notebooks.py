"""Run the notebooks headlessly and check their shape.

`run_notebook` turns a `notebooks/NN_name.py` twin (jupytext py:percent) into a notebook in memory
and executes it with papermill into ``<out_dir>/NN_name.ipynb``, in a kernel that runs this very
interpreter; `list_notebooks` names the notebooks; `lint_notebook` checks the house rules (one
literal-only ``parameters`` cell, no def/class/for/while) for `scripts/check_notebooks.py`. What
each notebook does lives in `nb/steps/` (one module per notebook); tables in `nb/tables.py`,
figures in `nb/plots.py` and `nb/grid_plots.py`, widgets in `nb/widgets.py`.

The command line is ``python -m ensemble_instruct_lib notebook NAME OUT_DIR -p KEY=VALUE`` (``cli.py``).

Relative paths given to a notebook are resolved against the repository root (`resolve_path`), not
the kernel's working directory, so a notebook behaves the same from JupyterLab, papermill or CI.
"""

from __future__ import annotations

import ast
import io
import os
import re
import sys
import tokenize
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: The source checkout the package lives in (notebooks/, configs/ and outputs/ are beside it).
REPO_ROOT = PACKAGE_DIR.parent
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
_FORBIDDEN = {
    ast.FunctionDef: "def",
    ast.AsyncFunctionDef: "async def",
    ast.ClassDef: "class",
    ast.For: "for",
    ast.AsyncFor: "async for",
    ast.While: "while",
}
_PARAM_TYPES = (str, int, float, bool, type(None), list, dict)


#: Environment variable naming another root for relative notebook paths (tests point it at a
#: temporary folder whose ``configs`` link to the checkout's, so the notebooks' default
#: ``outputs/...`` land there and not in the checkout).
ROOT_ENV = "EI_NOTEBOOK_ROOT"


def notebook_root() -> Path:
    """The root relative notebook paths start from: ``$EI_NOTEBOOK_ROOT`` when set, else the
    repository root."""
    env = os.environ.get(ROOT_ENV)
    return Path(env).expanduser().resolve() if env else REPO_ROOT


def resolve_path(path: str | Path) -> Path:
    """An absolute path: `path` itself when absolute, else relative to `notebook_root` (the
    repository root unless ``$EI_NOTEBOOK_ROOT`` says otherwise)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else notebook_root() / p


# --------------------------------------------------------------------------------------------
# finding, checking and running notebooks


def list_notebooks(notebook_dir: str | Path | None = None) -> list[str]:
    """Names (``NN_name``) of the notebook twins in `notebook_dir` (default ``notebooks/``)."""
    folder = Path(notebook_dir) if notebook_dir is not None else NOTEBOOK_DIR
    return sorted(p.stem for p in folder.glob("[0-9][0-9]_*.py"))


def notebook_path(name_or_path: str | Path) -> Path:
    """The ``.py`` twin for a notebook name (``"01_prompt_design"``) or an explicit path."""
    p = Path(name_or_path)
    if p.suffix == ".py" and p.exists():
        return p.resolve()
    candidate = NOTEBOOK_DIR / f"{p.name.removesuffix('.py')}.py"
    if candidate.exists():
        return candidate
    raise FileNotFoundError(
        f"no notebook {str(name_or_path)!r}: give a path to a .py twin or one of {list_notebooks()}"
    )


def _read_twin(path: Path) -> Any:
    import jupytext

    return jupytext.read(path, fmt="py:percent")


def _parameters_cells(nb: Any) -> list[Any]:
    return [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]


def _code(source: str) -> str:
    """Cell source with IPython magics and shell escapes blanked, so `ast` can parse it."""
    lines = source.splitlines()
    return "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in lines)


def _commented_lines(source: str) -> set[int]:
    rows = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            rows.add(tok.start[0])
    return rows


def parameter_lines(name_or_path: str | Path) -> dict[str, int]:
    """The names assigned in a notebook's ``parameters`` cell, in order, each with the 1-based
    line of its assignment in the ``.py`` twin.

    Raises:
        ValueError: the twin has no or several cells tagged ``parameters``.
    """
    path = notebook_path(name_or_path)
    lines = path.read_text(encoding="utf-8").splitlines()
    heads = [i for i, ln in enumerate(lines) if ln.startswith("# %%")]
    tagged = [i for i in heads if re.search(r"""tags=\[[^\]]*["']parameters["']""", lines[i])]
    if len(tagged) != 1:
        raise ValueError(
            f"{name_or_path}: expected exactly one 'parameters' cell, found {len(tagged)}"
        )
    start = tagged[0] + 1
    end = next((i for i in heads if i > tagged[0]), len(lines))
    tree = ast.parse(_code("\n".join(lines[start:end])))
    return {
        t.id: start + node.lineno
        for node in tree.body
        if isinstance(node, ast.Assign)
        for t in node.targets
        if isinstance(t, ast.Name)
    }


def parameter_names(name_or_path: str | Path) -> list[str]:
    """The names assigned in a notebook's ``parameters`` cell, in order."""
    return list(parameter_lines(name_or_path))


def lint_notebook(path: str | Path) -> list[str]:
    """House-rule problems of one notebook twin; an empty list when it is fine.

    Rules: the first cell is markdown starting with a ``# `` title; exactly one cell is tagged
    ``parameters``; it holds only ``name = <literal>  # comment`` lines (one name, a Python
    literal, a comment on the line) and includes ``out_dir``; no cell defines functions or
    classes or loops with ``for``/``while`` (logic belongs in the library; comprehensions are
    allowed); every code cell parses.
    """
    path = Path(path)
    problems: list[str] = []
    try:
        nb = _read_twin(path)
    except Exception as e:  # jupytext raises many kinds of errors on a broken file
        return [f"{path}: cannot be read as a py:percent notebook ({e})"]
    cells = nb.cells
    if not cells or cells[0].cell_type != "markdown" or not cells[0].source.startswith("# "):
        problems.append(
            f"{path}: the first cell must be a markdown title ('# ...') and a paragraph"
        )
    params = _parameters_cells(nb)
    if len(params) != 1:
        problems.append(
            f"{path}: expected exactly one cell tagged 'parameters', found {len(params)} "
            '(mark it with `# %% tags=["parameters"]`)'
        )
    for k, cell in enumerate(cells):
        if cell.cell_type != "code":
            continue
        where = f"{path}, cell {k + 1}"
        code = _code(cell.source)
        try:
            tree = ast.parse(code)
        except SyntaxError as e:
            problems.append(f"{where}, line {e.lineno}: does not parse ({e.msg})")
            continue
        for node in ast.walk(tree):
            kind = _FORBIDDEN.get(type(node))
            if kind:
                problems.append(
                    f"{where}, line {node.lineno}: `{kind}` in a notebook; move the logic into "
                    "ensemble_instruct_lib and call it"
                )
        if cell in params:
            problems += _lint_parameters(where, code, tree)
    return problems


def _lint_parameters(where: str, code: str, tree: ast.Module) -> list[str]:
    problems = []
    commented = _commented_lines(code)
    names = []
    for node in tree.body:
        line = f"{where}, line {node.lineno}"
        if not (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            problems.append(
                f"{line}: the parameters cell may only hold `name = literal  # comment`"
            )
            continue
        names.append(node.targets[0].id)
        try:
            ast.literal_eval(node.value)
        except ValueError:
            problems.append(
                f"{line}: `{node.targets[0].id}` is not a literal; compute it in the config cell"
            )
        if any(ln.count("=") > 1 for ln in code.splitlines()[node.lineno - 1 : node.end_lineno]):
            problems.append(
                f"{line}: only one '=' per line (papermill cannot read the line otherwise; "
                "reword the comment)"
            )
        if (node.end_lineno or node.lineno) not in commented:
            problems.append(f"{line}: `{node.targets[0].id}` needs a comment saying what it is")
    if "out_dir" not in names:
        problems.append(f"{where}: the parameters cell needs `out_dir` (where figures/tables go)")
    return problems


def _check_parameters(path: Path, parameters: Mapping[str, Any]) -> None:
    allowed = parameter_names(path)
    unknown = sorted(set(parameters) - set(allowed))
    if unknown:
        raise ValueError(f"{path.name}: unknown parameter(s) {unknown}; allowed: {allowed}")

    def check(name: str, value: Any) -> None:
        if not isinstance(value, _PARAM_TYPES):
            raise TypeError(
                f"parameter {name!r}: {type(value).__name__} cannot be passed to a notebook; use "
                "str, int, float, bool, None, list or dict (e.g. str(path), list(tuple))"
            )
        if isinstance(value, list):
            for v in value:
                check(name, v)
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    raise TypeError(f"parameter {name!r}: dict keys must be strings, got {k!r}")
                check(name, v)

    for name, value in parameters.items():
        check(name, value)


def default_kernel() -> str:
    """The kernel that runs this interpreter: ipykernel's ``python3`` spec, checked.

    jupyter_client starts a spec whose command is ``python``/``python3`` with `sys.executable`;
    a spec registered elsewhere under the same name (e.g. a user-level one pointing at another
    environment) is refused rather than silently used.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        raise RuntimeError(
            "no 'python3' kernel: install ipykernel in this environment "
            f"({sys.executable} -m pip install ipykernel)"
        ) from None
    exe = spec.argv[0] if spec.argv else ""
    major, minor = sys.version_info[:2]
    same = exe in {"python", f"python{major}", f"python{major}.{minor}"}
    same = same or Path(exe).resolve() == Path(sys.executable).resolve()
    if not same:
        raise RuntimeError(
            f"the 'python3' kernel runs {exe}, not this interpreter ({sys.executable}); run "
            f"`{sys.executable} -m ipykernel install --sys-prefix` or pass kernel_name"
        )
    return "python3"


def run_notebook(
    name_or_path: str | Path,
    out_dir: str | Path,
    parameters: Mapping[str, Any] | None = None,
    *,
    kernel_name: str | None = None,
    timeout: int | None = None,
) -> Path:
    """Execute a notebook twin headlessly with papermill; return the executed ``.ipynb``.

    Args:
        name_or_path: a notebook name from `list_notebooks` or a path to a py:percent file.
        out_dir: where the executed notebook goes (``<out_dir>/<name>.ipynb``); it is also the
            kernel's working directory and, unless `parameters` says otherwise, the notebook's
            ``out_dir`` parameter (its figures and tables land beside it).
        parameters: values for names of the ``parameters`` cell; JSON-like values only (str,
            int, float, bool, None, list, dict). Unknown names are refused.
        kernel_name: a Jupyter kernel (default: `default_kernel`, this interpreter).
        timeout: seconds allowed per cell; None (the default): no limit, since a cell that
            fine-tunes or generates at a real size runs for hours and a limit would kill it
            (and lose the work since its last checkpoint).

    Raises:
        ValueError / TypeError: unknown parameter names or values papermill cannot pass.
        papermill.PapermillExecutionError: a cell failed (the partial notebook is still written).
    """
    import papermill

    path = notebook_path(name_or_path)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    params = dict(parameters or {})
    if "out_dir" in parameter_names(path):
        params.setdefault("out_dir", str(out))
    _check_parameters(path, params)
    kernel = kernel_name or default_kernel()
    nb = _read_twin(path)
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    target = out / f"{path.stem}.ipynb"
    papermill.execute_notebook(
        nb,
        str(target),
        parameters=params,
        kernel_name=kernel,
        language="python",
        cwd=str(out),
        progress_bar=False,
        execution_timeout=timeout,
    )
    return target
