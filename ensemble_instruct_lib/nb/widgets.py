"""ipywidgets inspectors over the notebooks' tables: an inspection layer, never the only view.

- `prompt_explorer`: stage-1/2 prompts for a task type, demo counts and random seed, with the
  prompt's length and the seeds drawn (notebook 01).
- `probe_view`: an LM's raw answers next to what the parser made of them and the verdict (01).
- `instruction_browser`: generated instructions with their most similar neighbours (02).
- `ensemble_inspector`: one stage-4 example at a time, all candidates side by side, the pairwise
  agreement matrix as a small heatmap, the chosen candidate highlighted and the rule that decided;
  filters by reason and by agreement range (03).

Each view is an HTML string built by a pure ``render_*`` function (tested without a browser), and
every piece of LM or user text in it goes through `html.escape`: a ``<script>`` in a model output
shows as text. Headless runs keep no widget state, so notebooks show static tables and figures too.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as w
import numpy as np
import pandas as pd
from IPython.display import HTML

from ..data.public import SeedTask, split_by_type
from ..method.prompts import INSTANCE_DEMOS, INSTRUCTION_DEMOS, prompt_token_count

_PRE = (
    "white-space: pre-wrap; word-break: break-word; font-family: monospace; font-size: 12px; "
    "margin: 0; max-height: {h}px; overflow-y: auto"
)
_CHOSEN = "background: #e6f4ea; border: 2px solid #2ca02c"
_OTHER = "background: #fafafa; border: 1px solid #ddd"


def esc(value: Any) -> str:
    """HTML-escaped text of `value` (None -> "")."""
    return html.escape("" if value is None else str(value), quote=True)


def pre(text: Any, max_height: int = 400) -> str:
    """Escaped text in a wrapping, scrolling ``<pre>`` block."""
    return f'<pre style="{_PRE.format(h=max_height)}">{esc(text)}</pre>'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An HTML table; cells are already-safe HTML."""
    head = "".join(f"<th style='text-align:left; padding:2px 6px'>{h}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td style='padding:2px 6px; vertical-align:top'>{c}</td>" for c in r)
        + "</tr>"
        for r in rows
    )
    return f"<table style='border-collapse:collapse'><tr>{head}</tr>{body}</table>"


