"""``KEY=VALUE`` command-line items (``-p k=v``, ``--set k=v``, ``--grid k=[..]``) as a mapping.

The one parser every subcommand uses: the text before the first ``=`` is the key, the rest is read
as a YAML value, so ``n=3`` gives an int, ``x=0.5`` a float, ``flag=true`` a bool, ``m=null``
None, ``xs=[1, 2]`` a list, ``d={a: 1}`` a dict and anything else a string (``name=gpt2``).
A later item with the same key wins. An item without ``=``, with an empty key or with a value that
is not valid YAML raises one `ConfigError` naming the option and the item.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import ConfigError


def parse_assignment(item: str, option: str = "--set") -> tuple[str, Any]:
    """One ``KEY=VALUE`` item as ``(key, value)``; VALUE is read as YAML.

    Args:
        item: the text given on the command line.
        option: the option it came with, for the error message (``-p``, ``--set``, ``--grid``).

    Raises:
        ConfigError: no ``=``, an empty key, or a VALUE that is not valid YAML.
    """
    import yaml

    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(
            f"{option} {item!r}: expected KEY=VALUE (VALUE is read as YAML, e.g. n=3, xs=[1, 2])"
        )
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(
            f"{option} {item!r}: the value is not valid YAML ({first}); quote it or fix it"
        ) from None
    return key, value


def parse_assignments(items: Iterable[str], option: str = "--set") -> dict[str, Any]:
    """``KEY=VALUE`` items as a dict (in order; a later key wins); see `parse_assignment`."""
    return dict(parse_assignment(item, option) for item in items)


__all__ = ["parse_assignment", "parse_assignments"]
