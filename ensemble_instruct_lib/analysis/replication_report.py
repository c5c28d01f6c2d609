"""The replication study's tables, comparisons and report, from per-item scores (pure functions,
no model; `replicate.py` runs the study and calls these).

A *score row* is one answer scored against gold: ``finding``-independent fields ``student`` (or
``member`` for finding 3), ``system``, ``seed`` (None where the system has no seed), ``benchmark``,
``item`` and ``rouge`` (Rouge-L F with stemming, 0-1, the best over the item's references).

- `system_table`: mean Rouge-L x100 per (student, system, benchmark), with the spread over seeds.
- `compare`: the paper's comparison "a beats b" as the mean per-item difference x100 and its 95%
  paired bootstrap interval. With seeds, each item's score is first averaged over the seeds both
  systems share, so the interval is over items (the seed spread is reported beside it).
- `report_markdown`: `docs/replication.md` (the paper's number, ours, the interval, n, seeds).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .eval_members import paired_bootstrap


@dataclass(frozen=True)
class Comparison:
    """One comparison the paper makes: `a` against `b` for one student (or the members)."""

    finding: str
    label: str
    student: str
    a: str
    b: str


def system_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean Rouge-L x100 per (student, system, benchmark): ``n`` items, ``seeds`` (how many),
    ``rougeL`` (the mean over seeds of each seed's mean) and ``seed_sd`` (their standard deviation,
    NaN with one seed)."""
    rows = []
    keys = ["student", "system", "benchmark"]
    for (student, system, bench), g in scores.groupby(keys, sort=False, dropna=False):
        # seed: None for untuned systems (an object column once concatenated): -1 groups them
        per_seed = g.groupby(pd.to_numeric(g["seed"]).fillna(-1), sort=True)["rouge"].mean() * 100
        rows.append(
            {
                "student": student,
                "system": system,
                "benchmark": bench,
                "n": int(g["item"].nunique()),
                "seeds": int(len(per_seed)),
                "rougeL": round(float(per_seed.mean()), 2),
                "seed_sd": round(float(per_seed.std(ddof=1)), 2) if len(per_seed) > 1 else math.nan,
            }
        )
    return pd.DataFrame(rows, columns=[*keys, "n", "seeds", "rougeL", "seed_sd"])


def _item_means(scores: pd.DataFrame, student: str, system: str, bench: str) -> pd.Series:
    g = scores[
        (scores["student"] == student)
        & (scores["system"] == system)
        & (scores["benchmark"] == bench)
    ]
    return g.groupby("item", sort=True)["rouge"].mean()


