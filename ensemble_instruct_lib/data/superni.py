"""The SuperNI (Super-NaturalInstructions v2) English test split as evaluation items.

Implements the benchmark of METHOD.md "Evaluation in the paper": 119 test tasks, each task's
definition and its first 100 instances (the official test instances; 11,810 in all). The task
list and the gold references come with the kit's public data (``superni/test_tasks.txt``,
``superni/test_references.jsonl``, see that folder's SOURCE.md); the definitions and inputs do
not, so they are read from a local copy of allenai/natural-instructions task files
(``tasks/<task>.json``), named by a parameter or `$EI_SUPERNI_DIR`. `download_superni_tasks`
fetches just the 119 files at a pinned commit for users with internet. Each task's instance ids
are checked against the references, so a checkout at another commit fails loudly.
Not included: the training split, the xlingual track, few-shot (positive/negative example) prompts.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError
from .eval_items import EvalItem
from .jsonl import read_jsonl
from .public import data_path

ENV_VAR = "EI_SUPERNI_DIR"
NI_REPO = "allenai/natural-instructions"
#: The commit `test_tasks.txt` was taken from (see shared/data/superni/SOURCE.md).
NI_COMMIT = "b00871c954282e35d14de77c546918ee8b9d90da"
N_TEST_INSTANCES = 100
_HINT_DIR = (
    f"point {ENV_VAR} (or the ni_dir argument) at a natural-instructions checkout or a folder "
    "holding tasks/<task>.json, or fetch the 119 test files with "
    "ensemble_instruct_lib.data.superni.download_superni_tasks(dest)"
)


def task_url(task: str, commit: str = NI_COMMIT) -> str:
    """Raw GitHub URL of one task file at a pinned commit."""
    return f"https://raw.githubusercontent.com/{NI_REPO}/{commit}/tasks/{task}.json"


# --------------------------------------------------------------------------------------------
# the task list and references shipped with the public data


def load_test_tasks(path: str | Path | None = None) -> list[str]:
    """The 119 test task names, in file order."""
    p = Path(path) if path is not None else data_path("superni/test_tasks.txt")
    names = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) != len(set(names)):
        raise DataError(p, "a task name is listed twice", hint="one task name per line")
    return names


def load_references(path: str | Path | None = None) -> list[EvalItem]:
    """The official references (`test_references.jsonl`) as items with no instruction or input.

    Raises:
        DataError: a record lacks `id`, `references` (non-empty list of str) or `task_id`.
    """
    p = Path(path) if path is not None else data_path("superni/test_references.jsonl")
    out = []
    for k, rec in enumerate(read_jsonl(p), start=1):
        refs = rec.get("references")
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
            raise DataError(
                p, f"record {k}: expected a non-empty list of strings", field="references"
            )
        for key in ("id", "task_id"):
            if not isinstance(rec.get(key), str):
                raise DataError(p, f"record {k}: missing or not a string", field=key)
        out.append(
            EvalItem(
                id=rec["id"],
                instruction="",
                input="",
                references=tuple(refs),
                task_id=rec["task_id"],
                task_category=str(rec.get("task_category", "")),
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# task files


@dataclass(frozen=True)
class SuperNITask:
    """One natural-instructions task file: its definition and instances (id, input, outputs)."""

    name: str
    definition: str
    instances: tuple[dict[str, Any], ...]


def superni_dir(ni_dir: str | Path | None = None) -> Path:
    """The folder holding the task files: `ni_dir`, else `$EI_SUPERNI_DIR`.

    Either a natural-instructions checkout (with ``tasks/``) or the ``tasks`` folder itself.
    """
    raw = ni_dir if ni_dir is not None else os.environ.get(ENV_VAR)
    if not raw:
        raise DataError(f"${ENV_VAR}", "no SuperNI task folder given", hint=_HINT_DIR)
    root = Path(raw).expanduser().resolve()
    if not root.is_dir():
        raise DataError(root, "folder not found", hint=_HINT_DIR)
    return root / "tasks" if (root / "tasks").is_dir() else root


def load_task(path: str | Path, max_instances: int | None = N_TEST_INSTANCES) -> SuperNITask:
    """Read one task file, keeping its first `max_instances` instances (None keeps all).

    The definition is the first entry of "Definition", as the official SuperNI data loader uses.

    Raises:
        DataError: the file is missing, is not JSON, or lacks a field (names the file and field).
    """
    p = Path(path)
    if not p.exists():
        raise DataError(p, "task file not found", hint=_HINT_DIR)
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(p, f"not valid JSON ({e.msg})", line=e.lineno) from None
    if not isinstance(obj, dict):
        raise DataError(p, "expected a JSON object (a natural-instructions task file)")
    definition = obj.get("Definition")
    if isinstance(definition, str):
        definition = [definition]
    if not isinstance(definition, list) or not definition or not isinstance(definition[0], str):
        raise DataError(p, "expected a non-empty list of strings", field="Definition")
    instances = obj.get("Instances")
    if not isinstance(instances, list):
        raise DataError(p, "expected a list of instances", field="Instances")
    kept = instances if max_instances is None else instances[:max_instances]
    for j, inst in enumerate(kept):
        if not isinstance(inst, dict):
            raise DataError(p, "expected an object", field=f"Instances[{j}]")
        for key in ("id", "input"):
            if not isinstance(inst.get(key), str):
                raise DataError(p, "missing or not a string", field=f"Instances[{j}].{key}")
    return SuperNITask(name=p.stem, definition=definition[0], instances=tuple(kept))


def load_superni_items(
    ni_dir: str | Path | None = None,
    *,
    tasks: Sequence[str] | None = None,
    references: Sequence[EvalItem] | None = None,
    max_instances: int = N_TEST_INSTANCES,
) -> list[EvalItem]:
    """The SuperNI test split as eval items: definition, input and official references.

    Args:
        ni_dir: folder of task files (see `superni_dir`); default `$EI_SUPERNI_DIR`.
        tasks: task names (default: the 119 of `test_tasks.txt`).
        references: the reference items (default: `test_references.jsonl`).
        max_instances: instances per task, from the front of each file (the official 100).

    Returns:
        One item per reference, grouped by task in `tasks` order.

    Raises:
        DataError: a task file is missing or malformed, or its first instance ids differ from the
            references' (the checkout is at another commit); the message names the task file.
    """
    root = superni_dir(ni_dir)
    names = list(tasks) if tasks is not None else load_test_tasks()
    refs = list(references) if references is not None else load_references()
    by_task: dict[str, list[EvalItem]] = {}
    for r in refs:
        by_task.setdefault(r.task_id, []).append(r)
    items = []
    for name in names:
        expected = by_task.get(name, [])[:max_instances]
        if not expected:
            raise DataError(
                root / f"{name}.json",
                "the references list no instance of this task",
                hint="pass tasks= with names that appear in the references file",
            )
        task = load_task(root / f"{name}.json", max_instances)
        want = [r.id for r in expected]
        got = [inst["id"] for inst in task.instances[: len(want)]]
        if got != want:
            if len(got) < len(want):
                why = f"the file has {len(got)} instances, the references list {len(want)}"
            else:
                k = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
                why = f"instance {k} has id {got[k]!r} where the references expect {want[k]!r}"
            raise DataError(
                root / f"{name}.json",
                f"instance ids do not match test_references.jsonl: {why}",
                field="Instances",
                hint=f"use the task files of {NI_REPO} at commit {NI_COMMIT[:12]} "
                "(download_superni_tasks fetches them)",
            )
        for inst, ref in zip(task.instances[: len(expected)], expected, strict=True):
            items.append(
                EvalItem(
                    id=ref.id,
                    instruction=task.definition,
                    input=inst["input"],
                    references=ref.references,
                    task_id=name,
                    task_category=ref.task_category,
                )
            )
    return items


# --------------------------------------------------------------------------------------------
# download (internet only)


def _http_get(url: str, dest: Path) -> None:
    with urllib.request.urlopen(url, timeout=120) as r, open(dest, "wb") as out:  # noqa: S310
        shutil.copyfileobj(r, out)


def download_superni_tasks(
    dest: str | Path,
    *,
    tasks: Sequence[str] | None = None,
    commit: str = NI_COMMIT,
    force: bool = False,
    download: Callable[[str, Path], None] = _http_get,
) -> dict[str, str]:
    """Fetch the test task files into ``<dest>/tasks/<task>.json`` from raw GitHub.

    Args:
        dest: target folder; pass it (or set `$EI_SUPERNI_DIR` to it) to `load_superni_items`.
        tasks: task names (default: the 119 of `test_tasks.txt`).
        commit: the natural-instructions commit to fetch from.
        force: re-fetch files already present.
        download: fetches one URL into a path (replaceable in tests).

    Returns:
        For each task, "present" or "downloaded".

    Raises:
        DataError: a fetched file is not a JSON task file (it is removed; earlier files are kept).
    """
    names = list(tasks) if tasks is not None else load_test_tasks()
    folder = Path(dest).expanduser() / "tasks"
    folder.mkdir(parents=True, exist_ok=True)
    status = {}
    for name in names:
        target = folder / f"{name}.json"
        if target.exists() and not force:
            status[name] = "present"
            continue
        url = task_url(name, commit)
        tmp = target.with_name(target.name + ".part")
        download(url, tmp)
        try:
            load_task(tmp, max_instances=None)
        except DataError as e:
            tmp.unlink(missing_ok=True)
            raise DataError(url, f"not a natural-instructions task file: {e}") from None
        os.replace(tmp, target)
        status[name] = "downloaded"
    return status
