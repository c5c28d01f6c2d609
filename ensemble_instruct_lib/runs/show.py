"""What a finished run made, as plain text for a terminal: counts per stage and a few examples.

The quickstart prints it at the end (`python -m ensemble_instruct_lib show RUN_DIR`). It reads the
run dir's files only (manifest, ensembled and dropped examples); model text is shown as written,
cut to a width, so a long output cannot flood the terminal.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from ..data.jsonl import read_jsonl
from ..engines.ledger import format_ledger, read_ledger, summarize
from ..errors import ConfigError
from ..method.run_files import DROPPED, ENSEMBLED, MANIFEST


def _clip(text: str | None, limit: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _block(label: str, text: str | None, limit: int) -> list[str]:
    clipped = _clip(text, limit)
    if not clipped:
        return []
    lines = textwrap.wrap(
        clipped, width=92, initial_indent=f"  {label:<12}", subsequent_indent=" " * 14
    )
    return lines


def model_lines(models: dict[str, dict[str, Any]]) -> list[str]:
    """One line per model of the run: its role, engine, model and the weights it ran (a GGUF's
    sha256, a folder's digest), then how many distinct weights made the dataset."""
    if not models:
        return []
    lines = ["  models:"]
    for name, m in models.items():
        role = m.get("role") or "-"
        lines.append(
            f"    {name}: {role}, {m.get('backend', '?')} {m.get('model_id', '?')} "
            f"({m.get('revision') or 'no revision'})"
        )
    weights = {m.get("revision") for m in models.values() if m.get("revision")}
    lines.append(f"  {len(weights)} distinct weights")
    return lines


def describe_run(run_dir: str | Path, examples: int = 5, limit: int = 300) -> str:
    """Counts of every stage and the first `examples` kept examples of a run dir.

    Args:
        run_dir: a pipeline run dir (with ``manifest.json``).
        examples: how many kept examples to show (then, if none was kept, dropped ones).
        limit: characters shown per field.
    """
    out = Path(run_dir)
    if not (out / MANIFEST).exists():
        raise ConfigError(f"{out} is not a run dir (no {MANIFEST}): run the pipeline first")
    manifest: dict[str, Any] = json.loads((out / MANIFEST).read_text())
    counts = manifest.get("counts", {})
    lines = [f"run dir {out} ({manifest.get('status', '?')})"]
    lines += model_lines(manifest.get("models", {}))
    for group, c in counts.get("stage1", {}).items():
        lines.append(
            f"  stage 1, {group}: {c['accepted']} accepted of {c['candidates']} candidates"
        )
    for group, c in counts.get("stage2", {}).items():
        lines.append(f"  stage 2, {group}: {c['valid']} valid instances of {c['instructions']}")
    for name, n in counts.get("stage3", {}).items():
        lines.append(f"  stage 3, {name}: {n} outputs")
    s4 = counts.get("stage4")
    if s4:
        lines.append(f"  stage 4: kept {s4['kept']} of {s4['instances']} examples")
    lines += hygiene_lines(manifest.get("hygiene"))
    tokens = format_ledger(summarize(read_ledger(out)))
    if tokens:
        lines.append("  tokens per stage and model (ledger.jsonl):")
        lines += [f"    {line}" for line in tokens]
    kept = read_jsonl(out / ENSEMBLED) if (out / ENSEMBLED).exists() else []
    shown, title = kept, "kept examples"
    if not kept and (out / DROPPED).exists():
        shown, title = read_jsonl(out / DROPPED), "no example was kept; dropped ones"
    if shown and examples > 0:
        lines.append(f"\n{title} (first {min(examples, len(shown))} of {len(shown)}):")
        for rec in shown[:examples]:
            lines.append(f"- {rec['id']} ({rec.get('reason')}, chosen: {rec.get('chosen_model')})")
            lines += _block("instruction", rec.get("instruction"), limit)
            lines += _block("input", rec.get("input"), limit)
            lines += _block("output", rec.get("output"), limit)
    return "\n".join(lines)


def hygiene_lines(h: dict[str, Any] | None) -> list[str]:
    """The manifest's ``hygiene`` as lines: what decontamination and the degenerate filter
    dropped, per stage and set (none for a run made before they existed)."""
    if not h:
        return []
    sets = h.get("decontaminate", {}).get("sets") or []
    out = [f"  decontamination against {', '.join(sets)}" if sets else "  decontamination: off"]
    for stage, what in (("stage1", "instructions rejected"), ("stage2", "instances invalid")):
        per_set = h.get(stage, {}).get("contaminated") or {}
        if sets:
            out.append(
                f"    {stage.replace('stage', 'stage ')}: {sum(per_set.values())} {what}"
                f" as contaminated {json.dumps(per_set)}"
            )
    enabled = h.get("degenerate", {}).get("enabled")
    out.append(
        f"  degenerate (looping) text: {h.get('stage2', {}).get('degenerate', 0)} stage-2 "
        f"instances invalid{'' if enabled else ' (filter off)'}"
    )
    for name, c in (h.get("stage3") or {}).items():
        left = (h.get("stage4") or {}).get("degenerate_left_out", {}).get(name, 0)
        out.append(
            f"    stage 3 {name}: {c['degenerate']} of {c['outputs']} outputs degenerate; "
            f"{left} left out of stage 4"
        )
    return out


__all__ = ["describe_run", "hygiene_lines"]
