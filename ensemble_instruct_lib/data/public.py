"""Seed tasks and the other public data the kit reads: locate, fetch, verify, load, validate.

Implements METHOD.md "Data": the 175 Self-Instruct seed tasks split into type A (the first instance
has a non-empty input) and type B (it has none), plus the 252 user-oriented evaluation tasks and the
eight GPT-3-family models' recorded answers to them. None of these files is committed: `fetch_data`
downloads them at a pinned commit and checks their sha256, or copies a local folder laid out like
``../shared/data``. Where the data is read from (`locate_data`): the folder a call is given, else
`$EI_DATA_DIR`, else ``shared/data`` beside a source checkout when it holds the seed file, else the
default fetch location (``seeds/data`` in a checkout). A download that cannot reach its URL is a
`NetworkError` naming the URL and the offline ways out.
The same fetch also brings the authors' Ensemble-Instruct prompt-template files (read as data by
`data.reference`), pinned the same way.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError, NetworkError
from .jsonl import iter_jsonl

ENV_VAR = "EI_DATA_DIR"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
_CHECKOUT = (PACKAGE_DIR.parent / "pyproject.toml").exists()
#: Where `fetch-data` writes by default: `seeds/data` in a source checkout, else a user cache dir.
DEFAULT_DATA_DIR = (
    PACKAGE_DIR.parent / "seeds" / "data"
    if _CHECKOUT
    else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ensemble-instruct"
)
#: A ``shared/data`` folder beside a source checkout (``<checkout>/../shared/data``), read when
#: it holds the seed file and neither a path nor `$EI_DATA_DIR` names another folder.
SHARED_DATA_DIR: Path | None = PACKAGE_DIR.parent.parent / "shared" / "data" if _CHECKOUT else None
#: The file whose presence makes a folder count as a data folder.
SEED_FILE = "self_instruct/seed_tasks.jsonl"

SELF_INSTRUCT_REPO = "yizhongw/self-instruct"
SELF_INSTRUCT_COMMIT = "0b26ccaa415992100fa32df62d41b994cf928e23"
#: The authors' Ensemble-Instruct repository and the commit its prompt templates are read at.
REFERENCE_REPO = "IBM/ensemble-instruct"
REFERENCE_COMMIT = "c65b4c5c190bd21d7befa72aa003d4ee86d89e2e"
#: Where the authors' files live under the data folder (their repository layout below it).
REFERENCE_SUBDIR = "ensemble_instruct"

PREDICTION_MODELS = (
    "davinci",
    "text-davinci-001",
    "text-davinci-002",
    "text-davinci-003",
    "davinci-self-instruct",
    "davinci-superni-ft",
    "davinci-t0-ft",
    "davinci-self-instruct-and-superni-ft",
)


def check_recorded_models(models: Iterable[str]) -> None:
    """The one check that names are recorded models (`PREDICTION_MODELS`).

    Raises:
        ConfigError: some are not; the message names them and the known ones.
    """
    unknown = [m for m in models if m not in PREDICTION_MODELS]
    if unknown:
        raise ConfigError(
            f"unknown recorded models {unknown}; choose from {list(PREDICTION_MODELS)}"
        )


@dataclass(frozen=True)
class DataFile:
    """One pinned public file: where it lives in the data dir, its upstream path and digest."""

    local: str
    upstream: str
    sha256: str
    repo: str = SELF_INSTRUCT_REPO
    commit: str = SELF_INSTRUCT_COMMIT

    @property
    def url(self) -> str:
        return f"https://raw.githubusercontent.com/{self.repo}/{self.commit}/{self.upstream}"


_PRED_SHA = {
    "davinci-self-instruct-and-superni-ft": "6aed46012920f7eb2f2779c329e5e06c57d59ed66235a40c155bcc62952ec89f",
    "davinci-self-instruct": "d454d989d16567ba9ed2898940beb3bfced2887b8014a5b6f5fa7955e499a4b8",
    "davinci-superni-ft": "e38f88de443b3a567ffffb80312dba796fd3ccf227b63842e218a4517678e87d",
    "davinci-t0-ft": "346c6f6f24e126a1ca8c97593275558f4e83c0b36ed9125e4b7c2c9ac22200b2",
    "davinci": "29ebefae64941a53d296021d191462e7f1ec87c3112d5bf4971d62ba61b30730",
    "text-davinci-001": "0e5486cb74260ed10dfc43d6c26343c4bb98251401003b46ae3fca498305a94d",
    "text-davinci-002": "30e448059bb2c3aaf2926c93f97d967aa7523acdcaec08b2bbd36ea6b4e1e9f7",
    "text-davinci-003": "9fbf9229c917f2c832399e4d474f0ed1a4f367fae61e5eee814f3db687e0d584",
}

DATA_FILES: tuple[DataFile, ...] = (
    DataFile(
        "self_instruct/seed_tasks.jsonl",
        "data/seed_tasks.jsonl",
        "7779004fa198fdf27cf70a159363879d8a26c53329e11b436af17b3941875f48",
    ),
    DataFile(
        "self_instruct/user_oriented_instructions.jsonl",
        "human_eval/user_oriented_instructions.jsonl",
        "81d60a117db495cecedecd9193504fd07c5b5a42f6699ef6b0f9da10fc22f42e",
    ),
    *(
        DataFile(
            f"self_instruct/user_oriented_predictions/{m}_predictions.jsonl",
            f"human_eval/predictions/{m}_predictions.jsonl",
            _PRED_SHA[m],
        )
        for m in PREDICTION_MODELS
    ),
)

_REFERENCE_SHA = {
    "ensemble_instruct/gen_instructions.py": (
        "3a787ff11bfb36ff7a34bf5d996556f66204f7f7ea17bcfb1f6f9d61d5d751f8"
    ),
    "ensemble_instruct/templates/instance_template.py": (
        "151a53717fc69da1b79355e64b606f7a1863cb641ece4d1527893afa9f6097f0"
    ),
    "ensemble_instruct/gen_output_zeroshot.py": (
        "424f89d0c9d1af00103c49b7e46b86794bc7d5a259c1e8957b8356303fcce4fe"
    ),
}
#: The authors' prompt-template files (stages 1, 2 and 3), read as data by `data.reference`.
REFERENCE_FILES: tuple[DataFile, ...] = tuple(
    DataFile(f"{REFERENCE_SUBDIR}/{up}", up, sha, REFERENCE_REPO, REFERENCE_COMMIT)
    for up, sha in _REFERENCE_SHA.items()
)
#: The SuperNI English test split's task list and gold references (no task definitions or
#: inputs: those come from a natural-instructions checkout, `data.superni`). Read by the
#: decontamination check of generated data (`data.eval_sets`), which is on by default.
SUPERNI_FILES: tuple[DataFile, ...] = (
    DataFile(
        "superni/test_tasks.txt",
        "splits/default/test_tasks.txt",
        "8b2068c1e0c5e545abd1172fcf83b17935a791dae19912b5cf68e29355af3cba",
        "allenai/natural-instructions",
        "b00871c954282e35d14de77c546918ee8b9d90da",
    ),
    DataFile(
        "superni/test_references.jsonl",
        "test_references.jsonl",
        "9b04c67ef20dc791fb3ff61e2212f46f9573095a64f9c8cd2ed87eed1198f159",
        "thu-coai/PICL",
        "df926dd6038313ab901426002d59f3b1e5619554",
    ),
)
#: Every pinned file `fetch_data` brings and `verify_data` checks.
ALL_FILES: tuple[DataFile, ...] = DATA_FILES + REFERENCE_FILES + SUPERNI_FILES


# --------------------------------------------------------------------------------------------
# locating and fetching


@dataclass(frozen=True)
class DataLocation:
    """The data folder a call reads, and why that one.

    Attributes:
        path: the folder.
        source: "argument" (a path was given), "env" (`$EI_DATA_DIR`), "shared" (``shared/data``
            beside the checkout) or "default" (the default fetch location).
    """

    path: Path
    source: str

    @property
    def reason(self) -> str:
        """Why this folder, in words (for messages)."""
        return {
            "argument": "the folder given",
            "env": f"from ${ENV_VAR}",
            "shared": "the shared/data folder beside the checkout",
            "default": f"the default location; ${ENV_VAR} is unset and no shared/data folder "
            "with the seed file is beside the checkout",
        }[self.source]


def locate_data(path: str | Path | None = None) -> DataLocation:
    """Which data folder to read: `path` if given, else `$EI_DATA_DIR`, else ``shared/data``
    beside the checkout when it holds the seed file, else the default fetch location."""
    if path is not None:
        return DataLocation(Path(path).expanduser().resolve(), "argument")
    env = os.environ.get(ENV_VAR)
    if env:
        return DataLocation(Path(env).expanduser().resolve(), "env")
    if SHARED_DATA_DIR is not None and (SHARED_DATA_DIR / SEED_FILE).is_file():
        return DataLocation(SHARED_DATA_DIR.resolve(), "shared")
    return DataLocation(DEFAULT_DATA_DIR, "default")


def data_dir(path: str | Path | None = None) -> Path:
    """The data folder (`locate_data`): `path`, else `$EI_DATA_DIR`, else ``shared/data`` beside
    the checkout when it holds the seed file, else the default fetch location."""
    return locate_data(path).path


def data_path(relative: str, root: str | Path | None = None) -> Path:
    """Path of one data file, with a clear error when it is missing."""
    p = data_dir(root) / relative
    if not p.exists():
        raise DataError(
            p,
            "file not found",
            hint=(
                "run `python -m ensemble_instruct_lib fetch-data` to download the public data, "
                f"or set {ENV_VAR} to a folder laid out like shared/data"
            ),
        )
    return p


def seed_tasks_path(root: str | Path | None = None) -> Path:
    return data_path(SEED_FILE, root)


def user_oriented_path(root: str | Path | None = None) -> Path:
    return data_path("self_instruct/user_oriented_instructions.jsonl", root)


def predictions_path(model: str, root: str | Path | None = None) -> Path:
    check_recorded_models([model])
    return data_path(f"self_instruct/user_oriented_predictions/{model}_predictions.jsonl", root)


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_data(
    root: str | Path | None = None, files: tuple[DataFile, ...] = ALL_FILES
) -> dict[str, str]:
    """Check pinned files (default: all of them) under the data dir.

    Returns:
        For each file, "ok", "missing" or "sha256 mismatch".
    """
    base = data_dir(root)
    status = {}
    for f in files:
        p = base / f.local
        if not p.exists():
            status[f.local] = "missing"
        else:
            status[f.local] = "ok" if sha256_of(p) == f.sha256 else "sha256 mismatch"
    return status


def _download(url: str, dest: Path) -> None:
    with urllib.request.urlopen(url, timeout=60) as r, open(dest, "wb") as out:  # noqa: S310
        shutil.copyfileobj(r, out)


#: What a download that cannot reach its URL raises (not a local disk error: those propagate).
_NETWORK_ERRORS = (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException)


def network_reason(error: BaseException) -> str:
    """The short reason of a failed connection: ``Name or service not known``, ``timed out``,
    ``HTTP 404 Not Found``, ..."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}".strip()
    reason: object = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, OSError) and reason.strerror:
        text = reason.strerror
    else:
        text = str(reason) or type(reason).__name__
    return " ".join(text.split())[:200]


