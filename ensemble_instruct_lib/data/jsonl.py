"""One way to read and write JSONL in the kit: atomic rewrites and crash-safe appends.

Every stage of the pipeline writes its results through `JsonlAppender`, which appends one record
per line and flushes it to disk. A process killed mid-write (``kill -9`` included) can leave at most
one torn last line; `repair_torn_tail` cuts it off before the next append, and `read_jsonl` skips it
with a warning when reading, so a resumed run neither duplicates nor loses a finished record.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from ..errors import DataError


def _iter_lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """Yield (1-based line number, raw line without newline, ended_with_newline)."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            ended = raw.endswith(b"\n")
            yield lineno, raw.rstrip(b"\r\n"), ended


def iter_jsonl(
    path: str | Path, *, allow_torn_tail: bool = False
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (1-based line number, record) for each non-blank line of a JSONL file of objects.

    Args:
        path: the file.
        allow_torn_tail: a last line with no newline that does not parse is the trace of a killed
            writer: stop there with a warning instead of failing.

    Raises:
        DataError: naming the file and line of a line that is not a JSON object.
    """
    path = Path(path)
    for lineno, raw, ended in _iter_lines(path):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            if allow_torn_tail and not ended:
                warnings.warn(
                    f"{path}, line {lineno}: discarding an incomplete last line "
                    "(left by an interrupted write)",
                    stacklevel=3,
                )
                return
            raise DataError(
                path,
                f"not valid JSON ({e})",
                line=lineno,
                hint="fix or delete that line; every line must be one JSON object",
            ) from None
        if not isinstance(obj, dict):
            raise DataError(
                path,
                f"expected a JSON object, got {type(obj).__name__}",
                line=lineno,
                hint="every line must be one JSON object",
            )
        yield lineno, obj


def read_jsonl(path: str | Path, *, allow_torn_tail: bool = True) -> list[dict[str, Any]]:
    """All records of a JSONL file, in order (see `iter_jsonl`; a torn last line is skipped)."""
    return [obj for _, obj in iter_jsonl(path, allow_torn_tail=allow_torn_tail)]


def repair_torn_tail(path: str | Path) -> bool:
    """Cut an incomplete last line (no trailing newline) off `path`.

    Returns:
        True when something was cut.
    """
    path = Path(path)
    if not path.exists():
        return False
    size = path.stat().st_size
    if size == 0:
        return False
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return False
        # walk back to the last newline
        block = 1 << 16
        pos = size
        keep = 0
        while pos > 0:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            chunk = f.read(step)
            i = chunk.rfind(b"\n")
            if i != -1:
                keep = pos + i + 1
                break
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return True


def _dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


class JsonlAppender:
    """Append records to a JSONL file, one flushed line each, after repairing a torn tail.

    Use as a context manager::

        with JsonlAppender(path) as out:
            out.append({"id": 1})
    """

    def __init__(self, path: str | Path, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_torn_tail(self.path)
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._fsync = fsync

    def append(self, record: dict[str, Any]) -> None:
        self._f.write(_dumps(record) + "\n")
        self._f.flush()
        if self._fsync:
            os.fsync(self._f.fileno())

    def extend(self, records: Iterable[dict[str, Any]]) -> None:
        for r in records:
            self.append(r)

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            self._f.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def _atomic_text(path: str | Path) -> Iterator[TextIO]:
    """A text file that replaces `path` only once fully written (temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Atomically replace `path` with `records`.

    Returns:
        The number of records written.
    """
    n = 0
    with _atomic_text(path) as f:
        for r in records:
            f.write(_dumps(r) + "\n")
            n += 1
    return n


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically replace `path` with `obj` as indented JSON."""
    with _atomic_text(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, default=str)
        f.write("\n")
