"""Export a finished run: Alpaca-style JSONL, a Hugging Face `datasets` dataset, a dataset card.

Reads ``ensembled.jsonl`` (and ``single_output.jsonl``, the no-ensemble baseline) and
``manifest.json`` of a run dir written by `pipeline.run`; writes ``alpaca.jsonl``,
``alpaca_single_output.jsonl``, ``hf_dataset/`` (``Dataset.save_to_disk``) and ``README.md``
listing models, prompts, parameters, counts and provenance.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..data.jsonl import read_jsonl, write_jsonl

ALPACA = "alpaca.jsonl"
ALPACA_SINGLE = "alpaca_single_output.jsonl"
HF_DIR = "hf_dataset"
CARD = "README.md"


def to_alpaca(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Records with instruction/input/output -> Alpaca rows (input "" when absent)."""
    return [
        {"instruction": r["instruction"], "input": r.get("input") or "", "output": r["output"]}
        for r in records
        if r.get("output")
    ]


def save_hf_dataset(rows: list[dict[str, Any]], path: str | Path) -> Path | None:
    """Save rows as a `datasets.Dataset` with `save_to_disk`; None when `datasets` is missing."""
    try:
        import datasets
    except ImportError:
        return None
    datasets.disable_progress_bars()
    path = Path(path)
    ds = (
        datasets.Dataset.from_list(rows)
        if rows
        else datasets.Dataset.from_dict(
            {"instruction": [], "input": [], "output": [], "id": [], "task_type": []}
        )
    )
    ds.save_to_disk(str(path))
    return path


def _model_licences(specs: list[dict[str, Any]]) -> dict[str, str]:
    """Known models (engines/models.py) among the run's model specs -> their licence."""
    from ..engines.models import KNOWN_MODELS

    return {
        s["model"]: KNOWN_MODELS[s["model"]].licence
        for s in specs
        if s.get("model") in KNOWN_MODELS
    }


def dataset_card(manifest: dict[str, Any], n_rows: int, n_single: int) -> str:
    """A README.md for the run: what made the data and how much of it there is."""
    cfg = manifest["config"]
    c = manifest.get("counts", {})
    lines = [
        f"# Ensemble-Instruct dataset: {cfg['name']}",
        "",
        "Instruction-tuning data generated with the Ensemble-Instruct method (Lee et al., Findings",
        "of EMNLP 2023) by the `ensemble-instruct` kit. Each example's output is the consensus of",
        "the instance generator's output and the extra models' outputs (Rouge-L agreement).",
        "",
        f"- examples: **{n_rows}** ensembled (`{ALPACA}`, `{HF_DIR}/`); {n_single} single-output "
        f"examples without ensembling (`{ALPACA_SINGLE}`) for comparison",
        f"- seed tasks: `{manifest.get('seed_file', '')}`; random seed {cfg['seed']}",
        f"- task types: {', '.join(cfg['task_types'])} (A: needs input, B: output only); "
        f"target {cfg['num_instructions']} instructions per type",
        "",
        "## Models",
        "",
        "| role | name | backend | model | revision |",
        "| --- | --- | --- | --- | --- |",
    ]
    models = manifest.get("models", {})
    specs = [cfg["generator"], *cfg["extra_models"]]
    for spec in specs:
        m = models.get(spec["name"], {})
        role = (
            "generator (stages 1-2)"
            if spec is cfg["generator"]
            else f"extra ({spec['prompt_style']})"
        )
        lines.append(
            f"| {role} | {spec['name']} | {spec['kind']} | {spec['model']} | {m.get('revision', '')} |"
        )
    licences = _model_licences(specs)
    if licences:
        lines += ["", "Model licences (the generated data is subject to them):", ""]
        lines += [f"- {name}: {licence}" for name, licence in licences.items()]
    lines += ["", "## Counts", ""]
    for t, s1 in c.get("stage1", {}).items():
        s2 = c.get("stage2", {}).get(t, {})
        lines.append(
            f"- type {t}: {s1['accepted']} instructions accepted of {s1['candidates']} candidates "
            f"(rejected: {json.dumps(s1['rejected'])}); {s2.get('valid', 0)} valid instances of "
            f"{s2.get('instructions', 0)}"
        )
    if "stage4" in c:
        s4 = c["stage4"]
        reasons = {k.split(":", 1)[1]: v for k, v in s4.items() if k.startswith("reason:")}
        lines.append(
            f"- consensus: kept {s4['kept']} of {s4['instances']} "
            f"(threshold {cfg['consensus']['threshold']}, selector {cfg['consensus'].get('selector') or cfg['consensus']['rule']}; "
            f"decisions: {json.dumps(reasons)})"
        )
    lines += hygiene_section(manifest.get("hygiene"))
    lines += token_table(manifest.get("ledger", {}))
    lines += [
        "",
        "## Prompts and parameters",
        "",
        f"- prompt versions: {json.dumps(manifest.get('prompt_versions', {}))}",
        f"- stage 1: {json.dumps(cfg['instruction'])}",
        f"- stage 2: {json.dumps(cfg['instance'])}",
        f"- stage 3: {json.dumps(cfg['output'])}",
        "",
        "## Provenance",
        "",
        f"- software: {json.dumps(manifest.get('versions', {}))}",
        f"- started {manifest.get('started', '')}, finished {manifest.get('finished', '')}; "
        f"cache {json.dumps(manifest.get('cache', {}))}",
        "- seed tasks: Self-Instruct (Wang et al., 2023), Apache-2.0, unless another seed file is "
        "named above. Check each model's license before using its outputs.",
        "",
    ]
    return "\n".join(lines)