def _download_error(url: str, error: BaseException, dest_dir: Path, kept: int) -> NetworkError:
    reason = network_reason(error)
    what = (
        f"the server answered {reason}"
        if isinstance(error, urllib.error.HTTPError)
        else f"this machine could not reach it ({reason})"
    )
    have = f"; the {kept} file(s) already in {dest_dir} are kept" if kept else ""
    return NetworkError(
        url,
        reason,
        f"could not download {url}: {what}{have}. Without internet: copy a folder laid out like "
        "shared/data with `python -m ensemble_instruct_lib fetch-data --from DIR`, or read one "
        f"in place with {ENV_VAR}=DIR",
    )


def fetch_data(
    dest: str | Path | None = None,
    *,
    source: str | Path | None = None,
    force: bool = False,
    download: Callable[[str, Path], None] | None = None,
    files: tuple[DataFile, ...] = ALL_FILES,
) -> dict[str, str]:
    """Bring the pinned public data (default: every pinned file) into `dest`, verifying sha256s.

    Args:
        dest: target folder (default: `data_dir()`).
        source: a local folder laid out like ``shared/data`` to copy from instead of downloading.
        force: re-fetch files that are already present and valid.
        download: the function that fetches one URL into a path (default: `_download`, looked
            up at call time so tests can replace it).
        files: which pinned files (default: the seeds, evaluation data and the authors' templates).

    Returns:
        For each file, "present", "copied" or "downloaded".

    Raises:
        DataError: a file's digest does not match (the bad copy is removed, good files are kept).
        NetworkError: a download failed (one line naming the URL, the reason and the offline
            ways out; the files fetched before it are kept).
    """
    dest_dir = data_dir(dest)
    fetch = download if download is not None else _download
    result: dict[str, str] = {}
    for f in files:
        target = dest_dir / f.local
        if not force and target.exists() and sha256_of(target) == f.sha256:
            result[f.local] = "present"
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        if source is not None:
            src = Path(source) / f.local
            if not src.exists():
                raise DataError(
                    src, "file not found in --from folder", hint="lay it out like shared/data"
                )
            shutil.copyfile(src, tmp)
            how = "copied"
        else:
            try:
                fetch(f.url, tmp)
            except _NETWORK_ERRORS as e:
                tmp.unlink(missing_ok=True)
                raise _download_error(f.url, e, dest_dir, len(result)) from None
            how = "downloaded"
        digest = sha256_of(tmp)
        if digest != f.sha256:
            tmp.unlink(missing_ok=True)
            raise DataError(
                f.url if source is None else Path(source) / f.local,
                f"sha256 {digest} does not match the pinned {f.sha256}",
                hint="the upstream file changed or the copy is corrupt; nothing was overwritten",
            )
        os.replace(tmp, target)
        result[f.local] = how
    return result


