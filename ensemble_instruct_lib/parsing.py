"""Parsers for LM responses (METHOD.md stages 1-3): each is a pure function of one response text.

- `parse_instructions`: a numbered-list response (stage 1) -> the instructions in it.
- `parse_instance`: a stage-2 continuation -> (input, output) of its first block, or None. The
  output may span several lines up to the end marker (the reference kept only the first line of a
  multi-line output, a defect this kit does not copy). Extra `instruction:` blocks the LM invented
  are returned separately so the pipeline can harvest them when asked to (off by default).
- `parse_output`: a stage-3 response cut at the stop markers and stripped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from .backends.base import cut_at_stop
from .prompts import END, clean_instruction

#: Stage-3 stop markers (METHOD.md: stop at a blank line or the end marker).
OUTPUT_STOPS = ("\n\n", END)

_NUMBER = re.compile(r"(?m)^\s*\d{1,4}\s*[.)](?:[ \t]+|$)")
_FIELD = re.compile(r"(?im)^[ \t]*(instruction|input|output)[ \t]*:")


def parse_instructions(raw: str) -> list[str]:
    """Instructions in a numbered-list response, in order, cleaned, empty ones dropped.

    The response to an Ensemble-Instruct stage-1 prompt starts right after "25." and normally
    holds one instruction ending in the end marker; a run-on response may continue with "26. ..."
    and so on. Self-Instruct-style responses hold many numbered items.
    """
    out = []
    for chunk in raw.split(END):
        for piece in _NUMBER.split(chunk):
            text = clean_instruction(piece)
            if text:
                out.append(text)
    return out


@dataclass(frozen=True)
class ParsedInstance:
    """The first block of a stage-2 response.

    Attributes:
        input: the input ("" for type B).
        output: the output, whole, possibly several lines.
        extra_instructions: `instruction:` lines of further blocks the LM invented.
    """

    input: str
    output: str
    extra_instructions: tuple[str, ...] = field(default=())


def _fields(block: str) -> list[tuple[str, str]]:
    """(field name, value) pairs of a block in order; a value runs to the next field line."""
    matches = list(_FIELD.finditer(block))
    out = []
    for k, m in enumerate(matches):
        end = matches[k + 1].start() if k + 1 < len(matches) else len(block)
        out.append((m.group(1).lower(), block[m.end() : end].strip()))
    return out


def parse_instance_verbose(raw: str, task_type: str) -> tuple[ParsedInstance | None, str]:
    """Like `parse_instance` but also says why a response was rejected.

    Returns:
        (instance or None, reason); reason is "ok", "no_output", "no_input", "unexpected_input",
        "empty_output", "empty_input" or "bad_task_type".
    """
    if task_type not in ("A", "B"):
        return None, "bad_task_type"
    first, *rest = raw.split(END)
    fields = _fields(first)
    # an LM that repeats the instruction line first: skip it
    start = 1 if fields and fields[0][0] == "instruction" else 0
    block: list[tuple[str, str]] = []
    for name, value in fields[start:]:
        if name == "instruction":
            break  # a run-on response without the end marker: the first block ends here
        block.append((name, value))
    extra = [v for name, v in fields[start:] if name == "instruction"]
    for chunk in rest:
        extra += [v for name, v in _fields(chunk) if name == "instruction"]
    names = [n for n, _ in block]
    values = dict(reversed(block))  # first occurrence wins
    if "output" not in names:
        return None, "no_output"
    if task_type == "A" and "input" not in names:
        return None, "no_input"
    if task_type == "B" and "input" in names:
        return None, "unexpected_input"
    output = values["output"].strip()
    inp = values.get("input", "").strip()
    if not output:
        return None, "empty_output"
    if task_type == "A" and not inp:
        return None, "empty_input"
    extras = tuple(clean_instruction(e) for e in extra if clean_instruction(e))
    return ParsedInstance(inp, output, extras), "ok"


def parse_instance(raw: str, task_type: str) -> ParsedInstance | None:
    """Parse a stage-2 continuation (the text the LM wrote after ``instruction: <new>\\n``).

    Type A needs an `input:` and an `output:` field with non-empty values; type B an `output:`
    field and no `input:`. Only the first block counts.

    Returns:
        A `ParsedInstance`, or None when the response is not a valid instance.
    """
    return parse_instance_verbose(raw, task_type)[0]


def parse_output(raw: str, stop: Sequence[str] = OUTPUT_STOPS) -> str:
    """A stage-3 response cut before the first stop marker and stripped."""
    return cut_at_stop(raw.lstrip(), stop)[0].strip()
