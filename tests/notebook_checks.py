"""Helpers shared by the notebook tests: a good notebook twin to mutate, and checks of an executed
notebook and of the figures it saved (a PNG must decode and show something, not a blank canvas)."""

from __future__ import annotations

from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
#: Below this standard deviation of pixel values (0-1 scale) a PNG counts as blank.
BLANK_STD = 0.02


def write_twin(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path


GOOD = """# %% [markdown]
# # A title
# One paragraph.

# %%
import sys

# %% tags=["parameters"]
out_dir = "x"  # where things go
n = 3  # how many
names = ["a", "b"]  # which

# %%
print(sys.executable, n, names, [k * 2 for k in range(n)])
"""


def executed(path: Path) -> nbformat.NotebookNode:
    """The executed notebook, asserting that no cell raised."""
    nb = nbformat.read(path, as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    return nb


def pixel_std(path: Path) -> float:
    """Standard deviation of a PNG's pixel values (RGB, 0-1): about 0 for a blank image."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        pixels = np.asarray(im.convert("RGB"), dtype=float) / 255.0
    return float(pixels.std())


def assert_png(path: Path) -> None:
    """`path` is a PNG that decodes and is not blank (its pixels vary)."""
    assert path.exists(), path
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 2000, path
    assert pixel_std(path) > BLANK_STD, f"{path} looks blank"


def outputs_of_type(nb: nbformat.NotebookNode, mime: str) -> int:
    return sum(mime in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