# --------------------------------------------------------------------------------------------
# seed tasks


@dataclass(frozen=True)
class Instance:
    input: str
    output: str


@dataclass(frozen=True)
class SeedTask:
    """One Self-Instruct seed task.

    Attributes:
        task_type: "A" when the first instance has a non-empty input ("needs input"), else "B".
    """

    id: str
    name: str
    instruction: str
    instances: tuple[Instance, ...]
    is_classification: bool
    task_type: str


def _require(
    path: Path, lineno: int, obj: dict[str, Any], key: str, kind: type | tuple[type, ...]
) -> Any:
    if key not in obj:
        raise DataError(path, "missing", line=lineno, field=key, hint=f"every task needs '{key}'")
    val = obj[key]
    if not isinstance(val, kind) or isinstance(val, bool) and kind is not bool:
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(
            path,
            f"expected {want}, got {type(val).__name__}",
            line=lineno,
            field=key,
            hint="fix the value's type",
        )
    return val


def _parse_seed(path: Path, lineno: int, obj: dict[str, Any]) -> SeedTask:
    instruction = _require(path, lineno, obj, "instruction", str)
    if not instruction.strip():
        raise DataError(path, "is empty", line=lineno, field="instruction", hint="write the task")
    raw_instances = _require(path, lineno, obj, "instances", list)
    if not raw_instances:
        raise DataError(
            path,
            "is empty",
            line=lineno,
            field="instances",
            hint="give at least one {input, output}",
        )
    instances = []
    for i, inst in enumerate(raw_instances):
        fname = f"instances[{i}]"
        if not isinstance(inst, dict):
            raise DataError(
                path, f"expected an object, got {type(inst).__name__}", line=lineno, field=fname
            )
        for key in ("input", "output"):
            val = inst.get(key, "" if key == "input" else None)
            if not isinstance(val, str):
                got = "missing" if val is None else f"expected str, got {type(val).__name__}"
                raise DataError(path, got, line=lineno, field=f"{fname}.{key}")
        instances.append(Instance(inst.get("input", ""), inst["output"]))
    task_id = obj.get("id", f"line_{lineno}")
    is_cls = obj.get("is_classification", False)
    if not isinstance(is_cls, bool):
        raise DataError(
            path, f"expected true/false, got {is_cls!r}", line=lineno, field="is_classification"
        )
    return SeedTask(
        id=str(task_id),
        name=str(obj.get("name", task_id)),
        instruction=instruction,
        instances=tuple(instances),
        is_classification=is_cls,
        task_type="A" if instances[0].input.strip() else "B",
    )


