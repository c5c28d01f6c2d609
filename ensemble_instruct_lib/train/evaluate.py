"""Evaluation the way the paper scores a tuned model: Rouge-L (and exact match) the SuperNI way.

Implements METHOD.md "Evaluation in the paper" and the official SuperNI recipe restated in
``shared/data/superni/SOURCE.md``:

- Rouge-L is `rouge-score`'s F-measure with its default tokenizer and Porter stemming, called as
  ``score(target=reference, prediction=prediction)`` on the prediction as is; with several
  references the maximum counts. Exact match compares SQuAD-normalized strings (lowercase,
  punctuation removed, whitespace collapsed; articles are kept).
- A missing prediction counts as ``""``. Every aggregate (overall, per task, per category) is the
  mean over instances x100, rounded to 4 decimals; per-example scores stay on rouge-score's 0-1 scale.

Benchmarks: the 252 user-oriented instructions (`user_oriented_items`) and, through `superni.py`,
the SuperNI test split. `generate_predictions` asks any `Backend` for greedy answers in the prompt
format of `formats.py` and keeps them in a resumable JSONL; `score_recorded_models` scores the eight
recorded GPT-3-family models, the reference rows of the result tables.
Not included: human evaluation and the xlingual track (GPT-2 tokenization).
"""

from __future__ import annotations

import string
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..data.eval_items import EvalItem
from ..data.eval_sets import user_oriented_items as _user_oriented_items
from ..data.public import PREDICTION_MODELS, load_predictions, user_oriented_path
from ..engines.base import Backend, DecodingParams
from ..engines.isolation import FailureBudget, is_failure
from ..engines.resumable import generate_checked, load_records, run_batches
from ..errors import DataError
from ..method.records import is_failed
from ..method.rouge import rouge_l
from .formats import FORMAT_VERSION, STOP_STRINGS, build_prompt

PREDICTIONS_FILE = "predictions.jsonl"


# --------------------------------------------------------------------------------------------
# the scorers (pure)


def rouge_l_score(prediction: str, reference: str) -> float:
    """SuperNI Rouge-L of one prediction against one reference (0-1, Porter stemming)."""
    return rouge_l(prediction, reference, stem=True)


