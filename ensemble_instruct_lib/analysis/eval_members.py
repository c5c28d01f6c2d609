"""Choosing stage-3 members by measurement: each candidate model, and each mixture's stage-4
consensus, scored against gold answers (issue 22, item 6).

Every member answers the first `n` gold-labelled tasks (the 252 user-oriented instructions of
Self-Instruct; optionally the SuperNI test split) with exactly the stage-3 call of
`runs.stage3`: the run's prompt set and the member's `prompt_style` (few-shot demos from
`instance_demos` with the config's seed), greedy decoding, the stage-3 stop strings, ``chat`` as
the member says, the answer cut by `parse_output`. Calls go through the kit's backend factory and
the persistent call cache (``<out>/cache.sqlite``), one model loaded at a time; answers are
appended to ``<out>/answers/<member>.jsonl`` (a re-run asks only the missing ids, and calls that
failed for good again). Stage 4 then runs, per mixture and per selector, with
`method.selectors.select` (threshold 0.01) on the members' answers in the mixture's order (the
first plays the stage-2 output).

Reported (``members.csv``, ``mixtures.csv``, ``report.md``), Rouge-L being the SuperNI scorer of
`train.evaluate` (stemmed, best reference, x100):

- per member: answered items, kept (non-empty) fraction, Rouge-L on kept and on all (empty = 0),
  echo rate; a ``gold`` row gives the echo rate of the references themselves (some tasks, e.g.
  grammar correction, are meant to copy their input);
- per mixture and selector: kept fraction, Rouge-L on kept and on all (dropped = 0), the best
  member (highest mean Rouge-L on the mixture's kept items), consensus minus that member on the
  kept items with a 95% paired bootstrap interval, the echo rate of the kept outputs and which
  member supplied each kept output.

`is_echo` (pure): an output echoes its input when the input is non-empty, the output has at least
`ECHO_MIN_TOKENS` Rouge tokens, and the longest common subsequence of their tokens covers at least
`ECHO_THRESHOLD` of the output's tokens and `ECHO_INPUT_COVERAGE` of the input's. The input is
repeated as often as the output is long in inputs (rounded) before the LCS, so an output that
repeats the input twice counts; the input-coverage part spares extractions (a span lifted from a
longer input is an answer, not a copy).

Not here: the model-backed selectors (``judge``, ``reward``, ``mbr:embedding``: they need a
judge panel, a reward model or an encoder, and are listed as not run), sampling, and the
generation of instructions or instances (this scores members on fixed gold tasks only).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rapidfuzz.distance import LCSseq

from ..data.config_builder import FieldError, build, check, read_mapping
from ..data.eval_items import EvalItem
from ..data.jsonl import read_jsonl, write_json
from ..data.public import load_seed_tasks, seed_tasks_path, split_by_type
from ..engines.base import Backend, greedy_params
from ..engines.cache import CallCache
from ..engines.isolation import FailureBudget, is_failure
from ..engines.resumable import generate_checked, load_records, run_batches
from ..errors import ConfigError
from ..method.parsing import parse_output
from ..method.prompts import PROMPT_SETS, get_prompt_set, instance_demos
from ..method.records import is_failed, output_record
from ..method.rouge import tokenize
from ..method.selectors import parse_selector_entry, select
from ..runs.config import ModelSpec, OutputStage, load_config
from ..runs.context import RunContext
from ..train.evaluate import score_example, user_oriented_items

#: share of the output's tokens (and `ECHO_INPUT_COVERAGE` of the input's) an in-order copy of the
#: input must cover for the output to count as an echo
ECHO_THRESHOLD = 0.8
#: share of the (repeated) input's tokens the copy must cover: lifting a short span is extraction
ECHO_INPUT_COVERAGE = 0.5
#: outputs shorter than this (Rouge tokens) are never echoes: a name or label taken from the input
ECHO_MIN_TOKENS = 3

#: stage 4's agreement threshold (METHOD.md)
THRESHOLD = 0.01
#: the selectors that need no model beyond the members
SELECTOR_ENTRIES = ("sum", "best_pair", "mbr:rouge_l", "mbr:chrf", "mbr:token_f1")
#: the selectors left out, and why
NOT_RUN = {
    "judge": "needs a judge LM panel (consensus.judges) to score every candidate",
    "reward": "needs a reward model (consensus.reward_model) to score every candidate",
    "mbr:embedding": "needs an encoder (consensus.embedding_model) for the embeddings",
}
TASK_SETS = ("user_oriented", "superni")
ANSWERS = "answers"
_STAGE3 = OutputStage()


# ------------------------------------------------------------------------------------------
# config


@dataclass
class EvalMembersConfig:
    """What `eval-members` measures.

    Attributes:
        name: the evaluation's name (its folder under outputs/eval-members/ by default).
        members: the candidate models, as a run config's `ModelSpec`s (names distinct).
        mixtures: mixture name -> member names in candidate order (the first plays the stage-2
            output; at least 2, distinct).
        tasks: gold task sets: user_oriented (Self-Instruct's 252), superni (needs
            $EI_SUPERNI_DIR).
        n: tasks per set, the first n in file order.
        max_new_tokens, stop, few_shot_demos, batch_size: the stage-3 call (stop and demos as a
            run's `output` defaults).
        seed: picks the few-shot demonstrations (as a run's seed) and seeds the bootstrap.
        prompts: the prompt set (kit or reference).
        data_dir: the data folder (default: EI_DATA_DIR or the fetched copy).
        max_failed_fraction: stop a member when more than this fraction of its calls fail.
    """

    name: str
    members: list[ModelSpec]
    mixtures: dict[str, list[str]]
    tasks: list[str] = field(default_factory=lambda: ["user_oriented"])
    n: int = 120
    max_new_tokens: int = 128
    stop: list[str] = field(default_factory=lambda: list(_STAGE3.stop))
    few_shot_demos: int = _STAGE3.few_shot_demos
    batch_size: int = 8
    seed: int = 0
    prompts: str = "kit"
    data_dir: str | None = None
    max_failed_fraction: float = 0.2

    def __post_init__(self) -> None:
        check(
            bool(self.name) and all(c.isalnum() or c in "-_." for c in self.name),
            f"name: {self.name!r} must be non-empty letters, digits, '-', '_' or '.'",
            "name",
        )
        check(bool(self.members), "members: give at least 2 model specs", "members")
        names = [m.name for m in self.members]
        check(
            len(names) == len(set(names)),
            f"members: names must be distinct, got {names}",
            "members",
        )
        check(
            isinstance(self.mixtures, dict) and bool(self.mixtures),
            "mixtures: expected a mapping of mixture name -> list of member names",
            "mixtures",
        )
        for mix, who in self.mixtures.items():
            where = f"mixtures.{mix}"
            check(
                isinstance(who, list) and all(isinstance(w, str) for w in who),
                f"{where}: expected a list of member names, got {who!r}",
                where,
            )
            check(len(who) >= 2, f"{where}: a mixture needs at least 2 members, got {who}", where)
            check(len(who) == len(set(who)), f"{where}: a member is listed twice in {who}", where)
            unknown = [w for w in who if w not in names]
            check(not unknown, f"{where}: unknown member(s) {unknown}; members are {names}", where)
        check(
            isinstance(self.tasks, list) and bool(self.tasks) and set(self.tasks) <= set(TASK_SETS),
            f"tasks: must be a non-empty list from {list(TASK_SETS)}, got {self.tasks!r}",
            "tasks",
        )
        check(self.n >= 1, f"n: must be >= 1, got {self.n}", "n")
        check(
            self.max_new_tokens >= 1,
            f"max_new_tokens: must be >= 1, got {self.max_new_tokens}",
            "max_new_tokens",
        )
        check(
            isinstance(self.stop, list) and all(isinstance(s, str) and s for s in self.stop),
            "stop: must be a list of non-empty strings",
            "stop",
        )
        check(self.few_shot_demos >= 1, "few_shot_demos: must be >= 1", "few_shot_demos")
        check(self.batch_size >= 1, "batch_size: must be >= 1", "batch_size")
        check(
            self.prompts in PROMPT_SETS, f"prompts: must be one of {list(PROMPT_SETS)}", "prompts"
        )
        check(
            0.0 <= self.max_failed_fraction <= 1.0,
            "max_failed_fraction: must be in [0, 1]",
            "max_failed_fraction",
        )

    def member(self, name: str) -> ModelSpec:
        return next(m for m in self.members if m.name == name)

    def generation(self) -> dict[str, Any]:
        """The settings besides the spec that change a member's answers."""
        return {
            "prompts": self.prompts,
            "max_new_tokens": self.max_new_tokens,
            "stop": list(self.stop),
            "few_shot_demos": self.few_shot_demos,
            "seed": self.seed,
        }


def _from_run_config(path: Path, n: int | None) -> EvalMembersConfig:
    """A run config as an evaluation: the generator (few-shot) and the extra models, one
    mixture of all of them in that order, with the run's stage-3 settings."""
    run = load_config(path)
    gen = dataclasses.replace(run.generator, prompt_style="few_shot")
    members = [gen, *run.extra_models]
    return EvalMembersConfig(
        name=run.name,
        members=members,
        mixtures={run.name: [m.name for m in members]},
        n=n if n is not None else 120,
        max_new_tokens=run.output.max_new_tokens,
        stop=list(run.output.stop),
        few_shot_demos=run.output.few_shot_demos,
        seed=run.seed,
        prompts=run.prompts,
        data_dir=run.data_dir,
    )


def load_eval_config(
    source: str | Path | dict[str, Any], n: int | None = None
) -> EvalMembersConfig:
    """An `EvalMembersConfig` from a YAML file or dict; a run config (with `generator`) is taken
    as its generator plus extra models, in one mixture.

    Raises:
        ConfigError: one line naming the file, the line and the field.
    """
    data, where = read_mapping(source, "name, members, mixtures", "configs/eval-members.yaml")
    if where.file and "generator" in data:
        return _from_run_config(Path(where.file), n)
    if n is not None:
        data["n"] = n
        where = where.without(["n"])
    cfg = build(EvalMembersConfig, data, where)
    for i, m in enumerate(cfg.members):
        field_name = f"members[{i}].model"
        m.where = str(where.locate(FieldError(field_name, field_name)))
    return cfg


# ------------------------------------------------------------------------------------------
# the pure core


def is_echo(output: str, input: str) -> bool:  # noqa: A002
    """Whether `output` mostly copies `input` (see the module docstring for the rule)."""
    out, inp = tokenize(output or ""), tokenize(input or "")
    if not inp or len(out) < ECHO_MIN_TOKENS:
        return False
    repeated = inp * max(1, round(len(out) / len(inp)))
    lcs = LCSseq.similarity(out, repeated)
    return lcs >= ECHO_THRESHOLD * len(out) and lcs >= ECHO_INPUT_COVERAGE * len(repeated)


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], n_resamples: int = 10000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``a - b`` over paired items and its 95% percentile bootstrap interval (items
    resampled with replacement, `n_resamples` times). NaNs for no items."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.shape != (len(a),) or len(a) != len(b):
        raise ValueError(f"a and b must be 1-d and of one length, got {len(a)} and {len(b)}")
    if len(d) == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    step = max(1, 2_000_000 // len(d))
    for start in range(0, n_resamples, step):
        k = min(step, n_resamples - start)
        means[start : start + k] = d[rng.integers(0, len(d), size=(k, len(d)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)


def _mean100(values: Sequence[float]) -> float:
    return round(100 * float(np.mean(values)), 4) if len(values) else math.nan


def _rate(flags: Sequence[bool]) -> float:
    return round(float(np.mean(flags)), 4) if len(flags) else math.nan


def member_row(
    member: str, answers: Mapping[str, str], items: Sequence[EvalItem], failed: int = 0
) -> dict[str, Any]:
    """One member alone: answered items, kept (non-empty) ones, Rouge-L x100 and echo rate."""
    done = [it for it in items if it.id in answers]
    kept = [it for it in done if answers[it.id].strip()]
    scores = {it.id: score_example(answers[it.id], it.references)[0] for it in done}
    return {
        "member": member,
        "n": len(done),
        "failed": failed,
        "missing": len(items) - len(done),
        "kept": len(kept),
        "kept_fraction": _rate([bool(answers[it.id].strip()) for it in done]),
        "rouge_kept": _mean100([scores[it.id] for it in kept]),
        "rouge_all": _mean100(list(scores.values())),
        "echo_rate_kept": _rate([is_echo(answers[it.id], it.input) for it in kept]),
        "mean_tokens": round(float(np.mean([len(tokenize(answers[i])) for i in scores])), 2)
        if scores
        else math.nan,
    }


def gold_row(items: Sequence[EvalItem]) -> dict[str, Any]:
    """The references as if a member: their echo rate is the share of tasks meant to copy."""
    gold = {it.id: it.references[0] for it in items}
    row = member_row("gold", gold, items)
    row.update(rouge_kept=math.nan, rouge_all=math.nan)
    return row


def mixture_rows(
    mixture: str,
    members: Sequence[str],
    answers: Mapping[str, Mapping[str, str]],
    items: Sequence[EvalItem],
    selectors: Sequence[str] = SELECTOR_ENTRIES,
    *,
    all_members: Sequence[str] = (),
    seed: int = 0,
    n_resamples: int = 10000,
) -> list[dict[str, Any]]:
    """One row per selector: stage 4 on the items every member answered, scored against gold.

    Args:
        members: the mixture's members in candidate order.
        answers: member -> {item id: output}.
        all_members: every member of the config, for the share columns (blank if not in it).
    """
    done = [it for it in items if all(it.id in answers[m] for m in members)]
    score = {
        (m, it.id): score_example(answers[m][it.id], it.references)[0]
        for m in members
        for it in done
    }
    rows = []
    for entry in selectors:
        name, utility = parse_selector_entry(entry)
        kept: list[tuple[EvalItem, int, str]] = []
        for it in done:
            s = select(
                [answers[m][it.id] for m in members],
                name,
                THRESHOLD,
                utility=utility or "rouge_l",
            )
            if s.kept:
                kept.append((it, s.index, s.output))
        cons = [score[(members[k], it.id)] for it, k, _ in kept]
        per_member = {m: [score[(m, it.id)] for it, _, _ in kept] for m in members}
        best = max(members, key=lambda m: (np.mean(per_member[m]) if kept else 0.0))
        diff, lo, hi = paired_bootstrap(cons, per_member[best], n_resamples, seed)
        row = {
            "mixture": mixture,
            "selector": entry,
            "members": "+".join(members),
            "n": len(done),
            "kept": len(kept),
            "kept_fraction": _rate([True] * len(kept) + [False] * (len(done) - len(kept))),
            "rouge_kept": _mean100(cons),
            "rouge_all": round(100 * sum(cons) / len(done), 4) if done else math.nan,
            "best_member": best if kept else "",
            "best_member_rouge_kept": _mean100(per_member[best]),
            "diff": round(100 * diff, 4),
            "ci_lo": round(100 * lo, 4),
            "ci_hi": round(100 * hi, 4),
            "echo_rate_kept": _rate([is_echo(out, it.input) for it, _, out in kept]),
        }
        for m in all_members or members:
            share = sum(members[k] == m for _, k, _ in kept) / len(kept) if kept else math.nan
            row[f"share_{m}"] = round(share, 4) if m in members else ""
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------
# I/O: tasks, answers, the report


def load_items(config: EvalMembersConfig) -> list[EvalItem]:
    """The first `n` items of each task set, in file order."""
    items: list[EvalItem] = []
    for task in config.tasks:
        if task == "user_oriented":
            from ..data.public import user_oriented_path

            items += user_oriented_items(user_oriented_path(config.data_dir))[: config.n]
        else:
            from ..data.superni import load_superni_items

            items += load_superni_items()[: config.n]
    return items


def answers_path(out: Path, member: str) -> Path:
    return out / ANSWERS / f"{member}.jsonl"


def _spec_identity(spec: ModelSpec, config: EvalMembersConfig) -> dict[str, Any]:
    return {"spec": dataclasses.asdict(spec), "generation": config.generation()}


def check_spec(out: Path, spec: ModelSpec, config: EvalMembersConfig, *, write: bool) -> None:
    """Refuse answers made by another spec under this member's name; record the spec (when
    `write`) before the first answer is written.

    Raises:
        ConfigError: the stored spec differs, or answers exist without one.
    """
    path = out / ANSWERS / f"{spec.name}.spec.json"
    mine = json.loads(json.dumps(_spec_identity(spec, config)))
    if path.exists():
        theirs = json.loads(path.read_text())
        if theirs != mine:
            keys = sorted(
                f"{part}.{k}"
                for part in ("spec", "generation")
                for k in set(theirs.get(part, {})) | set(mine[part])
                if theirs.get(part, {}).get(k) != mine[part].get(k)
            )
            raise ConfigError(
                f"members: {spec.name!r} in {out / ANSWERS} was answered with another spec "
                f"(differs in {keys}); give this member another name or use another --out"
            )
    elif answers_path(out, spec.name).exists():
        raise ConfigError(
            f"members: {answers_path(out, spec.name)} has no {path.name} saying which spec "
            f"made it; give this member another name or use another --out"
        )
    elif write:
        write_json(path, mine)


def read_answers(out: Path, member: str) -> tuple[dict[str, str], int]:
    """({item id: output} of the answered items, failed count) from a member's answers file."""
    path = answers_path(out, member)
    records = read_jsonl(path) if path.exists() else []
    ok = {r["id"]: r["output"] for r in records if not is_failed(r)}
    return ok, sum(is_failed(r) for r in records)


def answer_member(
    config: EvalMembersConfig,
    spec: ModelSpec,
    backend: Backend,
    items: Sequence[EvalItem],
    out: Path,
    *,
    seeds: Mapping[str, Any],
    progress: bool = True,
) -> dict[str, str]:
    """One member's stage-3 answers to the items it has not answered yet (failed ones again);
    appended to its answers file as they come. Returns {id: output} of every answered item."""
    path = answers_path(out, spec.name)
    prompt_set = get_prompt_set(config.prompts, config.data_dir)
    demos = {}
    if spec.prompt_style == "few_shot":
        demos = {
            t: instance_demos(t, seeds[t], config.few_shot_demos, config.seed) for t in ("A", "B")
        }
    params = greedy_params(config, config.seed, spec.chat)
    budget = FailureBudget(f"eval-members ({spec.name})", config.max_failed_fraction)

    def step(chunk: Sequence[EvalItem]) -> Iterable[list[dict[str, Any]]]:
        types = ["A" if it.input.strip() else "B" for it in chunk]
        prompts = [
            prompt_set.output_prompt(
                it.instruction,
                it.input,
                style=spec.prompt_style,
                task_type=t,
                demos=demos.get(t, ()),
            )
            for it, t in zip(chunk, types, strict=True)
        ]
        gens = generate_checked(backend, [p.text for p in prompts], params, budget)
        for it, p, g in zip(chunk, prompts, gens, strict=True):
            failed = is_failure(g)
            yield [
                output_record(
                    id=it.id,
                    model=spec.name,
                    output=None if failed else parse_output(g.text, config.stop),
                    raw="" if failed else g.text,
                    finish_reason=g.finish_reason,
                    prompt_version=p.version,
                    status="failed" if failed else "ok",
                    reason=str(g.extra.get("reason", "error")) if failed else None,
                    error=str(g.extra.get("error", "")) if failed else None,
                )
            ]

    run_batches(
        items,
        step,
        asked={r["id"] for r in load_records(path, retry_failed=True)},
        batch_size=config.batch_size,
        path=path,
        budget=budget,
        desc=f"answers: {spec.name}",
        progress=progress,
        key=lambda it: it.id,
    )
    return read_answers(out, spec.name)[0]


def _csv(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    buf = io.StringIO()
    keys = list(dict.fromkeys(k for r in rows for k in r))
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _fmt(v: Any, digits: int = 1) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def report_markdown(
    config: EvalMembersConfig,
    members: Sequence[Mapping[str, Any]],
    mixtures: Sequence[Mapping[str, Any]],
    skipped: Mapping[str, str],
) -> str:
    """The report: a members table, a mixtures table (paste-able into the README) and notes."""
    head = (
        f"### eval-members: {config.name}\n\n"
        f"Tasks {', '.join(config.tasks)} (first {config.n}), greedy, max_new_tokens "
        f"{config.max_new_tokens}, prompts `{config.prompts}`, seed {config.seed}; Rouge-L "
        "(stemmed, best reference) x100; echo = share of kept outputs that mostly copy the input "
        "(`is_echo`).\n"
    )
    mtab = _table(
        ["member", "spec", "n", "kept", "Rouge-L kept", "Rouge-L all", "echo", "tokens"],
        [
            [
                r["member"],
                r.get("spec", ""),
                r["n"],
                _fmt(r["kept_fraction"], 2),
                _fmt(r["rouge_kept"]),
                _fmt(r["rouge_all"]),
                _fmt(r["echo_rate_kept"], 2),
                _fmt(r["mean_tokens"]),
            ]
            for r in members
        ],
    )
    xrows = []
    for r in mixtures:
        shares = ", ".join(
            f"{k[6:]} {v:.0%}"
            for k, v in r.items()
            if k.startswith("share_") and isinstance(v, float) and not math.isnan(v)
        )
        xrows.append(
            [
                r["mixture"],
                r["selector"],
                r["n"],
                _fmt(r["kept_fraction"], 2),
                _fmt(r["rouge_kept"]),
                _fmt(r["rouge_all"]),
                f"{r['best_member']} ({_fmt(r['best_member_rouge_kept'])})",
                f"{_fmt(r['diff'])} [{_fmt(r['ci_lo'])}, {_fmt(r['ci_hi'])}]",
                _fmt(r["echo_rate_kept"], 2),
                shares,
            ]
        )
    xtab = _table(
        [
            "mixture",
            "selector",
            "n",
            "kept",
            "Rouge-L kept",
            "Rouge-L all",
            "best member (Rouge-L kept)",
            "consensus - best [95% CI]",
            "echo",
            "kept output from",
        ],
        xrows,
    )
    notes = [f"- not run: `{k}` ({why})" for k, why in NOT_RUN.items()]
    notes += [f"- skipped: {k} ({why})" for k, why in skipped.items()]
    return f"{head}\n{mtab}\n\n{xtab}\n\n" + "\n".join(notes) + "\n"


@dataclass
class EvalMembersResult:
    """What `eval_members` wrote: the rows of both tables, the markdown and the out dir."""

    out: Path
    members: list[dict[str, Any]]
    mixtures: list[dict[str, Any]]
    markdown: str
    skipped: dict[str, str]


def eval_members(
    config: EvalMembersConfig,
    out: str | Path | None = None,
    *,
    only: Sequence[str] | None = None,
    backends: Mapping[str, Backend] | None = None,
    progress: bool = True,
    report_only: bool = False,
    n_resamples: int = 10000,
    items: Sequence[EvalItem] | None = None,
) -> EvalMembersResult:
    """Answer the gold tasks with each member (resumably), then score members and mixtures.

    Args:
        config: the evaluation.
        out: its folder (default ``outputs/eval-members/<name>``).
        only: answer with these members only this time (the report uses every answers file).
        backends: ready backends by member name instead of building them (tests).
        progress: show a progress bar per member.
        report_only: make no LM call; report from the answers on disk.
        n_resamples: bootstrap resamples.
        items: the gold items to answer instead of the config's (`load_items`).
    """
    out = Path(out) if out is not None else Path("outputs") / "eval-members" / config.name
    names = [m.name for m in config.members]
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise ConfigError(f"--members: unknown member(s) {unknown}; members are {names}")
    items = list(items) if items is not None else load_items(config)
    for spec in config.members:
        check_spec(out, spec, config, write=False)
    if not report_only:
        seeds = split_by_type(load_seed_tasks(seed_tasks_path(config.data_dir)))
        cache = CallCache(out / "cache.sqlite")
        # the pipeline's own backend builder (factory, its checks, the call cache); it reads
        # only `max_failed_fraction` of the config
        overrides = dict(backends or {})
        ctx = RunContext(config, out, seeds, cache, overrides, progress)  # type: ignore[arg-type]
        try:
            for spec in config.members:
                if only and spec.name not in only:
                    continue
                check_spec(out, spec, config, write=True)
                backend = ctx.backend(spec)
                try:
                    answer_member(config, spec, backend, items, out, seeds=seeds, progress=progress)
                finally:
                    backend.close()
        finally:
            cache.close()
    return write_report(config, out, items, n_resamples=n_resamples)


def write_report(
    config: EvalMembersConfig,
    out: Path,
    items: Sequence[EvalItem],
    *,
    n_resamples: int = 10000,
) -> EvalMembersResult:
    """Score the answers on disk; write members.csv, mixtures.csv and report.md."""
    answers, member_rows, skipped = {}, [], {}
    for spec in config.members:
        ok, failed = read_answers(out, spec.name)
        answers[spec.name] = ok
        if not answers_path(out, spec.name).exists():
            skipped[spec.name] = "no answers yet"
            continue
        row = member_row(spec.name, ok, items, failed)
        style = f"{spec.kind} {spec.model} {spec.prompt_style}" + (" chat" if spec.chat else "")
        member_rows.append({"member": spec.name, "spec": style, **row})
    member_rows.append({"member": "gold", "spec": "references", **gold_row(items)})
    names = [m.name for m in config.members]
    mix_rows = []
    for mix, who in config.mixtures.items():
        missing = [m for m in who if m in skipped]
        if missing:
            skipped[f"mixture {mix}"] = f"no answers from {missing}"
            continue
        mix_rows += mixture_rows(
            mix, who, answers, items, all_members=names, seed=config.seed, n_resamples=n_resamples
        )
    md = report_markdown(config, member_rows, mix_rows, skipped)
    out.mkdir(parents=True, exist_ok=True)
    (out / "members.csv").write_text(_csv(member_rows))
    (out / "mixtures.csv").write_text(_csv(mix_rows))
    (out / "report.md").write_text(md)
    return EvalMembersResult(out, member_rows, mix_rows, md, skipped)


__all__ = [
    "ECHO_INPUT_COVERAGE",
    "ECHO_MIN_TOKENS",
    "ECHO_THRESHOLD",
    "NOT_RUN",
    "SELECTOR_ENTRIES",
    "EvalMembersConfig",
    "EvalMembersResult",
    "answer_member",
    "check_spec",
    "eval_members",
    "gold_row",
    "is_echo",
    "load_eval_config",
    "load_items",
    "member_row",
    "mixture_rows",
    "paired_bootstrap",
    "read_answers",
    "report_markdown",
    "write_report",
]
