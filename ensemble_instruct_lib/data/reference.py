"""The authors' Ensemble-Instruct prompt templates, read as data from their pinned source files.

Implements the `reference` prompt set's data side (METHOD.md stages 1-3 in the authors' exact
wording): the three files of IBM/ensemble-instruct at the pinned commit (`data.public`
`REFERENCE_FILES`, fetched and sha256-checked by `fetch_data`) are parsed with `ast`, never
imported or executed, and no template text is copied into this project. What is read:

- stage 1 (`gen_instructions.py`, function `encode_prompt`): the header string, the f-string of one
  numbered demonstration line, the f-string of the next number, and the cleaning applied to each
  demonstration (a chain of `re.sub` / `strip` calls, kept as a list of operations);
- stage 2 (`templates/instance_template.py`): the type-A (`input_output_template`) and type-B
  (`output_template`) texts, each ending in `instruction:`;
- stage 3 (`gen_output_zeroshot.py`): the zero-shot prompt expression (instruction, separator,
  input, each field with its cleaning).

Left out: the authors' stage-2 assembly code and few-shot stage-3 prompt, which are not among the
pinned files (SOURCE.md describes the stage-2 assembly; `method.prompts` does it).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .public import (
    REFERENCE_COMMIT,
    REFERENCE_FILES,
    REFERENCE_SUBDIR,
    DataFile,
    data_dir,
    fetch_data,
    sha256_of,
    verify_data,
)
from .public import _download as _default_download

STAGE1_FILE = "ensemble_instruct/gen_instructions.py"
STAGE2_FILE = "ensemble_instruct/templates/instance_template.py"
STAGE3_FILE = "ensemble_instruct/gen_output_zeroshot.py"
#: the variable holding each task type's stage-2 template in `STAGE2_FILE`
STAGE2_NAMES = {"A": "input_output_template", "B": "output_template"}
_FETCH_HINT = (
    "run `python -m ensemble_instruct_lib fetch-data` (or `fetch-data --from <folder>` with a "
    "folder laid out like shared/data) to get the authors' files at commit "
    f"{REFERENCE_COMMIT[:7]}, or use `prompts: kit`"
)


@dataclass(frozen=True)
class Field:
    """A value slot of a template and the string operations applied to the value, in order.

    Each operation is (name, args): ("sub", (pattern, replacement)) is `re.sub`; ("strip", args),
    ("rstrip", args), ("lstrip", args) are the `str` methods with those arguments.
    """

    name: str
    ops: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def apply(self, value: str) -> str:
        for op, args in self.ops:
            value = re.sub(args[0], args[1], value) if op == "sub" else getattr(value, op)(*args)
        return value


#: A template: literal text pieces and value slots, concatenated in order.
Template = tuple[str | Field, ...]


def render(template: Template, **values: object) -> str:
    """The text of `template` with each slot filled from `values` (numbers are str()-ed)."""
    out = []
    for part in template:
        if isinstance(part, str):
            out.append(part)
        else:
            out.append(part.apply(str(values[part.name])))
    return "".join(out)


@dataclass(frozen=True)
class ReferenceTemplates:
    """The authors' prompt pieces, as read from their files.

    Attributes:
        instruction_header: stage 1's opening text (newline included).
        instruction_line: one numbered demonstration; slots `number` and `instruction`.
        instruction_next: what ends the prompt; slot `number`.
        instance: stage 2's fixed text per task type ("A", "B"), each ending in `instruction:`.
        zero_shot: stage 3's zero-shot prompt; slots `instruction` and `input`.
        source: the folder the files were read from.
    """

    instruction_header: str
    instruction_line: Template
    instruction_next: Template
    instance: dict[str, str]
    zero_shot: Template
    source: str


# --------------------------------------------------------------------------------------------
# locating and fetching


def reference_dir(folder: str | Path | None = None, root: str | Path | None = None) -> Path:
    """Where the authors' files are read from.

    Args:
        folder: a checkout of the authors' repository (holding `ensemble_instruct/...`).
        root: the data folder (default: `EI_DATA_DIR`, else the fetched copy); its
            `ensemble_instruct/` subfolder is used.
    """
    if folder is not None:
        return Path(folder).expanduser().resolve()
    return data_dir(root) / REFERENCE_SUBDIR


def _checked_text(base: Path, f: DataFile) -> str:
    path = base / f.upstream
    if not path.exists():
        raise DataError(path, "the authors' template file is missing", hint=_FETCH_HINT)
    digest = sha256_of(path)
    if digest != f.sha256:
        raise DataError(
            path,
            f"sha256 {digest} does not match the pinned {f.sha256} (commit {REFERENCE_COMMIT[:7]})",
            hint="the file is from another commit or was edited; run `python -m "
            "ensemble_instruct_lib fetch-data --force` to restore the pinned copy",
        )
    return path.read_text(encoding="utf-8")


def fetch_reference(
    dest: str | Path | None = None,
    *,
    source: str | Path | None = None,
    force: bool = False,
    download: Callable[[str, Path], None] = _default_download,
) -> dict[str, str]:
    """Fetch only the authors' files into the data folder `dest` (see `data.public.fetch_data`)."""
    return fetch_data(dest, source=source, force=force, download=download, files=REFERENCE_FILES)