_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD-style normalization as SuperNI uses it: lowercase, drop ASCII punctuation, collapse
    whitespace. Articles are kept (SuperNI's evaluation does not remove them)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> bool:
    """True when the two strings are equal after `normalize_answer`."""
    return normalize_answer(prediction) == normalize_answer(reference)


def score_example(prediction: str, references: Sequence[str]) -> tuple[float, float]:
    """(Rouge-L, exact match) of one prediction: the maximum over its references, both 0-1."""
    if isinstance(references, str) or not references:
        raise ValueError(f"references must be a non-empty list of strings, got {references!r}")
    rouge = max(rouge_l_score(prediction, r) for r in references)
    em = max(float(exact_match(prediction, r)) for r in references)
    return rouge, em


# --------------------------------------------------------------------------------------------
# eval items and results


def _category_key(category: str) -> str:
    return category.lower().replace(" ", "_")


def _mean100(values: Sequence[float]) -> float:
    """Mean x100 rounded to 4 decimals, with the official script's arithmetic."""
    return round(100.0 * sum(values) / len(values), 4) if values else float("nan")


@dataclass
class EvalResult:
    """Scores of one set of predictions on one benchmark.

    Attributes:
        rougeL: mean Rouge-L over instances, x100, rounded to 4 decimals.
        exact_match: mean exact match over instances, x100, rounded to 4 decimals.
        n: number of reference instances scored.
        n_missing: instances with no prediction (scored as "").
        per_example: one row per instance: id, task_id, task_category, prediction, rougeL and
            exact_match on a 0-1 scale.
        per_task: index task_id; task_category, n, rougeL, exact_match (x100).
        per_category: index task_category; n_tasks, n, rougeL, exact_match (x100).
    """

    rougeL: float
    exact_match: float
    n: int
    n_missing: int
    per_example: pd.DataFrame = field(repr=False)
    per_task: pd.DataFrame = field(repr=False)
    per_category: pd.DataFrame = field(repr=False)

    def summary(self) -> dict[str, float | int]:
        return {
            "rougeL": self.rougeL,
            "exact_match": self.exact_match,
            "n": self.n,
            "n_missing": self.n_missing,
        }

    def metrics(self) -> dict[str, float]:
        """Flat metric names as the official SuperNI script writes them (`rougeL_for_<task>`,
        `exact_match_for_<category lowercased with _>`, ...)."""
        out = {"exact_match": self.exact_match, "rougeL": self.rougeL}
        for task, row in self.per_task.iterrows():
            out[f"exact_match_for_{task}"] = row["exact_match"]
            out[f"rougeL_for_{task}"] = row["rougeL"]
        for cat, row in self.per_category.iterrows():
            out[f"exact_match_for_{_category_key(str(cat))}"] = row["exact_match"]
            out[f"rougeL_for_{_category_key(str(cat))}"] = row["rougeL"]
        return out


def _as_items(references: Iterable[EvalItem | Mapping[str, Any]]) -> list[EvalItem]:
    items = []
    for k, r in enumerate(references):
        if isinstance(r, EvalItem):
            items.append(r)
            continue
        if not isinstance(r, Mapping) or "id" not in r or "references" not in r:
            raise ValueError(
                f"reference #{k} must be an EvalItem or a mapping with 'id' and 'references', "
                f"got {r!r:.200}"
            )
        items.append(
            EvalItem(
                id=str(r["id"]),
                instruction=str(r.get("instruction", "")),
                input=str(r.get("input", "")),
                references=tuple(r["references"]),
                task_id=str(r.get("task_id", "")),
                task_category=str(r.get("task_category", "")),
            )
        )
    seen: set[str] = set()
    for it in items:
        if it.id in seen:
            raise ValueError(f"duplicate reference id {it.id!r}")
        seen.add(it.id)
    return items


def _as_prediction_map(
    predictions: Mapping[str, str | None] | Sequence[str | Mapping[str, Any]],
    items: Sequence[EvalItem],
) -> dict[str, str]:
    if isinstance(predictions, Mapping):
        return {str(k): ("" if v is None else str(v)) for k, v in predictions.items()}
    preds = list(predictions)
    if preds and all(isinstance(p, str) for p in preds):
        if len(preds) != len(items):
            raise ValueError(
                f"a list of prediction strings must align with the references: got {len(preds)} "
                f"predictions for {len(items)} references"
            )
        return {it.id: p for it, p in zip(items, preds, strict=True)}
    out = {}
    for k, p in enumerate(preds):
        if not isinstance(p, Mapping) or "id" not in p:
            raise ValueError(
                f"prediction #{k} must be a string or a mapping with 'id' and 'prediction', "
                f"got {p!r:.200}"
            )
        v = p.get("prediction")
        out[str(p["id"])] = "" if v is None else str(v)
    return out


def score_predictions(
    predictions: Mapping[str, str | None] | Sequence[str | Mapping[str, Any]],
    references: Iterable[EvalItem | Mapping[str, Any]],
) -> EvalResult:
    """Score predictions against references, SuperNI style.

    Args:
        predictions: ``{id: text}``, a list of ``{"id", "prediction"}`` records (the official
            predictions format), or a list of strings aligned with `references`. Ids with no
            prediction score as "" (0); predictions for unknown ids are ignored with a warning.
        references: `EvalItem`s or mappings with ``id``, ``references`` (list of str) and
            optionally ``task_id`` and ``task_category`` (a SuperNI references file's lines).

    Returns:
        The overall, per-task and per-category scores and the per-example table.
    """
    items = _as_items(references)
    if not items:
        raise ValueError("no references to score against")
    pred = _as_prediction_map(predictions, items)
    known = {it.id for it in items}
    extra = [k for k in pred if k not in known]
    if extra:
        warnings.warn(
            f"{len(extra)} predictions have ids not in the references (e.g. {extra[0]!r}); "
            "they are ignored",
            stacklevel=2,
        )
    rows = []
    n_missing = 0
    for it in items:
        if it.id not in pred:
            n_missing += 1
        text = pred.get(it.id, "")
        rouge, em = score_example(text, it.references)
        rows.append(
            {
                "id": it.id,
                "task_id": it.task_id,
                "task_category": it.task_category,
                "prediction": text,
                "rougeL": rouge,
                "exact_match": em,
            }
        )
    if n_missing:
        warnings.warn(
            f"{n_missing} of {len(items)} references have no prediction; scored as ''",
            stacklevel=2,
        )
    per_example = pd.DataFrame(rows)
    return EvalResult(
        rougeL=_mean100([r["rougeL"] for r in rows]),
        exact_match=_mean100([r["exact_match"] for r in rows]),
        n=len(rows),
        n_missing=n_missing,
        per_example=per_example,
        per_task=_group(rows, "task_id"),
        per_category=_group(rows, "task_category"),
    )


def _group(rows: list[dict[str, Any]], key: str) -> pd.DataFrame:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r[key], []).append(r)
    out = []
    for name, rs in groups.items():
        row: dict[str, Any] = {key: name}
        if key == "task_id":
            row["task_category"] = rs[0]["task_category"]
        else:
            row["n_tasks"] = len({r["task_id"] for r in rs})
        row["n"] = len(rs)
        row["rougeL"] = _mean100([r["rougeL"] for r in rs])
        row["exact_match"] = _mean100([r["exact_match"] for r in rs])
        out.append(row)
    return pd.DataFrame(out).set_index(key)


