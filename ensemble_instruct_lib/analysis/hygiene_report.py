"""How many texts the hygiene checks flag, on the public data and the kit's own outputs
(the measured rates of docs/hygiene.md).

- `contamination_rates`: the decontamination check (default settings, the run's evaluation sets)
  over the 175 Self-Instruct seed tasks, the authors' stage-2 template demonstrations
  (`data.reference`), and the records of run dirs (accepted stage-1 instructions, stage-2
  instances).
- `degenerate_rates`: the repeat-share criterion over the gold outputs of the 252 user-oriented
  tasks, the seed outputs, the eight recorded GPT-3-family answers, member answers of
  `eval-members` (``answers/*.jsonl``) and the stage-2/3 outputs of run dirs, with how many
  flagged outputs reached stage 4 (were a candidate) and were kept as the chosen output.

Run: python -m ensemble_instruct_lib.analysis.hygiene_report [--runs DIR ...] [--answers DIR]
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..data.eval_sets import user_oriented_items
from ..data.jsonl import read_jsonl
from ..data.public import PREDICTION_MODELS, load_predictions, load_seed_tasks
from ..method.decontaminate import Decontaminator
from ..method.degenerate import REPEAT_NGRAM, REPEAT_THRESHOLD, is_degenerate
from ..methods.hygiene import decontaminator
from ..runs.config import RunConfig, load_config

_BLOCK = re.compile(
    r"instruction:(?P<instruction>.*?)(?:\ninput:(?P<input>.*?))?\noutput:(?P<output>.*)", re.S
)


def reference_demos(data_dir: str | Path | None = None) -> list[dict[str, str]]:
    """The instruction/input/output demonstrations of the authors' fixed stage-2 texts."""
    from ..data.reference import load_reference

    out = []
    for task_type, text in load_reference(root=data_dir).instance.items():
        for k, block in enumerate(text.split("|EoS|")):
            m = _BLOCK.search(block)
            if m:
                out.append(
                    {
                        "id": f"ref-{task_type}-{k}",
                        **{
                            f: (m.group(f) or "").strip()
                            for f in ("instruction", "input", "output")
                        },
                    }
                )
    return out


def _flags(dec: Decontaminator, examples: Iterable[dict[str, Any]]) -> dict[str, Any]:
    rows = list(examples)
    hits = [(r, dec.check(r["instruction"], r.get("input"), r.get("output"))) for r in rows]
    found = [(r, m) for r, m in hits if m is not None]
    return {
        "checked": len(rows),
        "flagged": len(found),
        "matches": "; ".join(
            f"{r['id']} -> {m.set}/{m.item} ({m.kind} {m.field}, {m.score:.2f})" for r, m in found
        ),
    }


def contamination_rates(
    config: RunConfig, runs: Sequence[str | Path] = (), data_dir: str | Path | None = None
) -> pd.DataFrame:
    """One row per source: texts checked, flagged, and what they matched."""
    dec, _ = decontaminator(config)
    if dec is None:
        raise ValueError("decontaminate.sets is empty: nothing to check against")
    seeds = [
        {"id": s.id, "instruction": s.instruction, "input": i.input, "output": i.output}
        for s in load_seed_tasks()
        for i in s.instances
    ]
    rows = {
        "seed tasks (175, every instance)": _flags(dec, seeds),
        "authors' stage-2 demonstrations": _flags(dec, reference_demos(data_dir)),
    }
    for run in runs:
        run = Path(run)
        s1 = [r for p in sorted(run.glob("stage1_instructions_*.jsonl")) for r in read_jsonl(p)]
        cands = [
            {"id": r["candidate"], "instruction": r["instruction"]}
            for r in s1
            if r["instruction"] and r["reason"] != "target_reached"
        ]
        rows[f"{run.name}: stage-1 candidates"] = _flags(dec, cands)
        s2 = (
            read_jsonl(run / "stage2_instances.jsonl")
            if (run / "stage2_instances.jsonl").exists()
            else []
        )
        parsed = [r for r in s2 if r.get("output") is not None]
        rows[f"{run.name}: stage-2 instances"] = _flags(dec, parsed)
    return pd.DataFrame(rows).T.rename_axis("source")


def _degenerate_row(texts: Sequence[str | None]) -> dict[str, Any]:
    n = sum(is_degenerate(t) for t in texts)
    return {"texts": len(texts), "degenerate": n, "rate": round(n / max(len(texts), 1), 4)}


def degenerate_rates(
    runs: Sequence[str | Path] = (), answers: str | Path | None = None
) -> pd.DataFrame:
    """One row per source: texts, how many are degenerate (n-gram and threshold of
    `method.degenerate`), and for run members how many degenerate outputs were a stage-4
    candidate and how many were kept as the chosen output."""
    rows: dict[str, dict[str, Any]] = {
        "gold outputs, 252 user-oriented tasks": _degenerate_row(
            [it.references[0] for it in user_oriented_items()]
        ),
        "seed outputs (175 tasks, every instance)": _degenerate_row(
            [i.output for s in load_seed_tasks() for i in s.instances]
        ),
    }
    for model in PREDICTION_MODELS:
        preds = load_predictions(model)
        rows[f"recorded {model}"] = _degenerate_row([p["response"] for p in preds])
    if answers is not None:
        for p in sorted(Path(answers).glob("*.jsonl")):
            recs = [r for r in read_jsonl(p) if r.get("status") != "failed"]
            rows[f"eval-members {p.stem}"] = _degenerate_row([r.get("output") for r in recs])
    for run in runs:
        run = Path(run)
        s2 = [r for r in read_jsonl(run / "stage2_instances.jsonl") if r.get("output") is not None]
        rows[f"{run.name}: stage 2 (generator)"] = _degenerate_row([r["output"] for r in s2])
        kept = read_jsonl(run / "ensembled.jsonl") if (run / "ensembled.jsonl").exists() else []
        dropped = read_jsonl(run / "dropped.jsonl") if (run / "dropped.jsonl").exists() else []
        for p in sorted(run.glob("stage3_outputs_*.jsonl")):
            model = p.stem.removeprefix("stage3_outputs_")
            recs = [r for r in read_jsonl(p) if r.get("status") != "failed"]
            row = _degenerate_row([r["output"] for r in recs])

            def looping(d: dict[str, Any], model: str = model) -> bool:
                return model in d["models"] and is_degenerate(
                    d["candidates"][d["models"].index(model)]
                )

            row["in stage 4"] = sum(looping(d) for d in kept + dropped)
            row["chosen"] = sum(looping(d) and d.get("chosen_model") == model for d in kept)
            rows[f"{run.name}: stage 3 {model}"] = row
    frame = pd.DataFrame(rows).T.rename_axis("source")
    frame.attrs["criterion"] = f"repeat share of {REPEAT_NGRAM}-grams >= {REPEAT_THRESHOLD}"
    return frame


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", nargs="*", default=[], help="run dirs to count")
    ap.add_argument("--answers", default=None, help="an eval-members answers/ folder")
    ap.add_argument("--config", default=None, help="a run config (default: the default settings)")
    args = ap.parse_args(argv)
    cfg = (
        load_config(args.config)
        if args.config
        else load_config({"generator": {"kind": "scripted", "model": "none"}})
    )
    with pd.option_context("display.max_colwidth", 400, "display.width", 200):
        print("decontamination (default settings):")
        print(contamination_rates(cfg, args.runs).to_string())
        frame = degenerate_rates(args.runs, args.answers)
        print(f"\ndegenerate text ({frame.attrs['criterion']}):")
        print(frame.to_string())


if __name__ == "__main__":
    main()