class Stepper(w.VBox):
    """Step through the rows of a frame that pass some filters, rendering each as HTML.

    Attributes:
        filters: the filter widgets, by name (their values feed `select`).
        slider: position among the matching rows.
        html: the rendered row.
        positions: row positions (into the frame) matching the filters.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        render: Callable[[pd.Series], str],
        filters: Mapping[str, w.ValueWidget],
        select: Callable[[pd.DataFrame, dict[str, Any]], np.ndarray],
    ) -> None:
        self.frame = frame.reset_index(drop=True)
        self.render = render
        self.select = select
        self.filters = dict(filters)
        self.slider = w.IntSlider(
            value=0, min=0, max=0, description="example", continuous_update=False
        )
        self.prev = w.Button(description="◀ prev", layout=w.Layout(width="80px"))
        self.next = w.Button(description="next ▶", layout=w.Layout(width="80px"))
        self.status = w.HTML()
        self.html = w.HTML()
        self.positions: list[int] = []
        self.prev.on_click(lambda _: self._step(-1))
        self.next.on_click(lambda _: self._step(1))
        self.slider.observe(lambda _: self._show(), names="value")
        for f in self.filters.values():
            f.observe(lambda _: self._refilter(), names="value")
        controls = w.HBox([*self.filters.values()])
        nav = w.HBox([self.prev, self.slider, self.next, self.status])
        super().__init__([controls, nav, self.html])
        self._refilter()

    def _step(self, delta: int) -> None:
        self.slider.value = int(np.clip(self.slider.value + delta, 0, self.slider.max))

    def _refilter(self) -> None:
        values = {k: f.value for k, f in self.filters.items()}
        mask = self.select(self.frame, values) if not self.frame.empty else np.zeros(0, bool)
        self.positions = [int(i) for i in np.flatnonzero(mask)]
        self.slider.max = max(len(self.positions) - 1, 0)
        self.slider.value = 0
        self._show()

    def _show(self) -> None:
        n = len(self.positions)
        if not n:
            self.status.value = "0 matching"
            self.html.value = "<i>no example matches the filters</i>"
            return
        k = min(self.slider.value, n - 1)
        self.status.value = f"{k + 1} of {n} matching ({len(self.frame)} in all)"
        self.html.value = self.render(self.frame.iloc[self.positions[k]])


# --------------------------------------------------------------------------------------------
# notebook 01


def render_prompt_html(
    text: str,
    *,
    version: str,
    length: int,
    unit: str,
    seed_ids: Sequence[str],
    num_generated: int = 0,
) -> str:
    """A prompt with its version, length and the demonstrations drawn (seed ids, and how many
    generated instructions)."""
    ids = ", ".join(esc(s) for s in seed_ids) or "<i>none</i>"
    gen = f" + {num_generated} generated" if num_generated else ""
    return (
        f"<div><b>{esc(version)}</b> &middot; {length} {esc(unit)} &middot; "
        f"{len(seed_ids)} seed demos{gen}: {ids}</div>{pre(text, 500)}"
    )


class PromptExplorer(w.VBox):
    """Controls for task type, stage, demo counts and random seed, and the resulting prompt.

    Attributes:
        kind, stage, n_seed, n_generated, n_instance, seed: the controls.
        html: the rendered prompt (`render_prompt_html`).
    """

    def __init__(
        self,
        seeds: Sequence[SeedTask],
        *,
        tokenizer: Any = None,
        unit: str = "words",
        generated: Sequence[str] = (),
        instructions: Mapping[str, str] | None = None,
        random_seed: int = 0,
    ) -> None:
        self.seeds = list(seeds)
        self.by_type = split_by_type(self.seeds)
        self.tokenizer = tokenizer
        self.unit = unit
        self.generated = list(generated)
        self.instructions = dict(instructions or {"A": "Describe the input.", "B": "Name a color."})
        n_a = len(self.by_type["A"])
        self.kind = w.ToggleButtons(options=["A", "B"], description="type")
        self.stage = w.ToggleButtons(options=["instruction", "instance"], description="stage")
        self.n_seed = w.IntSlider(
            value=min(INSTRUCTION_DEMOS["A"][0], n_a), min=0, max=n_a, description="seed demos"
        )
        self.n_generated = w.IntSlider(
            value=INSTRUCTION_DEMOS["A"][1], min=0, max=10, description="generated"
        )
        self.n_instance = w.IntSlider(
            value=min(INSTANCE_DEMOS["A"], max(n_a, 1)),
            min=1,
            max=max(n_a, 1),
            description="instance demos",
        )
        self.seed = w.IntText(value=random_seed, description="random seed")
        self.html = w.HTML()
        self._updating = False
        self.kind.observe(self._on_type, names="value")
        for c in (self.stage, self.n_seed, self.n_generated, self.n_instance, self.seed):
            c.observe(self._show, names="value")
        super().__init__(
            [
                w.HBox([self.kind, self.stage]),
                w.HBox([self.n_seed, self.n_generated, self.n_instance, self.seed]),
                self.html,
            ]
        )
        self._show()

    def _on_type(self, _: Any = None) -> None:
        t = self.kind.value
        n = len(self.by_type[t])
        self._updating = True
        try:
            self.n_seed.max = n
            self.n_seed.value = min(INSTRUCTION_DEMOS[t][0], n)
            self.n_generated.value = INSTRUCTION_DEMOS[t][1]
            self.n_instance.max = max(n, 1)
            self.n_instance.value = min(INSTANCE_DEMOS[t], max(n, 1))
        finally:
            self._updating = False
        self._show()

    def _show(self, _: Any = None) -> None:
        from .steps.prompt_design import design_prompt

        if self._updating:
            return
        try:
            p = design_prompt(
                self.stage.value,
                self.kind.value,
                self.seeds,
                num_seed=self.n_seed.value,
                num_generated=self.n_generated.value,
                num_instance_demos=self.n_instance.value,
                random_seed=self.seed.value,
                generated=self.generated,
                instruction=self.instructions[self.kind.value],
            )
        except ValueError as e:
            self.html.value = f"<b>cannot build this prompt:</b> {esc(e)}"
            return
        self.html.value = render_prompt_html(
            p.text,
            version=p.version,
            length=prompt_token_count(p.text, self.tokenizer),
            unit=self.unit,
            seed_ids=p.meta["seed_ids"],
            num_generated=p.meta.get("num_generated", 0),
        )


def prompt_explorer(
    seeds: Sequence[SeedTask],
    *,
    tokenizer: Any = None,
    unit: str = "words",
    generated: Sequence[str] = (),
    instructions: Mapping[str, str] | None = None,
    random_seed: int = 0,
) -> PromptExplorer:
    """A `PromptExplorer` over `seeds` (split by type here).

    Args:
        tokenizer: a `transformers` tokenizer for lengths (None: whitespace words).
        unit: the name of the length unit shown.
        generated: earlier generated instructions available as stage-1 demos.
        instructions: per type, the new instruction the stage-2 prompt ends with.
        random_seed: the initial random seed of the demo draw.
    """
    return PromptExplorer(
        seeds,
        tokenizer=tokenizer,
        unit=unit,
        generated=generated,
        instructions=instructions,
        random_seed=random_seed,
    )


def render_probe_html(probe: pd.DataFrame) -> str:
    """Per stage: the LM's raw answer | what the parser made of it | the verdict."""
    if probe.empty:
        return "<i>no backend configured: set the `backend` parameter to send the prompts</i>"
    rows = []
    for r in probe.itertuples():
        ok = r.verdict in ("accepted", "valid")
        colour = "#2ca02c" if ok else "#d62728"
        verdict = f"<b style='color:{colour}'>{esc(r.verdict)}</b><br>{esc(r.detail)}"
        rows.append(
            [f"{esc(r.stage)} ({esc(r.task_type)})", pre(r.raw, 300), pre(r.parsed, 300), verdict]
        )
    return _table(["stage", "raw response", "parsed", "verdict"], rows)


