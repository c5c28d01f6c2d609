"""One builder for every config: typed dataclasses from YAML files or mappings, with errors that
name the file, the line of the offending key, the field and what to do.

Run configs (`runs.config`), fine-tuning configs (`train.finetune`), the eval-members and
replication-study configs (`analysis.eval_members`, `analysis.replicate`) and the notebooks'
configs (`nb.steps.configs`, which locate errors in the notebook twin's ``parameters`` cell) are
dataclasses whose ``__post_init__`` checks raise `FieldError` through `check` (the field they
judge, relative to the dataclass). `build` makes one from a mapping:
unknown and missing keys, nested dataclasses (also optional ones and lists of them) and simple
types (int, float, str, bool) are checked here, the rest by the dataclass. Where the mapping came
from a YAML file (`read_mapping`), `ConfigSource` knows each key's line (from yaml's node marks), so
a bad value reads ``<file>, line <n>: <field>: <what is wrong and what to do>``. Overridden keys
lose their line (their value did not come from the file).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError


class FieldError(ConfigError):
    """A bad value of one config field.

    Attributes:
        field: the field's dotted path (``instruction.prompts_per_round``, ``extra_models[0]``);
            relative to the dataclass that raised it until `build` locates it.
        message: what is wrong and what to do, led by the field, without the file and line.
        file: the config file ("" when the config came from a mapping given in code).
        line: the 1-based line of the field's key in `file`, or None.
    """

    def __init__(
        self,
        field: str,
        message: str,
        *,
        file: str = "",
        line: int | None = None,
        named: bool = False,
    ) -> None:
        self.field = field
        self.message = message if named else _named(field, message)
        self.file = file
        self.line = line
        where = file + (f", line {line}" if file and line is not None else "")
        super().__init__(f"{where}: {self.message}" if where else self.message)


class _Placed(FieldError):
    """A FieldError whose `field` is the full path from the config's top and whose message
    already names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message, named=True)


def check(cond: bool, message: str, field: str | None = None) -> None:
    """Raise `FieldError` (naming `field`, relative to the dataclass checked) unless `cond`;
    without a field, a plain `ConfigError` about the dataclass as a whole."""
    if not cond:
        if field is None:
            raise ConfigError(message)
        raise FieldError(field, message)


def join(prefix: str, name: str) -> str:
    """The dotted path of `name` under `prefix` (``[i]`` items join without a dot)."""
    if not prefix:
        return name
    return prefix + name if name.startswith("[") else f"{prefix}.{name}"


def _parent(path: str) -> str:
    return re.sub(r"(\.[^.\[]*|\[\d+\]|^[^.\[]*)$", "", path)


@dataclass(frozen=True)
class ConfigSource:
    """Where a config's values came from: a file and the line of each key, or nothing.

    Attributes:
        file: the config file ("" for a mapping given in code).
        lines: dotted field path -> 1-based line of its key (items of a list: ``path[i]``).
    """

    file: str = ""
    lines: Mapping[str, int] = field(default_factory=dict)

    def line(self, path: str) -> int | None:
        """The line of `path`'s key, else of the nearest enclosing key that has one."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = _parent(path)
        return None

    def without(self, keys: Iterable[str]) -> ConfigSource:
        """This source with `keys` (top-level keys given elsewhere) and what is under them
        forgotten."""
        gone = set(keys)
        kept = {
            p: n for p, n in self.lines.items() if re.split(r"[.\[]", p, maxsplit=1)[0] not in gone
        }
        return ConfigSource(self.file, kept)

    def locate(self, error: FieldError) -> FieldError:
        """`error` with this source's file and the line of its field."""
        line = self.line(error.field)
        return FieldError(error.field, error.message, file=self.file, line=line, named=True)


