"""Check the notebooks against the house rules (CI runs this; exit status 1 on any problem).

- No ``.ipynb`` is tracked by git under ``notebooks/``: only the jupytext py:percent twins are
  committed (executed notebooks go to ``outputs/``).
- Every twin ``notebooks/NN_name.py`` passes `ensemble_instruct_lib.runs.notebooks.lint_notebook`: a
  markdown title first, exactly one ``parameters`` cell holding only ``name = literal  # comment``
  lines (with ``out_dir``), and no ``def``/``class``/``for``/``while`` in any cell.
- The ``parameters`` tag survives a py:percent -> ipynb -> py:percent round trip.

Usage: ``python scripts/check_notebooks.py [NOTEBOOK_DIR]`` (default: the repository's notebooks/).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tracked_ipynb(repo: Path, folder: Path) -> list[str]:
    """`.ipynb` files git tracks under `folder`; None-safe outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "ls-files", "--", f"{folder.relative_to(repo)}/*.ipynb"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError, ValueError) as e:
        print(f"note: cannot ask git for tracked notebooks ({e}); skipping that check")
        return []
    return [line for line in out.splitlines() if line.strip()]


def round_trip_problems(path: Path) -> list[str]:
    """Problems with the tags after converting the twin to .ipynb and back."""
    import jupytext

    nb = jupytext.read(path, fmt="py:percent")
    again = jupytext.reads(
        jupytext.writes(
            jupytext.reads(jupytext.writes(nb, fmt="ipynb"), fmt="ipynb"), "py:percent"
        ),
        fmt="py:percent",
    )
    tags = [c.metadata.get("tags", []) for c in again.cells]
    if sum("parameters" in t for t in tags) != 1:
        return [f"{path}: the 'parameters' tag does not survive a round trip through .ipynb"]
    return []


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0]).resolve() if args else REPO / "notebooks"
    from ensemble_instruct_lib.runs.notebooks import lint_notebook, list_notebooks

    problems = [
        f"{name}: tracked by git; commit only the py:percent twin (git rm --cached {name})"
        for name in tracked_ipynb(REPO, folder)
    ]
    names = list_notebooks(folder)
    if not names:
        problems.append(f"{folder}: no notebook twins (NN_name.py) found")
    for name in names:
        path = folder / f"{name}.py"
        problems += lint_notebook(path)
        problems += round_trip_problems(path)
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} notebook problem(s)", file=sys.stderr)
        return 1
    print(f"{len(names)} notebooks ok: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