def verify_reference(root: str | Path | None = None) -> dict[str, str]:
    """Check only the authors' files under the data folder (see `data.public.verify_data`)."""
    return verify_data(root, files=REFERENCE_FILES)


def load_reference(
    folder: str | Path | None = None, root: str | Path | None = None
) -> ReferenceTemplates:
    """Read and parse the authors' three files (sha256-checked) into `ReferenceTemplates`.

    Raises:
        DataError: a file is missing, has another digest, or does not hold what is expected.
    """
    base = reference_dir(folder, root)
    by_path = {f.upstream: f for f in REFERENCE_FILES}
    texts = {p: _checked_text(base, by_path[p]) for p in (STAGE1_FILE, STAGE2_FILE, STAGE3_FILE)}
    header, line, nxt = parse_stage1(texts[STAGE1_FILE], base / STAGE1_FILE)
    return ReferenceTemplates(
        instruction_header=header,
        instruction_line=line,
        instruction_next=nxt,
        instance=parse_stage2(texts[STAGE2_FILE], base / STAGE2_FILE),
        zero_shot=parse_stage3(texts[STAGE3_FILE], base / STAGE3_FILE),
        source=str(base),
    )


# --------------------------------------------------------------------------------------------
# parsing the files (ast only)


class _Unexpected(Exception):
    pass


def _fail(where: Path, what: str) -> DataError:
    return DataError(
        where,
        f"does not hold {what} where expected",
        hint=f"use the file of commit {REFERENCE_COMMIT[:7]} (run fetch-data --force)",
    )


def _const_str(node: ast.AST) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    raise _Unexpected


def _field(node: ast.AST, base_name: Callable[[ast.AST], str]) -> Field:
    """A value expression: a base (resolved by `base_name`) with chained re.sub / strip calls."""
    ops: list[tuple[str, tuple[str, ...]]] = []
    while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        attr = node.func
        if attr.attr in ("strip", "rstrip", "lstrip") and not node.keywords:
            ops.append((attr.attr, tuple(_const_str(a) for a in node.args)))
            node = attr.value
        elif (
            attr.attr == "sub"
            and isinstance(attr.value, ast.Name)
            and attr.value.id == "re"
            and len(node.args) == 3
            and not node.keywords
        ):
            ops.append(("sub", (_const_str(node.args[0]), _const_str(node.args[1]))))
            node = node.args[2]
        else:
            raise _Unexpected
    return Field(base_name(node), tuple(reversed(ops)))


def _fstring(node: ast.AST, slot: Callable[[ast.AST], Field]) -> Template:
    if not isinstance(node, ast.JoinedStr):
        raise _Unexpected
    parts: list[str | Field] = []
    for v in node.values:
        if isinstance(v, ast.Constant) and isinstance(v.value, str):
            parts.append(v.value)
        elif isinstance(v, ast.FormattedValue) and v.conversion == -1 and v.format_spec is None:
            parts.append(slot(v.value))
        else:
            raise _Unexpected
    return tuple(parts)


def _is_number(node: ast.AST) -> bool:
    """`<expr> + 1`: a 1-based item number."""
    return (
        isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Add)
        and isinstance(node.right, ast.Constant)
        and node.right.value == 1
    )