def _key_lines(node: Any, prefix: str, out: dict[str, int]) -> None:
    import yaml

    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                path = join(prefix, key.value)
                out[path] = key.start_mark.line + 1
                _key_lines(value, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            path = f"{prefix}[{i}]"
            out[path] = item.start_mark.line + 1
            _key_lines(item, path, out)


def _yaml_error(path: Path, e: Exception) -> str:
    """One line for a YAML syntax error: file, line, column, what is wrong."""
    mark = getattr(e, "problem_mark", None)
    where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
    problem = " ".join(str(getattr(e, "problem", None) or e).split())
    context = getattr(e, "context", None)
    what = f"{' '.join(str(context).split())}: {problem}" if context else problem
    return f"{where}: not valid YAML ({what}); fix the syntax there (quote values with ':' or '#')"


def read_mapping(
    source: str | Path | Mapping[str, Any], keys_hint: str, example: str
) -> tuple[dict[str, Any], ConfigSource]:
    """A config's top-level mapping (copied) and its `ConfigSource`, from a YAML file or a mapping.

    Raises:
        ConfigError: the file is missing, is not valid YAML (file, line, column) or its top level
            is not a mapping (naming `keys_hint` and the `example` file to look at).
    """
    if isinstance(source, Mapping):
        return dict(source), ConfigSource()
    import yaml

    path = Path(source)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) or {}
        lines: dict[str, int] = {}
        if isinstance(data, dict):
            _key_lines(yaml.compose(text, Loader=yaml.SafeLoader), "", lines)
    except yaml.YAMLError as e:
        raise ConfigError(_yaml_error(path, e)) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of config keys ({keys_hint}), got a "
            f"{type(data).__name__}; see {example}"
        )
    return data, ConfigSource(str(path), lines)


def build(
    cls: type,
    data: Any,
    source: ConfigSource | None = None,
    *,
    number_strings: bool = False,
) -> Any:
    """Dataclass `cls` from a mapping, every error located in `source`.

    Args:
        number_strings: accept numeric strings for float fields (YAML 1.1 reads ``2e-5``, an
            exponent without a dot, as a string).

    Raises:
        FieldError: unknown or missing keys, a value of the wrong type, or a dataclass check;
            naming the file and line (when `source` has them) and the field.
    """
    try:
        return _build(cls, data, "", number_strings)
    except FieldError as e:
        raise (source or ConfigSource()).locate(e) from None


def _named(path: str, message: str) -> str:
    """`message` led by the field's `path`, unless it already names the field first."""
    first = re.split(r"[\s:]", message, maxsplit=1)[0]
    if not path or message.startswith(path) or first.endswith(path):
        return message
    return f"{path}: {message}"


def _build(cls: type, data: Any, where: str, number_strings: bool) -> Any:
    if dataclasses.is_dataclass(data):
        return data
    if not isinstance(data, dict):
        raise _Placed(
            where, _named(where or "config", f"expected a mapping, got {type(data).__name__}")
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - {n for n, f in fields.items() if f.init})
    if unknown:
        raise _Placed(
            join(where, str(unknown[0])),
            _named(where or "config", f"unknown key(s) {unknown}; allowed: {sorted(fields)}"),
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _value(hints[key], value, join(where, key), number_strings)
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.init
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise _Placed(where, _named(where or "config", f"missing required key(s) {missing}"))
    try:
        return cls(**kwargs)
    except _Placed:
        raise
    except FieldError as e:
        path = join(where, e.field)
        raise _Placed(path, _named(path, e.message.removeprefix(f"{e.field}: "))) from None
    except ConfigError as e:
        raise _Placed(where, _named(where, str(e))) from None


def _placed(error: FieldError) -> _Placed:
    return _Placed(error.field, error.message)


def _value(hint: Any, value: Any, where: str, number_strings: bool) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = _is_union(hint) and len(args) < len(typing.get_args(hint))
    if optional and value is None:
        return None
    if _is_union(hint) and len(args) == 1:
        hint = args[0]
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where, number_strings)
    if typing.get_origin(hint) is list and typing.get_args(hint):
        inner = typing.get_args(hint)[0]
        if dataclasses.is_dataclass(inner):
            if not isinstance(value, list):
                raise _Placed(where, f"{where}: expected a list, got {type(value).__name__}")
            return [_build(inner, v, f"{where}[{i}]", number_strings) for i, v in enumerate(value)]
    try:
        return coerce(hint, value, where, number_strings=number_strings)
    except FieldError as e:
        raise _placed(e) from None


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


_SIMPLE = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def coerce(hint: Any, value: Any, where: str, *, number_strings: bool = False) -> Any:
    """`value` checked against a simple type hint (int, float, str, bool, optional or a union of
    them; an int is taken for a float); other hints are left to the dataclass.

    Raises:
        FieldError: naming the field `where`, the expected type and the value.
    """
    options = [a for a in typing.get_args(hint) if a is not type(None)] if _is_union(hint) else []
    if _is_union(hint):
        if value is None and len(options) < len(typing.get_args(hint)):
            return None
        hint = options[0] if len(options) == 1 else None
    if hint not in _SIMPLE:
        return value
    if isinstance(value, hint) and not (hint is not bool and isinstance(value, bool)):
        return value
    if hint is float and not isinstance(value, bool):
        if isinstance(value, int):
            return float(value)
        if number_strings and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    raise FieldError(where, f"expected {_SIMPLE[hint]}, got {value!r}")