def probe_view(probe: pd.DataFrame) -> w.HTML:
    """`render_probe_html` as a widget."""
    return w.HTML(render_probe_html(probe))


# --------------------------------------------------------------------------------------------
# notebook 02


def render_instruction_html(row: pd.Series) -> str:
    """One stage-1 candidate: text, verdict, scores and its most similar pool texts."""
    verdict = "accepted" if row.get("accepted") else f"rejected: {row.get('reason')}"
    score = row.get("max_score")
    mean = row.get("mean_similarity")
    facts = [f"type {esc(row.get('task_type'))}", esc(verdict)]
    if score is not None and not pd.isna(score):
        facts.append(f"highest Rouge-L {float(score):.3f}")
    if mean is not None and not pd.isna(mean):
        facts.append(f"mean similarity {float(mean):.3f}")
    neighbours = row.get("most_similar")
    if isinstance(neighbours, (list, tuple)) and neighbours:
        table = _table(
            ["Rouge-L", "similar seed or accepted instruction"],
            [[f"{float(s):.3f}", esc(t)] for t, s in neighbours],
        )
    else:
        table = "<i>no neighbours recorded (rejected before the novelty check)</i>"
    head = f"<div>{esc(row.get('id') or row.get('candidate') or '')} &middot; {' &middot; '.join(facts)}</div>"
    return f"{head}{pre(row.get('instruction'), 150)}{table}"


def instruction_browser(instructions: pd.DataFrame) -> Stepper:
    """Browse stage-1 candidates by type and verdict, each with its most similar neighbours."""
    reasons = sorted({str(r) for r in instructions.get("reason", pd.Series(dtype=str)).dropna()})
    type_f = w.Dropdown(options=["all", "A", "B"], description="type")
    verdict_f = w.Dropdown(
        options=["accepted", "all", *[f"rejected: {r}" for r in reasons]], description="verdict"
    )

    def select(frame: pd.DataFrame, v: dict[str, Any]) -> np.ndarray:
        mask = np.ones(len(frame), dtype=bool)
        if v["type"] != "all":
            mask &= (frame["task_type"] == v["type"]).to_numpy()
        if v["verdict"] == "accepted":
            mask &= frame["accepted"].astype(bool).to_numpy()
        elif v["verdict"] != "all":
            mask &= (
                frame["reason"].astype(str) == v["verdict"].removeprefix("rejected: ")
            ).to_numpy()
        return mask

    return Stepper(
        instructions, render_instruction_html, {"type": type_f, "verdict": verdict_f}, select
    )


# --------------------------------------------------------------------------------------------
# notebook 03


def _heat(score: float) -> str:
    """A background colour from red (0) through yellow to green (1)."""
    s = float(np.clip(score, 0, 1))
    r, g = (255, int(510 * s)) if s < 0.5 else (int(510 * (1 - s)), 255)
    return f"rgba({r}, {g}, 80, 0.55)"


def render_heatmap_html(scores: Sequence[Sequence[float]], labels: Sequence[str]) -> str:
    """The pairwise Rouge-L matrix as a small coloured HTML table."""
    m = np.asarray(scores, dtype=float)
    head = "".join(f"<th style='padding:2px 4px; font-size:11px'>{esc(x)}</th>" for x in labels)
    rows = []
    for i, label in enumerate(labels):
        cells = "".join(
            f"<td style='padding:2px 6px; text-align:center; background:"
            f"{'#eee' if i == j else _heat(m[i, j])}'>{'' if i == j else f'{m[i, j]:.2f}'}</td>"
            for j in range(len(labels))
        )
        rows.append(
            f"<tr><th style='padding:2px 4px; font-size:11px; text-align:right'>{esc(label)}</th>{cells}</tr>"
        )
    return (
        f"<table style='border-collapse:collapse'><tr><th></th>{head}</tr>{''.join(rows)}</table>"
    )