def load_seed_tasks(path: str | Path | None = None) -> list[SeedTask]:
    """Load and validate seed tasks from a JSONL file (default: the pinned Self-Instruct seeds).

    Raises:
        DataError: naming the file, line and field of the first problem (bad JSON, missing or
            empty `instruction`, empty `instances`, wrong types).
    """
    p = Path(path) if path is not None else seed_tasks_path()
    if not p.exists():
        raise DataError(p, "file not found", hint="give the path of a seed-task JSONL file")
    tasks = []
    seen: dict[str, int] = {}
    for lineno, obj in iter_jsonl(p):
        task = _parse_seed(p, lineno, obj)
        if task.id in seen:
            raise DataError(
                p,
                f"duplicate id {task.id!r} (first on line {seen[task.id]})",
                line=lineno,
                field="id",
            )
        seen[task.id] = lineno
        tasks.append(task)
    if not tasks:
        raise DataError(p, "no tasks in file", hint="a seed file holds one JSON task per line")
    return tasks


def split_by_type(tasks: list[SeedTask]) -> dict[str, list[SeedTask]]:
    """Seeds grouped by task type: {"A": [...], "B": [...]}, file order kept."""
    return {t: [s for s in tasks if s.task_type == t] for t in ("A", "B")}


# --------------------------------------------------------------------------------------------
# recorded predictions


