"""Parsers for LM responses (METHOD.md stages 1-3): each is a pure function of one response text.

- `parse_instructions`: a numbered-list response (stage 1) -> the instructions in it.
- `parse_instance`: a stage-2 continuation -> (input, output) of its first block, or None. The
  output may span several lines up to the end marker (the reference kept only the first line of a
  multi-line output, a defect this kit does not copy). A first block that opens with an
  `instruction:` line is kept only when that line repeats the instruction asked (after the
  stage-1 cleaning); an answer to a different instruction is rejected. Extra `instruction:` blocks
  the LM invented are returned separately so the pipeline can harvest them when asked to (off by
  default).
- `parse_output`: a stage-3 response cut at the stop markers and stripped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from .prompts import END, clean_instruction

#: Stage-3 stop markers (METHOD.md: stop at a blank line or the end marker).
OUTPUT_STOPS = ("\n\n", END)

_NUMBER = re.compile(r"(?m)^\s*\d{1,4}\s*[.)](?:[ \t]+|$)")
_FIELD = re.compile(r"(?im)^[ \t]*(instruction|input|output)[ \t]*:")


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut `text` before the earliest occurrence of any stop string.

    Returns:
        The cut text and whether a stop string was found.
    """
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i != -1 and i < cut:
            cut = i
    return text[:cut], cut != len(text)


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
        extra_blocks: further blocks the LM invented, each a dict with "instruction" and, where
            present, "input" and "output" (only harvested when the pipeline is asked to).
    """

    input: str
    output: str
    extra_blocks: tuple[dict[str, str], ...] = field(default=())

    @property
    def extra_instructions(self) -> tuple[str, ...]:
        return tuple(b["instruction"] for b in self.extra_blocks)


def _fields(block: str) -> list[tuple[str, str]]:
    """(field name, value) pairs of a block in order; a value runs to the next field line."""
    matches = list(_FIELD.finditer(block))
    out = []
    for k, m in enumerate(matches):
        end = matches[k + 1].start() if k + 1 < len(matches) else len(block)
        out.append((m.group(1).lower(), block[m.end() : end].strip()))
    return out


def _blocks(raw: str) -> list[list[tuple[str, str]]]:
    """Split a response into blocks: a block ends at the end marker or a new `instruction:`."""
    blocks: list[list[tuple[str, str]]] = []
    for chunk in raw.split(END):
        current: list[tuple[str, str]] | None = None
        for name, value in _fields(chunk):
            if current is None or (name == "instruction" and len(current) > 0):
                current = []
                blocks.append(current)
            current.append((name, value))
    return blocks


def parse_instance_verbose(
    raw: str, task_type: str, instruction: str
) -> tuple[ParsedInstance | None, str]:
    """Like `parse_instance` but also says why a response was rejected.

    Returns:
        (instance or None, reason); reason is "ok", "different_instruction", "no_output",
        "no_input", "unexpected_input", "empty_output", "empty_input" or "bad_task_type".
    """
    if task_type not in ("A", "B"):
        return None, "bad_task_type"
    blocks = _blocks(raw)
    first = blocks[0] if blocks else []
    if first and first[0][0] == "instruction":
        # an LM may repeat the instruction line first; one naming another task answers that one
        if clean_instruction(first[0][1]) != clean_instruction(instruction):
            return None, "different_instruction"
        first = first[1:]
    names = [n for n, _ in first]
    values = dict(reversed(first))  # first occurrence wins
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
    extras = []
    for b in blocks[1:]:
        if b[0][0] != "instruction":
            continue
        d = dict(reversed(b))
        text = clean_instruction(d["instruction"])
        if text:
            extras.append({k: (text if k == "instruction" else v.strip()) for k, v in d.items()})
    return ParsedInstance(inp, output, tuple(extras)), "ok"


def parse_instance(raw: str, task_type: str, instruction: str) -> ParsedInstance | None:
    """Parse a stage-2 continuation (the text the LM wrote after ``instruction: <new>\\n``).

    Type A needs an `input:` and an `output:` field with non-empty values; type B an `output:`
    field and no `input:`. Only the first block counts; when it opens with an `instruction:`
    line, that line must equal `instruction` (the one asked) after `prompts.clean_instruction`
    (whitespace collapsed, a trailing colon dropped), else the response is rejected.

    Returns:
        A `ParsedInstance`, or None when the response is not a valid instance.
    """
    return parse_instance_verbose(raw, task_type, instruction)[0]


def parse_output(raw: str, stop: Sequence[str] = OUTPUT_STOPS) -> str:
    """A stage-3 response cut before the first stop marker and stripped."""
    return cut_at_stop(raw.lstrip(), stop)[0].strip()