def _why(row: pd.Series) -> str:
    reason = row.get("reason")
    threshold = row.get("threshold")
    t = "" if threshold is None or pd.isna(threshold) else f" {float(threshold):g}"
    rule = row.get("rule") or "sum"
    return {
        "exact_match": "exact match: two candidates are equal after normalization",
        "consensus": f"consensus ({esc(rule)} rule): lowest pairwise score {row['min_score']:.3f} "
        f"is above the threshold{t}",
        "below_threshold": f"dropped: lowest pairwise score {row['min_score']:.3f} is at or below "
        f"the threshold{t}",
        "empty": "dropped: the candidate the rule picked is empty",
    }.get(str(reason), esc(reason))


def render_example_html(row: pd.Series) -> str:
    """One stage-4 example: instruction and input, the candidates side by side (the chosen one
    highlighted), the pairwise agreement heatmap, and the rule that decided."""
    models = list(row["models"])
    chosen = row.get("chosen_index")
    chosen = None if chosen is None or pd.isna(chosen) else int(chosen)
    cards = []
    for k, (model, cand) in enumerate(zip(models, row["candidates"], strict=True)):
        style = _CHOSEN if k == chosen else _OTHER
        gold = row.get(f"gold:{model}")
        extra = (
            "" if gold is None or pd.isna(gold) else f" &middot; Rouge-L vs gold {float(gold):.1f}"
        )
        mark = " &#10004; chosen" if k == chosen else ""
        cards.append(
            f"<div style='flex:1; min-width:180px; padding:6px; {style}'>"
            f"<b>{esc(model)}</b>{mark}{extra}{pre(cand, 260)}</div>"
        )
    status = "kept" if row.get("kept") else "dropped"
    head = (
        f"<div><b>{esc(row.get('id', ''))}</b> &middot; type {esc(row.get('task_type', ''))} "
        f"&middot; <b>{status}</b> &middot; {_why(row)}</div>"
    )
    task = f"<div><b>instruction</b>{pre(row.get('instruction'), 120)}"
    if str(row.get("input") or "").strip():
        task += f"<b>input</b>{pre(row.get('input'), 120)}"
    task += "</div>"
    target = row.get("target")
    gold = "" if target is None or pd.isna(target) else f"<div><b>gold</b>{pre(target, 150)}</div>"
    cands = f"<div style='display:flex; gap:6px'>{''.join(cards)}</div>"
    return f"{head}{task}{cands}<div style='margin-top:6px'>{render_heatmap_html(row['scores'], models)}</div>{gold}"


def ensemble_inspector(frame: pd.DataFrame) -> Stepper:
    """Step through stage-4 examples, filtered by reason and by lowest pairwise score.

    Args:
        frame: `tables.ensemble_frame` rows (or `steps.ensembling.EnsembleStudy.frame`).
    """
    present = [
        r
        for r in ("exact_match", "consensus", "below_threshold", "empty")
        if not frame.empty and (frame["reason"] == r).any()
    ]
    reason_f = w.Dropdown(options=["all", "kept", "dropped", *present], description="reason")
    range_f = w.FloatRangeSlider(
        value=(0.0, 1.0),
        min=0.0,
        max=1.0,
        step=0.01,
        description="min score",
        continuous_update=False,
    )

    def select(f: pd.DataFrame, v: dict[str, Any]) -> np.ndarray:
        mask = np.ones(len(f), dtype=bool)
        if v["reason"] == "kept":
            mask &= f["kept"].astype(bool).to_numpy()
        elif v["reason"] == "dropped":
            mask &= ~f["kept"].astype(bool).to_numpy()
        elif v["reason"] != "all":
            mask &= (f["reason"] == v["reason"]).to_numpy()
        lo, hi = v["agreement"]
        ms = f["min_score"].astype(float).to_numpy()
        return mask & (ms >= lo) & (ms <= hi)

    return Stepper(frame, render_example_html, {"reason": reason_f, "agreement": range_f}, select)


def example_html(frame: pd.DataFrame, *, reason: str | None = None, index: int = 0) -> HTML:
    """A static rendering of one example (the `index`-th with `reason`, or of all when None or
    none has it): what a headless run keeps of the inspector."""
    rows = frame
    if reason is not None and not frame.empty and (frame["reason"] == reason).any():
        rows = frame[frame["reason"] == reason]
    if rows.empty:
        return HTML("<i>no examples</i>")
    return HTML(render_example_html(rows.iloc[min(index, len(rows) - 1)]))
