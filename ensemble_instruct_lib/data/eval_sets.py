"""The evaluation sets a run is decontaminated against, read as `EvalItem`s (files only).

- ``user_oriented``: the 252 user-oriented tasks of Self-Instruct (instruction, input, gold
  output), `user_oriented_items`; `train.evaluate` scores against the same items.
- ``superni``: the SuperNI English test split. With task files (`$EI_SUPERNI_DIR`, see
  `data.superni`) every item has its task definition, input and references; without them, as in
  the kit's offline data (``superni/test_references.jsonl`` only), the items hold the 11,810 gold
  references alone, so only the n-gram check of generated inputs and outputs against those
  references can run (`eval_set` says which).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from .eval_items import EvalItem
from .jsonl import read_jsonl
from .public import data_dir as _data_folder
from .public import user_oriented_path

#: evaluation set name -> what it is
EVAL_SETS = {
    "user_oriented": "the 252 user-oriented tasks of Self-Instruct",
    "superni": "the SuperNI English test split (119 tasks, 11,810 instances)",
}


def user_oriented_items(path: str | Path | None = None) -> list[EvalItem]:
    """The 252 user-oriented instructions of Self-Instruct as eval items.

    Each task's one instance becomes an item with the task id as its id (``<id>-<k>`` if a task
    ever has several), the instruction, the input and the gold output as the only reference; the
    `motivation_app` (e.g. "Grammarly") is the category.

    Raises:
        DataError: a record lacks a field or has the wrong type (names the file and record).
    """
    p = Path(path) if path is not None else user_oriented_path()
    if not p.exists():
        raise DataError(p, "file not found", hint="give the user-oriented instructions JSONL")
    items = []
    for k, rec in enumerate(read_jsonl(p), start=1):
        where = f"record {k}"
        for key in ("id", "instruction"):
            if not isinstance(rec.get(key), str):
                raise DataError(p, f"{where}: missing or not a string", field=key)
        instances = rec.get("instances")
        if not isinstance(instances, list) or not instances:
            raise DataError(p, f"{where}: expected a non-empty list", field="instances")
        for j, inst in enumerate(instances):
            if not isinstance(inst, dict) or not isinstance(inst.get("output"), str):
                raise DataError(
                    p, f"{where}: missing or not a string", field=f"instances[{j}].output"
                )
            items.append(
                EvalItem(
                    id=rec["id"] if len(instances) == 1 else f"{rec['id']}-{j}",
                    instruction=rec["instruction"],
                    input=str(inst.get("input") or ""),
                    references=(inst["output"],),
                    task_id=rec["id"],
                    task_category=str(rec.get("motivation_app", "")),
                )
            )
    return items


def eval_set(name: str, data_dir: str | Path | None = None) -> tuple[list[EvalItem], str]:
    """The items of one evaluation set and a line saying what was read.

    Raises:
        ValueError: an unknown set name.
        DataError: its files are missing (names the file and the fix).
    """
    if name == "user_oriented":
        items = user_oriented_items(user_oriented_path(data_dir))
        return items, f"user_oriented: {len(items)} tasks (instruction, input, gold output)"
    if name == "superni":
        from .superni import ENV_VAR, load_references, load_superni_items

        path = _data_folder(data_dir) / "superni" / "test_references.jsonl"
        if not path.exists():
            raise DataError(
                path,
                "file not found (the SuperNI test references, an evaluation set to "
                "decontaminate against)",
                hint="place superni/ in the data folder (shared/data has it), or drop superni "
                "from decontaminate.sets",
            )
        refs = load_references(path)
        if os.environ.get(ENV_VAR):
            items = load_superni_items(references=refs)
            return items, f"superni: {len(items)} instances (definition, input, references)"
        return refs, (
            f"superni: {len(refs)} instances, references only (no task files: set ${ENV_VAR} "
            "for definitions and inputs)"
        )
    raise ValueError(f"unknown evaluation set {name!r}; choose from {list(EVAL_SETS)}")


__all__ = ["EVAL_SETS", "eval_set", "user_oriented_items"]