# --------------------------------------------------------------------------------------------
# benchmarks


def user_oriented_items(path: str | Path | None = None) -> list[EvalItem]:
    """The 252 user-oriented instructions of Self-Instruct as eval items (one per task: its id,
    instruction, input and gold output; the loader is `data.eval_sets.user_oriented_items`, which
    decontamination reads too).

    Raises:
        DataError: a record lacks a field or has the wrong type (names the file and record).
    """
    return _user_oriented_items(path)


# --------------------------------------------------------------------------------------------
# generation through a backend


def eval_prompt(item: EvalItem, *, with_definition: bool = True) -> str:
    """The prompt an item is asked with (`formats.build_prompt`); without the definition the
    model sees the input alone."""
    return build_prompt(item.instruction if with_definition else "", item.input)


def generate_predictions(
    backend: Backend,
    items: Sequence[EvalItem],
    *,
    with_definition: bool = True,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    run_dir: str | Path | None = None,
    progress: bool = False,
    retry_failed: bool = True,
    max_failed_fraction: float = 0.2,
) -> dict[str, str]:
    """Greedy answers of `backend` to `items`, in the documented prompt format.

    A call that fails for good (after the engine's retries; an over-long prompt) does not stop
    the run: its item gets no prediction (scored as "" and counted in `n_missing`), and with a
    `run_dir` a record ``{"id", "prediction": None, "status": "failed", "reason", "error"}`` is
    written, which a later run asks again when `retry_failed`.

    Args:
        backend: any `Backend` (wrap it in `CachedBackend` to reuse calls across runs).
        items: what to answer.
        with_definition: show the task definition / instruction (True) or the input only.
        max_new_tokens: generation cap per answer.
        batch_size: prompts per `backend.generate` call (and per append to the run file).
        run_dir: when given, every answer is appended to ``<run_dir>/predictions.jsonl`` as it
            arrives and answers already there are reused, so an interrupted run resumes.
        progress: show a progress bar.
        retry_failed: ask again the items whose call failed in an earlier run of `run_dir`.
        max_failed_fraction: stop (`TooManyFailures`) when more than this fraction of the calls
            fail, judged after 10 calls, or when every call failed; 1.0 never stops.

    Returns:
        ``{item id: answer}`` for every answered item, the answer stripped of surrounding
        whitespace (items whose call failed are absent).

    Raises:
        ValueError: the run dir holds predictions from another model or prompt setting.
        TooManyFailures: too many calls failed for good (a dead server, a wrong model name).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    params = DecodingParams(do_sample=False, max_new_tokens=max_new_tokens, stop=STOP_STRINGS)
    described = backend.describe()
    model = {k: described.get(k, "") for k in ("backend", "model_id", "revision")}
    meta = {
        "format_version": FORMAT_VERSION,
        "with_definition": with_definition,
        "max_new_tokens": max_new_tokens,
        "model": model,
    }
    path = Path(run_dir) / PREDICTIONS_FILE if run_dir is not None else None

    def same_setting(k: int, rec: Mapping[str, Any]) -> None:
        mismatch = [key for key, v in meta.items() if rec.get(key) != v]
        if mismatch:
            raise ValueError(
                f"{path}, record {k}: made with {mismatch[0]}={rec.get(mismatch[0])!r}, "
                f"this run uses {meta[mismatch[0]]!r}; use a new run_dir for another setting"
            )

    # with `retry_failed`, failed records are dropped from the file: they are asked again below
    records = load_records(path, retry_failed, same_setting) if path is not None else []
    done = {str(r["id"]): str(r["prediction"]) for r in records if not is_failed(r)}
    prompts = {it.id: eval_prompt(it, with_definition=with_definition) for it in items}
    budget = FailureBudget(f"evaluation ({model['model_id']})", max_failed_fraction)

    def step(ids: Sequence[str]) -> Iterator[list[dict[str, Any]]]:
        gens = generate_checked(backend, [prompts[i] for i in ids], params, budget)
        for i, g in zip(ids, gens, strict=True):
            if is_failure(g):
                rec = {
                    "id": i,
                    "prediction": None,
                    "status": "failed",
                    "reason": g.extra.get("reason"),
                    "error": g.extra.get("error"),
                }
            else:
                done[i] = g.text.strip()
                rec = {"id": i, "prediction": done[i]}
            yield [{**rec, **meta}]

    # Batches are cut from every item (longest prompts first), not from the ones left to do, so
    # a resumed run puts each remaining item in the batch an uninterrupted run would have: padded
    # batches change greedy text slightly, and a resumed evaluation gives the same answers.
    run_batches(
        sorted((it.id for it in items), key=lambda i: -len(prompts[i])),
        step,
        batch_size=batch_size,
        path=path,
        budget=budget,
        asked={str(r["id"]) for r in records},
        desc="generating",
        progress=progress,
        key=str,
        keep_places=True,
    )
    return {it.id: done[it.id] for it in items if it.id in done}


def evaluate_backend(
    backend: Backend,
    items: Sequence[EvalItem],
    *,
    with_definition: bool = True,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    run_dir: str | Path | None = None,
    progress: bool = False,
) -> EvalResult:
    """`generate_predictions` then `score_predictions` on the same items."""
    preds = generate_predictions(
        backend,
        items,
        with_definition=with_definition,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        run_dir=run_dir,
        progress=progress,
    )
    return score_predictions(preds, items)


# --------------------------------------------------------------------------------------------
# recorded GPT-3-family models (reference rows)


def score_recorded_model(model: str, root: str | Path | None = None) -> EvalResult:
    """Score one recorded model's `response` against the recorded `target`.

    Rows are joined to the user-oriented tasks by (instruction, input) for their ids and
    categories; a row that does not join keeps its position as id.
    """
    rows = load_predictions(model, root)
    try:
        by_key = {
            (it.instruction.strip(), it.input.strip()): it
            for it in user_oriented_items(user_oriented_path(root))
        }
    except DataError:
        by_key = {}
    refs = []
    preds = {}
    for k, r in enumerate(rows):
        it = by_key.get((r["instruction"].strip(), r["input"].strip()))
        rid = it.id if it is not None else f"{model}-{k}"
        refs.append(
            EvalItem(
                id=rid,
                instruction=r["instruction"],
                input=r["input"],
                references=(r["target"],),
                task_id=it.task_id if it is not None else rid,
                task_category=it.task_category if it is not None else "",
            )
        )
        preds[rid] = r["response"]
    return score_predictions(preds, refs)


def score_recorded_models(
    models: Sequence[str] | None = None, root: str | Path | None = None
) -> pd.DataFrame:
    """One row per recorded model (index `model`): rougeL, exact_match (x100) and n, scored on
    the 252 user-oriented instructions exactly like a tuned model's predictions."""
    models = list(PREDICTION_MODELS if models is None else models)
    rows = []
    for m in models:
        r = score_recorded_model(m, root)
        rows.append({"model": m, "rougeL": r.rougeL, "exact_match": r.exact_match, "n": r.n})
    return pd.DataFrame(rows).set_index("model")
