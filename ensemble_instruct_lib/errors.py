"""Errors a user can hit, each naming where the problem is and what to do about it."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A problem in an input file: names the file, the line (1-based) and the field.

    Attributes:
        path: the file.
        line: 1-based line number, or None when the problem is not on one line.
        field: the offending field (a dotted path such as ``instances[0].input``), or None.
        hint: what the user should do.
    """

    def __init__(
        self,
        path: str | Path,
        message: str,
        *,
        line: int | None = None,
        field: str | None = None,
        hint: str = "",
    ) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.hint = hint
        where = self.path + (f", line {line}" if line is not None else "")
        what = f"field '{field}': " if field else ""
        text = f"{where}: {what}{message}"
        if hint:
            text += f" ({hint})"
        super().__init__(text)


class ConfigError(ValueError):
    """An invalid configuration value; the message names the key and the allowed values."""


class TooManyFailures(RuntimeError):
    """Too many calls of a stage failed for good: the run stopped rather than go on making an
    empty or mostly-failed dataset (a dead server, a wrong model name, a bad API key)."""


class NetworkError(RuntimeError):
    """A download the kit needed could not be made: the message names the URL, the reason and
    the offline way out. Work finished before it (files already fetched) is kept.

    Attributes:
        url: what could not be fetched.
        reason: the short reason (e.g. ``Name or service not known``).
    """

    def __init__(self, url: str, reason: str, message: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(message)