@dataclass(frozen=True)
class RecordedExample:
    """One user-oriented task as answered by every chosen recorded model."""

    instruction: str
    input: str
    target: str
    responses: dict[str, str]


def _pred_key(instruction: str, inp: str) -> tuple[str, str]:
    return instruction.strip(), inp.strip()


def load_predictions(model: str, root: str | Path | None = None) -> list[dict[str, str]]:
    """One recorded model's answers: rows with `instruction`, `input`, `response`, `target`."""
    p = predictions_path(model, root)
    rows = []
    for lineno, obj in iter_jsonl(p):
        for key in ("instruction", "input", "response", "target"):
            if not isinstance(obj.get(key), str):
                raise DataError(p, "missing or not a string", line=lineno, field=key)
        rows.append({k: obj[k] for k in ("instruction", "input", "response", "target")})
    return rows


def load_recorded(models: list[str], root: str | Path | None = None) -> list[RecordedExample]:
    """Align several recorded models' answers by (instruction, input).

    The order of the first model's file is kept; an example missing from any model is left out.
    """
    if len(models) != len(set(models)):
        raise ValueError(f"models must be distinct, got {models}")
    per_model = {}
    for m in models:
        per_model[m] = {
            _pred_key(r["instruction"], r["input"]): r for r in load_predictions(m, root)
        }
    first = load_predictions(models[0], root)
    out = []
    for r in first:
        k = _pred_key(r["instruction"], r["input"])
        if all(k in per_model[m] for m in models):
            out.append(
                RecordedExample(
                    instruction=k[0],
                    input=k[1],
                    target=r["target"],
                    responses={m: per_model[m][k]["response"] for m in models},
                )
            )
    return out