def compare(
    scores: pd.DataFrame,
    comparisons: Sequence[Comparison],
    *,
    n_resamples: int = 10000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (comparison, benchmark): ``n`` paired items, ``mean_a``, ``mean_b``, ``diff``
    (mean of a - b, x100) and its 95% paired bootstrap interval ``lo``, ``hi``; ``wins`` says
    whether the interval lies above 0 ("a"), below ("b") or contains it ("neither"). A comparison
    whose systems were not scored on a benchmark gets no row."""
    rows = []
    for c in comparisons:
        for bench in sorted(scores["benchmark"].unique()):
            a = _item_means(scores, c.student, c.a, bench)
            b = _item_means(scores, c.student, c.b, bench)
            common = a.index.intersection(b.index)
            if len(common) == 0:
                continue
            diff, lo, hi = paired_bootstrap(
                a[common].to_numpy(), b[common].to_numpy(), n_resamples=n_resamples, seed=seed
            )
            rows.append(
                {
                    "finding": c.finding,
                    "seeds": _seed_diffs(scores, c, bench, common),
                    "comparison": c.label,
                    "student": c.student,
                    "a": c.a,
                    "b": c.b,
                    "benchmark": bench,
                    "n": int(len(common)),
                    "mean_a": round(100 * float(a[common].mean()), 2),
                    "mean_b": round(100 * float(b[common].mean()), 2),
                    "diff": round(100 * diff, 2),
                    "lo": round(100 * lo, 2),
                    "hi": round(100 * hi, 2),
                    "wins": "a" if lo > 0 else "b" if hi < 0 else "neither",
                }
            )
    cols = ["finding", "comparison", "student", "a", "b", "benchmark", "n"]
    return pd.DataFrame(
        rows, columns=[*cols, "mean_a", "mean_b", "diff", "lo", "hi", "wins", "seeds"]
    )


def _seed_diffs(scores: pd.DataFrame, c: Comparison, bench: str, items: pd.Index) -> str:
    """Each seed's own difference x100 ("s0 +1.2, s1 -0.3"), a system without seeds taken as it
    is for every seed; "" when neither side has seeds."""
    sel = scores[(scores["student"] == c.student) & (scores["benchmark"] == bench)]
    sel = sel[sel["item"].isin(items)]
    a, b = sel[sel["system"] == c.a], sel[sel["system"] == c.b]
    seeds = sorted(set(a["seed"].dropna()) | set(b["seed"].dropna()))
    parts = []
    for seed in seeds:
        sa = a[a["seed"] == seed] if a["seed"].notna().any() else a
        sb = b[b["seed"] == seed] if b["seed"].notna().any() else b
        if len(sa) and len(sb):
            parts.append(f"s{int(seed)} {100 * (sa['rouge'].mean() - sb['rouge'].mean()):+.1f}")
    return ", ".join(parts)


def seeds_of(scores: pd.DataFrame, student: str, system: str) -> list[int]:
    g = scores[(scores["student"] == student) & (scores["system"] == system)]
    return sorted(int(s) for s in g["seed"].dropna().unique())


# --------------------------------------------------------------------------------------------
# markdown


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.1f}"
    return str(v)


def markdown_table(df: pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    cols = list(columns or df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def seed_signs_disagree(seeds: str) -> bool:
    """Whether the per-seed differences (`compare`'s ``seeds``: "s0 +6.0, s1 -0.9") point both
    ways."""
    values = [float(part.split()[1]) for part in seeds.split(", ") if part]
    return any(v > 0 for v in values) and any(v < 0 for v in values)


def verdict(row: Mapping[str, Any]) -> str:
    """One sentence on what a comparison row shows (and a second when its seeds disagree: the
    interval covers the items, not the seeds)."""
    what = f"{row['a']} vs {row['b']}"
    if row["wins"] == "a":
        said = f"{what}: {row['a']} is ahead ({row['diff']:+.1f}, interval above 0)."
    elif row["wins"] == "b":
        said = f"{what}: {row['b']} is ahead ({row['diff']:+.1f}, interval below 0)."
    else:
        said = (
            f"{what}: no difference can be claimed ({row['diff']:+.1f}, interval "
            f"[{row['lo']:.1f}, {row['hi']:.1f}] contains 0)."
        )
    seeds = row.get("seeds") or ""
    if row["wins"] != "neither" and seed_signs_disagree(seeds):
        said += f" But the seeds disagree ({seeds}), so it rests on one seed's data."
    return said


def intervals_figure(comparisons: pd.DataFrame) -> Any:
    """Each comparison's difference (x100) with its 95% interval, one panel per benchmark."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    benches = sorted(comparisons["benchmark"].unique()) or ["-"]
    n = max(1, max((comparisons["benchmark"] == b).sum() for b in benches))
    fig, axes = plt.subplots(
        1, len(benches), figsize=(7 * len(benches), 0.5 * n + 1.5), squeeze=False
    )
    for ax, bench in zip(axes[0], benches, strict=True):
        d = comparisons[comparisons["benchmark"] == bench].reset_index(drop=True)
        y = np.arange(len(d))[::-1]
        ax.errorbar(
            d["diff"], y, xerr=[d["diff"] - d["lo"], d["hi"] - d["diff"]], fmt="o", capsize=3
        )
        ax.axvline(0, color="grey", lw=1)
        ax.set_yticks(y, [f"{f}: {c}" for f, c in zip(d["finding"], d["comparison"], strict=True)])
        ax.set_xlabel("Rouge-L x100, a - b\n(95% paired bootstrap interval)")
        ax.set_title(bench)
    fig.tight_layout()
    return fig


def scores_figure(systems: pd.DataFrame) -> Any:
    """Mean Rouge-L x100 per system, one bar group per student (the seed spread as error bars)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    benches = sorted(systems["benchmark"].unique()) or ["-"]
    fig, axes = plt.subplots(1, len(benches), figsize=(8 * len(benches), 4), squeeze=False)
    for ax, bench in zip(axes[0], benches, strict=True):
        d = systems[systems["benchmark"] == bench].reset_index(drop=True)
        labels = [f"{s}\n{m}" for s, m in zip(d["student"], d["system"], strict=True)]
        ax.bar(range(len(d)), d["rougeL"], yerr=d["seed_sd"], capsize=3)  # NaN (one seed): no bar
        ax.set_xticks(range(len(d)), labels, rotation=60, ha="right", fontsize=8)
        ax.set_ylabel("Rouge-L x100 (error bar: sd over seeds)")
        ax.set_title(bench)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# the report

#: What the paper claims for each finding (its abstract's three findings, and its set-up). The
#: tables' own numbers could not be read on the machine this kit was built on; see
#: docs/replication.md, "The paper's numbers".
CLAIMS = {
    "1": (
        "Ensemble-Instruct's categorized, simplified prompts yield higher-quality instruction-tuning "
        "data than Self-Instruct's prompts on the same 10B-40B LMs (judged by a student fine-tuned "
        "on each dataset)."
    ),
    "2": (
        "Fine-tuning on the ensembled data improves both a vanilla and an instruction-tuned student "
        "by significant margins (the paper's students: Pythia-1.4B, GPT-JT-6B, MPT-7B), and beats "
        "the same data without ensembling."
    ),
    "3": (
        "Smaller instruction-tuned LMs (flan-t5-xxl 11B, flan-ul2 20B) generate more useful outputs "
        "than their larger vanilla counterparts (falcon-40b, ul2)."
    ),
}
TITLES = {
    "1": "Finding 1: Ensemble-Instruct's prompts vs Self-Instruct's",
    "2": "Finding 2: ensembled data vs single-output data, vanilla and instruction-tuned students",
    "3": "Finding 3: a small instruction-tuned LM vs a larger vanilla one as output generator",
}
COMPARISON_COLUMNS = [
    "comparison",
    "student",
    "benchmark",
    "n",
    "mean_a",
    "mean_b",
    "diff",
    "lo",
    "hi",
    "wins",
    "seeds",
]


def timing_summary(timings: pd.DataFrame) -> pd.DataFrame:
    """Seconds per kind of step (finding3, data, finetune, evaluate) and their share."""
    if timings.empty:
        return pd.DataFrame(columns=["step", "minutes", "share"])
    kind = timings["step"].str.split(" ").str[0]
    g = timings.groupby(kind, sort=False)["seconds"].sum()
    total = float(g.sum())
    rows = [
        {"step": k, "minutes": round(v / 60, 1), "share": f"{100 * v / total:.0f}%"}
        for k, v in g.items()
    ]
    rows.append({"step": "total", "minutes": round(total / 60, 1), "share": "100%"})
    return pd.DataFrame(rows)


def finding_sentence(comp: pd.DataFrame, finding: str) -> str:
    """One sentence per comparison of a finding, joined."""
    d = comp[comp["finding"] == finding]
    return " ".join(verdict(r) for _, r in d.iterrows()) or "Not measured yet."


def report_markdown(
    *,
    setup: Mapping[str, Any],
    systems: pd.DataFrame,
    comparisons: pd.DataFrame,
    data: pd.DataFrame,
    timings: pd.DataFrame,
    figures: Mapping[str, str],
    notes: Sequence[str] = (),
) -> str:
    """docs/replication.md: set-up, one section per finding (the paper's claim, our table, the
    intervals, one sentence each), the data runs, the time it took and the caveats."""
    lines = [
        "# Replicating the paper's three findings in miniature",
        "",
        "Written by `python -m ensemble_instruct_lib replicate --config "
        f"{setup['config']}` from the study folder `{setup['out']}` (rerun it, or add "
        "`--report-only`, to rebuild this page). Scores are Rouge-L (stemmed, x100) against gold; "
        "`diff` is the mean per-item difference a - b with its 95% paired bootstrap interval "
        f"[lo, hi] over items ({setup['n_resamples']} resamples); with seeds, each item's score is "
        "first averaged over the seeds, and `seeds` gives each seed's own difference (the interval "
        "does not cover the seeds). `wins` says which side the interval excludes 0 for.",
        "",
        "## Set-up",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in setup["facts"].items()]
    lines += [""]
    for note in notes:
        lines += [f"> {note}", ""]
    lines += [
        "## How it is run",
        "",
        "1. Finding 3: the eval-members answers of each member on the gold tasks (the stage-3 "
        "prompt each member uses in the pipeline), scored alone.",
        "2. Data: one pipeline run per prompt method (Ensemble-Instruct's, Self-Instruct's) and "
        "seed, with the same generator, mixture and stage-4 rule. From each: the kept (ensembled) "
        "examples; from the Ensemble-Instruct run also the stage-2 outputs alone (the no-ensemble "
        "control). Every training set is cut to the size of the smallest kept set by a seeded draw.",
        "3. Students: LoRA fine-tunes of a vanilla and an instruction-tuned model on those sets "
        "(finding 1: ei vs si for the finding-1 student; finding 2: ei vs single for both).",
        "4. Evaluation: every untuned and tuned student answers the gold tasks greedily in the "
        "fine-tuning prompt format through transformers; Rouge-L against gold.",
        "",
        "## The paper's numbers",
        "",
        "The paper states its findings with Rouge-L tables of students it fine-tuned (Pythia-1.4B, "
        "GPT-JT-6B, MPT-7B) on data made by 10B-40B LMs, scored on SuperNI's test split and the 252 "
        "user-oriented tasks. Those tables could not be read where this study was run (no internet; "
        "the stored copies of the paper held its abstract and introduction only), so each finding "
        "below gives the paper's claim in words, and ours in numbers. At 135M-270M parameters, tens "
        "of training examples and a LoRA of a few dozen steps, agreement in direction is the most "
        "this study can show; a difference whose interval contains 0 is not a result either way.",
        "",
    ]
    for finding in ("3", "1", "2"):
        lines += [f"## {TITLES[finding]}", "", f"**The paper:** {CLAIMS[finding]}", ""]
        d = comparisons[comparisons["finding"] == finding]
        if finding == "1" and not data.empty:
            cols = [
                c
                for c in [
                    "run",
                    "method",
                    "seed",
                    "kept",
                    "single_output",
                    "stage1_acceptance",
                    "novelty_mean",
                    "stage2_valid_rate",
                    "stage4_kept_rate",
                    "div_distinct_verbs",
                    "output_words",
                ]
                if c in data.columns
            ]
            lines += ["The data runs (intrinsic metrics, as the method grid reports them):", ""]
            lines += [markdown_table(data, cols), ""]
        lines += ["**Ours:**", ""]
        lines += [markdown_table(d, COMPARISON_COLUMNS) if not d.empty else "Not measured yet.", ""]
        lines += [f"**What it shows:** {finding_sentence(comparisons, finding)}", ""]
    lines += ["## Every system", "", markdown_table(systems), ""]
    for title, path in figures.items():
        lines += [f"![{title}]({path})", ""]
    lines += ["## What it took", "", markdown_table(timing_summary(timings)), ""]
    lines += [
        "Times are the attempts that finished (an interrupted attempt's time is lost); finding 3's "
        "answers come from `eval-members` when its folder was reused.",
        "",
    ]
    return "\n".join(lines)


def readme_block(comparisons: pd.DataFrame, link: str) -> str:
    """The README's summary: one line per comparison."""
    lines = [
        f"Measured by `replicate` ([{link}]({link}); Rouge-L x100, 95% paired bootstrap interval):",
        "",
        "| finding | comparison | student | benchmark | n | a | b | a - b [95% CI] | per seed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in comparisons.iterrows():
        lines.append(
            f"| {r['finding']} | {r['comparison']} | {r['student']} | {r['benchmark']} | {r['n']} "
            f"| {r['mean_a']:.1f} | {r['mean_b']:.1f} | {r['diff']:+.1f} [{r['lo']:.1f}, {r['hi']:.1f}] "
            f"| {r['seeds'] or ''} |"
        )
    return "\n".join(lines)


def replace_block(text: str, block: str, start: str, end: str) -> str:
    """`text` with what lies between the `start` and `end` marker lines replaced by `block`.

    Raises:
        ValueError: the markers are missing or out of order.
    """
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        raise ValueError(f"markers {start!r} ... {end!r} not found in order")
    return text[: i + len(start)] + "\n" + block.rstrip("\n") + "\n" + text[j:]