def parse_stage1(source: str, where: Path) -> tuple[str, Template, Template]:
    """(header, numbered-line template, next-number template) of `encode_prompt`."""
    try:
        fn = next(
            n
            for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.FunctionDef) and n.name == "encode_prompt"
        )
        first = fn.body[1] if isinstance(fn.body[0], ast.Expr) else fn.body[0]  # docstring
        if not (isinstance(first, ast.Assign) and isinstance(first.targets[0], ast.Name)):
            raise _Unexpected
        acc, header = first.targets[0].id, _const_str(first.value)
        loop = next(n for n in fn.body if isinstance(n, ast.For))
        if not isinstance(loop.target, ast.Tuple) or len(loop.target.elts) != 2:
            raise _Unexpected
        item = loop.target.elts[1]
        if not isinstance(item, ast.Name):
            raise _Unexpected
        cleaning = Field("instruction")
        line: Template | None = None
        for stmt in loop.body:
            if (
                isinstance(stmt, ast.Assign)
                and isinstance(stmt.targets[0], ast.Name)
                and stmt.targets[0].id == item.id
            ):
                cleaning = _field(stmt.value, lambda n: _name_of(n, item.id, "instruction"))
            elif _adds_to(stmt, acc):
                line = _fstring(stmt.value, lambda n, c=cleaning: _line_slot(n, item.id, c))
        after = [s for s in fn.body[fn.body.index(loop) + 1 :] if _adds_to(s, acc)]
        if line is None or len(after) != 1:
            raise _Unexpected
        nxt = _fstring(after[0].value, _number_slot)
    except (_Unexpected, StopIteration, IndexError, KeyError):
        raise _fail(where, "the stage-1 prompt builder `encode_prompt`") from None
    return header, line, nxt


def _name_of(node: ast.AST, var: str, name: str) -> str:
    if isinstance(node, ast.Name) and node.id == var:
        return name
    raise _Unexpected


def _adds_to(stmt: ast.stmt, acc: str) -> bool:
    return (
        isinstance(stmt, ast.AugAssign)
        and isinstance(stmt.op, ast.Add)
        and isinstance(stmt.target, ast.Name)
        and stmt.target.id == acc
    )


def _line_slot(node: ast.AST, item: str, cleaning: Field) -> Field:
    if isinstance(node, ast.Name) and node.id == item:
        return cleaning
    return _number_slot(node)


def _number_slot(node: ast.AST) -> Field:
    if _is_number(node):
        return Field("number")
    raise _Unexpected


def parse_stage2(source: str, where: Path) -> dict[str, str]:
    """The stage-2 template of each task type: {"A": ..., "B": ...}."""
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and isinstance(node.value, ast.Constant):
                found[target.id] = node.value.value
    out = {}
    for task_type, name in STAGE2_NAMES.items():
        text = found.get(name)
        if not isinstance(text, str) or not text.endswith("instruction:"):
            raise _fail(where, f"the type-{task_type} template `{name}` ending in 'instruction:'")
        out[task_type] = text
    return out


def parse_stage3(source: str, where: Path) -> Template:
    """The zero-shot prompt: the list comprehension assigned to `prompts`, as a template."""
    try:
        comp = next(
            n.value
            for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.Assign)
            and isinstance(n.targets[0], ast.Name)
            and n.targets[0].id == "prompts"
            and isinstance(n.value, ast.ListComp)
        )
        var = comp.generators[0].target
        if not isinstance(var, ast.Name):
            raise _Unexpected
        terms: list[ast.AST] = []
        node: ast.AST = comp.elt
        while isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            terms.insert(0, node.right)
            node = node.left
        terms.insert(0, node)
        parts: list[str | Field] = []
        for term in terms:
            if isinstance(term, ast.Constant):
                parts.append(_const_str(term))
            else:
                parts.append(_field(term, lambda n: _key_of(n, var.id)))
    except (_Unexpected, StopIteration, IndexError):
        raise _fail(where, "the zero-shot prompt expression `prompts = [...]`") from None
    if {p.name for p in parts if isinstance(p, Field)} != {"instruction", "input"}:
        raise _fail(where, "a zero-shot prompt made of the instruction and the input")
    return tuple(parts)


def _key_of(node: ast.AST, var: str) -> str:
    """`var["key"]` -> "key"."""
    if (
        isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Name)
        and node.value.id == var
    ):
        return _const_str(node.slice)
    raise _Unexpected