def token_table(ledger: dict[str, Any]) -> list[str]:
    """The card's "Tokens" section: the run's ledger (`engines.ledger`) as a Markdown table."""
    from ..engines.ledger import FIELDS, ledger_rows

    rows = ledger_rows(ledger)
    if not rows:
        return []
    lines = [
        "",
        "## Tokens",
        "",
        "LM calls per stage and model over every invocation of the run (`ledger.jsonl`): new calls "
        "with their tokens and wall time, cache hits counted apart.",
        "",
        "| stage | model | " + " | ".join(FIELDS) + " |",
        "| --- | --- | " + " | ".join("---" for _ in FIELDS) + " |",
    ]
    for r in rows:
        lines.append(
            f"| {r['stage']} | {r['model']} | " + " | ".join(str(r[f]) for f in FIELDS) + " |"
        )
    return lines


def hygiene_section(h: dict[str, Any] | None) -> list[str]:
    """The card's "Hygiene" lines: the evaluation sets the data was decontaminated against, what
    was dropped as contaminated or degenerate (docs/hygiene.md); none for an older run."""
    from .show import hygiene_lines

    if not h:
        return []
    d = h.get("decontaminate", {})
    head = (
        f"Decontaminated against {', '.join(d['sets'])} (n-gram {d.get('ngram')}, "
        f"Rouge-L > {d.get('rouge_l')} on instructions; docs/hygiene.md):"
        if d.get("sets")
        else "Not decontaminated against any evaluation set (decontaminate.sets: []):"
    )
    notes = [f"- read {n}" for n in d.get("read", [])]
    return ["", "## Hygiene", "", head, "", *notes] + [
        "- " + line.strip() for line in hygiene_lines(h)[1:]
    ]


def export_run(out_dir: str | Path) -> dict[str, Any]:
    """Write every export of a run dir; returns the paths written and row counts."""
    out = Path(out_dir)
    manifest = json.loads((out / "manifest.json").read_text())
    ensembled = read_jsonl(out / "ensembled.jsonl")
    single = (
        read_jsonl(out / "single_output.jsonl") if (out / "single_output.jsonl").exists() else []
    )
    rows = to_alpaca(ensembled)
    write_jsonl(out / ALPACA, rows)
    write_jsonl(out / ALPACA_SINGLE, to_alpaca(single))
    hf_rows = [
        {**a, "id": r["id"], "task_type": r["task_type"]}
        for a, r in zip(rows, [r for r in ensembled if r.get("output")], strict=True)
    ]
    hf = save_hf_dataset(hf_rows, out / HF_DIR)
    (out / CARD).write_text(dataset_card(manifest, len(rows), len(single)))
    return {
        "alpaca": len(rows),
        "single_output": len(single),
        "hf_dataset": str(hf) if hf else None,
    }
