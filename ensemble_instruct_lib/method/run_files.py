"""The names of a run folder's files, in one place for every layer that reads or writes a run.

The records in these files are built by `method.records`; the files are written by the prompting
methods (stages 1-2, `methods`) and the pipeline (stages 3-4 and the manifest, `runs`). Pure
functions of a folder and a name: nothing here reads or writes a file.
"""

from __future__ import annotations

from pathlib import Path

MANIFEST = "manifest.json"
STAGE2 = "stage2_instances.jsonl"
ENSEMBLED = "ensembled.jsonl"
DROPPED = "dropped.jsonl"
SINGLE = "single_output.jsonl"

_STAGE1_PREFIX = "stage1_instructions_"


def stage1_path(out: Path, group: str) -> Path:
    """A stage-1 group's file (group "A"/"B", or "all" for the baselines)."""
    return out / f"{_STAGE1_PREFIX}{group}.jsonl"


def stage1_files(out: Path) -> list[Path]:
    """The stage-1 files in `out`, sorted by name."""
    return sorted(out.glob(f"{_STAGE1_PREFIX}*.jsonl"))


def stage1_group(path: Path) -> str:
    """The group a stage-1 file holds."""
    return path.stem.removeprefix(_STAGE1_PREFIX)


def stage3_path(out: Path, model_name: str) -> Path:
    """The stage-3 file of one extra model (or one sample of a self-ensemble)."""
    return out / f"stage3_outputs_{model_name}.jsonl"


__all__ = [
    "DROPPED",
    "ENSEMBLED",
    "MANIFEST",
    "SINGLE",
    "STAGE2",
    "stage1_files",
    "stage1_group",
    "stage1_path",
    "stage3_path",
]
