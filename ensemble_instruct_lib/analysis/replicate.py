"""The paper's three findings in miniature, as one resumable study (`replicate` on the command line;
docs/replication.md says what it measured).

Steps, each resumable on its own, all under one study folder (``outputs/replicate/<name>``):

1. ``finding3/``: each model as an output generator on the gold tasks (`eval_members`: its answers
   cached per member) - the instruction-tuned member against the vanilla ones.
2. ``data/<method>-s<seed>/``: one pipeline run per prompt method (Ensemble-Instruct's and
   Self-Instruct's) and seed, with the same generator, mixture and stage-4 rule (the run config);
   every LM call is in the run's call cache, so a killed run resumes without asking again.
3. ``datasets/``: size-matched training sets drawn from those runs: ``ei-s<seed>`` and
   ``si-s<seed>`` (the kept, ensembled examples), ``single-s<seed>`` (the stage-2 outputs alone of
   the Ensemble-Instruct run, the paper's no-ensemble control), all of one size: the smallest
   ensembled set's.
4. ``finetune/<student>/<dataset>/``: one LoRA fine-tune per (student, dataset) it needs (finding 1:
   the finding-1 student on ei and si; finding 2: every student on ei and single); ``done.json``
   marks a finished one, which a rerun skips; an unfinished one is redone from step 0 (a transformers
   resume from a checkpoint is not bit-identical on CPU, and a resumed study must give the tables
   an uninterrupted one gives: at most one fine-tune's time is lost).
5. ``eval/<student>/<system>/predictions.jsonl``: greedy answers of the untuned student ("base")
   and of each tuned one, through transformers (the reference implementation), appended as they
   arrive and reused on a rerun.
6. ``tables/`` (scores.csv, systems.csv, comparisons.csv, finding3.csv, data.csv, timings.csv) and
   the report (``report.md`` and figures; with `report` set also docs/replication.md, and with
   `readme` the README's summary block), rebuilt from the folder on every run.

`--quick` applies the config's `quick:` overrides (a few items, instructions and steps) to a
separate folder (``<name>-quick``): the same code path in minutes.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..data.config_builder import ConfigSource, FieldError, build, check, read_mapping
from ..data.eval_items import EvalItem
from ..data.jsonl import read_jsonl, write_json, write_jsonl
from ..errors import ConfigError
from . import replication_report as rep

METHODS = ("ensemble_instruct", "self_instruct")
METHOD_TAGS = {"ensemble_instruct": "ei", "self_instruct": "si"}
STUDENT_KINDS = ("vanilla", "instruction-tuned")
README_START = "<!-- replication:start -->"
README_END = "<!-- replication:end -->"


# --------------------------------------------------------------------------------------------
# config


@dataclass
class Student:
    """A model fine-tuned on the generated data: `model` a known name, hub id or folder."""

    name: str
    model: str
    kind: str = "vanilla"

    def __post_init__(self) -> None:
        check(
            self.kind in STUDENT_KINDS,
            f"kind: must be one of {list(STUDENT_KINDS)}, got {self.kind!r}",
            "kind",
        )


@dataclass
class EvalSettings:
    """The gold tasks every system answers (greedy, transformers) and how.

    Attributes:
        user_oriented: the first n of Self-Instruct's 252 user-oriented tasks (0: none).
        superni: n SuperNI test instances spread over its 119 tasks (0: none); they need the task
            files (`superni_dir` or $EI_SUPERNI_DIR), skipped with a line when absent.
        superni_dir: the natural-instructions ``tasks/`` folder.
        max_new_tokens, batch_size: the answers' cap and prompts per generate call.
    """

    user_oriented: int = 120
    superni: int = 120
    superni_dir: str | None = None
    max_new_tokens: int = 128
    batch_size: int = 8


@dataclass
class Finding3:
    """Which eval-members members play the small instruction-tuned and the vanilla generators."""

    instructed: str = "smollm2-chat"
    vanilla: list[str] = field(default_factory=lambda: ["gemma-fewshot", "gemma-zeroshot"])


@dataclass
class ReplicateConfig:
    """The whole study (see the module docstring; configs/replicate-cpu.yaml explains each value).

    Attributes:
        name: the study folder's name under outputs/replicate/.
        run_config: the pipeline config whose generator, mixture and stage-4 rule make the data.
        members: the eval-members config naming finding 3's members.
        num_instructions: accepted instructions per task type in each data run.
        seeds: the data runs' seeds (at least 2 for a seed spread).
        students: the models fine-tuned; `finding1_student` is the one finding 1 tunes.
        finetune_config: the shared fine-tuning YAML; `finetune` overrides its keys.
        eval: the gold tasks and decoding.
        n_resamples: bootstrap resamples per comparison.
        report: also write the report here (docs/replication.md); None: only the study folder.
        readme: replace the block between the replication markers in this file with the summary.
        quick: overrides `--quick` applies (nested mappings merge).
    """

    name: str
    run_config: str
    members: str
    students: list[Student]
    finding1_student: str
    finetune_config: str
    num_instructions: int = 20
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    finetune: dict[str, Any] = field(default_factory=dict)
    finding3: Finding3 = field(default_factory=Finding3)
    eval: EvalSettings = field(default_factory=EvalSettings)
    n_resamples: int = 10000
    report: str | None = None
    readme: str | None = None
    quick: dict[str, Any] = field(default_factory=dict)
    #: the YAML file it was read from ("" for a dict); set by `load_replicate_config`
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        names = [s.name for s in self.students]
        check(
            len(names) == len(set(names)) and bool(names),
            f"students: give one or more students with distinct names, got {names}",
            "students",
        )
        check(
            self.finding1_student in names,
            f"finding1_student: {self.finding1_student!r} is not in students {names}",
            "finding1_student",
        )
        check(
            bool(self.seeds) and len(set(self.seeds)) == len(self.seeds),
            f"seeds: give distinct seeds, got {self.seeds}",
            "seeds",
        )
        check(
            self.num_instructions >= 1,
            f"num_instructions: must be >= 1, got {self.num_instructions}",
            "num_instructions",
        )
        check(
            self.eval.user_oriented >= 0 and self.eval.superni >= 0,
            "eval: user_oriented and superni must be >= 0",
            "eval",
        )
        check(
            self.eval.user_oriented + self.eval.superni != 0,
            "eval: user_oriented and superni are both 0; nothing to score",
            "eval",
        )
        for key in ("model", "data", "run_dir"):
            check(
                key not in self.finetune,
                f"finetune.{key}: set by the study per student and dataset",
                f"finetune.{key}",
            )

    def student(self, name: str) -> Student:
        return next(s for s in self.students if s.name == name)


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def load_replicate_config(
    source: str | Path | dict[str, Any], *, quick: bool = False
) -> ReplicateConfig:
    """The study config from YAML (or a dict); with `quick`, its `quick:` overrides applied and
    ``-quick`` added to the name.

    Raises:
        ConfigError: one line naming the file, the line and the field.
    """
    data, where = read_mapping(
        source, "name, run_config, members, students, ...", "configs/replicate-cpu.yaml"
    )
    if quick:
        over = data.get("quick") or {}
        if not isinstance(over, dict):
            raise where.locate(FieldError("quick", "expected a mapping of overrides"))
        data = _merge(data, over)
        data["name"] = f"{data.get('name', 'replicate')}-quick"
        # an overridden value's line is its line under quick:
        lines = dict(where.lines)
        lines.update(
            {p.removeprefix("quick."): n for p, n in where.lines.items() if p.startswith("quick.")}
        )
        where = ConfigSource(where.file, lines)
    data.pop("source", None)
    cfg = build(ReplicateConfig, data, where)
    cfg.source = where.file
    return cfg


def study_at(out: str | Path, *, progress: bool = False) -> Study:
    """The study a folder holds, from its ``study_config.json`` (to read its results: its
    `report` and `readme` are unset, so nothing outside the folder is written).

    Raises:
        ConfigError: the folder holds no study.
    """
    path = Path(out) / "study_config.json"
    if not path.exists():
        raise ConfigError(
            f"{out}: no study here (no study_config.json); run `python -m ensemble_instruct_lib "
            "replicate --config configs/replicate-cpu.yaml` (or --quick) to make one"
        )
    cfg = build(ReplicateConfig, json.loads(path.read_text()), ConfigSource(str(path), {}))
    return Study(cfg, out, progress=progress)


# --------------------------------------------------------------------------------------------
# the study's plan (pure)


def data_runs(cfg: ReplicateConfig) -> list[tuple[str, int]]:
    """(method, seed) of every data run, in the order they run."""
    return [(m, s) for s in cfg.seeds for m in METHODS]


def finetune_jobs(cfg: ReplicateConfig) -> list[tuple[str, str]]:
    """(student, dataset) pairs to fine-tune: finding 1 on ei/si for its student, finding 2 on
    ei/single for every student; each pair once."""
    jobs: list[tuple[str, str]] = []
    for s in cfg.seeds:
        jobs += [(cfg.finding1_student, f"ei-s{s}"), (cfg.finding1_student, f"si-s{s}")]
    for st in cfg.students:
        for s in cfg.seeds:
            jobs += [(st.name, f"ei-s{s}"), (st.name, f"single-s{s}")]
    return list(dict.fromkeys(jobs))


def comparisons(cfg: ReplicateConfig) -> list[rep.Comparison]:
    """The comparisons the paper makes, in this study's names (system "base" = untuned)."""
    f1 = cfg.finding1_student
    out = [
        rep.Comparison("1", "Ensemble-Instruct vs Self-Instruct prompts", f1, "ei", "si"),
        rep.Comparison("1", "Ensemble-Instruct data vs untuned", f1, "ei", "base"),
        rep.Comparison("1", "Self-Instruct data vs untuned", f1, "si", "base"),
    ]
    for st in cfg.students:
        out += [
            rep.Comparison("2", f"ensembled vs single-output ({st.kind})", st.name, "ei", "single"),
            rep.Comparison("2", f"ensembled vs untuned ({st.kind})", st.name, "ei", "base"),
            rep.Comparison("2", f"single-output vs untuned ({st.kind})", st.name, "single", "base"),
        ]
    for v in cfg.finding3.vanilla:
        out.append(
            rep.Comparison(
                "3", f"{cfg.finding3.instructed} vs {v}", "members", cfg.finding3.instructed, v
            )
        )
    return out


def size_matched(records: Sequence[Mapping[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """`n` records drawn without replacement (seeded), kept in file order."""
    if n > len(records):
        raise ValueError(f"cannot draw {n} records from {len(records)}")
    keep = sorted(random.Random(seed).sample(range(len(records)), n))
    return [dict(records[i]) for i in keep]


def spread_items(items: Sequence[EvalItem], n: int) -> list[EvalItem]:
    """`n` items taken round-robin over their tasks (task order as given): every task gets one
    before any gets two."""
    by_task: dict[str, list[EvalItem]] = {}
    for it in items:
        by_task.setdefault(it.task_id, []).append(it)
    out: list[EvalItem] = []
    k = 0
    while len(out) < n and any(len(v) > k for v in by_task.values()):
        out += [v[k] for v in by_task.values() if len(v) > k][: n - len(out)]
        k += 1
    return out


# --------------------------------------------------------------------------------------------
# running it


class Study:
    """One study folder: runs what is missing, then rebuilds the tables and the report."""

    def __init__(
        self,
        cfg: ReplicateConfig,
        out: str | Path | None = None,
        *,
        progress: bool = True,
        log: Callable[[str], None] = print,
    ) -> None:
        self.cfg = cfg
        self.out = Path(out) if out is not None else Path("outputs") / "replicate" / cfg.name
        self.progress = progress
        self.log = log
        #: read what is on disk only: no LM call, no training (`run(report_only=True)`)
        self.read_only = False
        self._timings_path = self.out / "timings.json"

    # -- bookkeeping -------------------------------------------------------------------------

    def _timed(self, step: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        result = fn()
        timings = json.loads(self._timings_path.read_text()) if self._timings_path.exists() else {}
        timings[step] = round(timings.get(step, 0.0) + time.perf_counter() - t0, 2)
        write_json(self._timings_path, timings)
        return result

    def _check_config(self) -> None:
        """A study folder belongs to one config (its `quick`, `report`, `readme` aside)."""
        import dataclasses

        mine = dataclasses.asdict(self.cfg)
        for k in ("quick", "report", "readme", "n_resamples", "source"):
            mine.pop(k)
        mine = json.loads(json.dumps(mine))
        path = self.out / "study_config.json"
        if path.exists():
            old = json.loads(path.read_text())
            changed = sorted(k for k in set(old) | set(mine) if old.get(k) != mine.get(k))
            if changed:
                raise ConfigError(
                    f"{path}: this study folder was made with other values of {changed}; rerun "
                    "with the same config to resume, or choose another --out for a new study"
                )
        else:
            write_json(path, mine)

    # -- steps -------------------------------------------------------------------------------

    def items(self) -> dict[str, list[EvalItem]]:
        """Benchmark -> the gold items every system answers."""
        from ..data.public import user_oriented_path
        from ..train.evaluate import user_oriented_items

        e = self.cfg.eval
        out: dict[str, list[EvalItem]] = {}
        if e.user_oriented:
            out["user_oriented"] = user_oriented_items(user_oriented_path())[: e.user_oriented]
        if e.superni:
            from ..data.superni import load_superni_items, load_test_tasks, superni_dir
            from ..errors import DataError

            try:
                superni_dir(e.superni_dir)
            except DataError as err:
                self.log(f"SuperNI skipped: {str(err).splitlines()[0]}")
            else:
                # only the instances the spread can reach are read (and id-checked)
                tasks = load_test_tasks()
                per_task = -(-e.superni // len(tasks))
                every = load_superni_items(e.superni_dir, tasks=tasks, max_instances=per_task)
                out["superni"] = spread_items(every, e.superni)
        return out

    def finding3(self, items: Mapping[str, list[EvalItem]]) -> pd.DataFrame:
        """Finding 3's members answer the gold tasks; per-item scores (student "members")."""
        from ..train.evaluate import score_example
        from .eval_members import read_answers

        f3 = self.cfg.finding3
        wanted = [f3.instructed, *f3.vanilla]
        rows = []
        for bench, its in items.items():
            out = self.out / "finding3" / bench
            answered = all(set(read_answers(out, m)[0]) >= {it.id for it in its} for m in wanted)
            if not self.read_only and not answered:
                self._answer_finding3(bench, its, out)
            for member in wanted:
                answers, _ = read_answers(out, member)
                for it in its:
                    if it.id in answers:
                        rouge = score_example(answers[it.id], it.references)[0]
                        rows.append(("members", member, None, bench, it.id, rouge))
        return pd.DataFrame(
            rows, columns=["student", "system", "seed", "benchmark", "item", "rouge"]
        )

    def _answer_finding3(self, bench: str, its: list[EvalItem], out: Path) -> None:
        import dataclasses

        from .eval_members import eval_members, load_eval_config

        f3 = self.cfg.finding3
        wanted = [f3.instructed, *f3.vanilla]
        mcfg = load_eval_config(self.cfg.members)
        missing = [w for w in wanted if w not in [m.name for m in mcfg.members]]
        if missing:
            raise ConfigError(f"finding3: {missing} are not members of {self.cfg.members}")
        mcfg = dataclasses.replace(
            mcfg,
            members=[m for m in mcfg.members if m.name in wanted],
            mixtures={"finding3": wanted},
            tasks=[bench],
            n=len(its),
        )
        self.log(f"[replicate] finding 3: {', '.join(wanted)} answer {len(its)} {bench} items")
        self._timed(
            "finding3",
            lambda: eval_members(mcfg, out, progress=self.progress, items=its, n_resamples=200),
        )

    def data(self) -> pd.DataFrame:
        """Run (or resume) every data run; one row of intrinsic metrics per run."""
        from ..runs import pipeline
        from ..runs.config import load_config
        from ..runs.metrics import RUN_METRICS, run_metrics

        rows = []
        for method, seed in data_runs(self.cfg):
            tag = f"{METHOD_TAGS[method]}-s{seed}"
            out = self.out / "data" / tag
            manifest = out / "manifest.json"
            finished = (
                manifest.exists() and json.loads(manifest.read_text()).get("status") == "done"
            )
            if not finished and self.read_only:
                continue
            if not finished:
                cfg = load_config(
                    self.cfg.run_config,
                    name=tag,
                    method=method,
                    seed=seed,
                    num_instructions=self.cfg.num_instructions,
                )
                self.log(f"[replicate] data run {tag} ({method}, seed {seed})")
                self._timed(
                    f"data {tag}", lambda c=cfg, o=out: pipeline.run(c, o, progress=self.progress)
                )
            m = run_metrics(out)
            rows.append(
                {
                    "run": tag,
                    "method": method,
                    "seed": seed,
                    "kept": len(read_jsonl(out / "alpaca.jsonl")),
                    "single_output": len(read_jsonl(out / "alpaca_single_output.jsonl")),
                    **{k: m.get(k) for k in RUN_METRICS},
                }
            )
        return pd.DataFrame(rows)

    def datasets(self, data: pd.DataFrame) -> dict[str, Path]:
        """The size-matched training sets (rewritten identically on every run)."""
        if len(data) < len(data_runs(self.cfg)):
            return {}
        n = int(data["kept"].min())
        if n < 1:
            raise ConfigError(
                f"a data run kept only {n} examples (see {self.out / 'tables' / 'data.csv'}); "
                "raise num_instructions in the study config so that every run keeps an example"
            )
        paths: dict[str, Path] = {}
        root = self.out / "datasets"
        for seed in self.cfg.seeds:
            for method in METHODS:
                tag = f"{METHOD_TAGS[method]}-s{seed}"
                recs = read_jsonl(self.out / "data" / tag / "alpaca.jsonl")
                paths[tag] = root / f"{tag}.jsonl"
                self._write_set(paths[tag], size_matched(recs, n, seed))
            single = read_jsonl(self.out / "data" / f"ei-s{seed}" / "alpaca_single_output.jsonl")
            paths[f"single-s{seed}"] = root / f"single-s{seed}.jsonl"
            self._write_set(paths[f"single-s{seed}"], size_matched(single, n, seed))
        return {k: p for k, p in paths.items() if p.exists()}

    def _write_set(self, path: Path, records: list[dict[str, Any]]) -> None:
        if not self.read_only:
            write_jsonl(path, records)

    def finetune(self, datasets: Mapping[str, Path]) -> dict[tuple[str, str], Path]:
        """Fine-tune every (student, dataset) job not done yet; their model folders."""
        from ..train.finetune import FinetuneConfig, finetune

        models: dict[tuple[str, str], Path] = {}
        jobs = finetune_jobs(self.cfg)
        for k, (student, ds) in enumerate(jobs, start=1):
            if ds not in datasets:
                continue
            run_dir = self.out / "finetune" / student / ds
            data_sha = hashlib.sha256(datasets[ds].read_bytes()).hexdigest()
            done = run_dir / "done.json"
            if done.exists():
                mark = json.loads(done.read_text())
                if mark.get("data_sha256") != data_sha:
                    raise ConfigError(
                        f"{done}: made from another {ds}.jsonl than the study's now; delete "
                        f"{run_dir} to tune again, or choose another --out"
                    )
                models[(student, ds)] = Path(mark["model_dir"])
                continue
            if self.read_only:
                continue
            if run_dir.exists():
                # an interrupted fine-tune starts again from step 0: transformers' resume from a
                # checkpoint is not bit-identical on CPU (measured: an answer changed), and a
                # study resumed must give the tables an uninterrupted one gives
                import shutil

                shutil.rmtree(run_dir)
            self.log(f"[replicate] fine-tune {student} on {ds} ({k}/{len(jobs)})")
            cfg = FinetuneConfig.from_yaml(
                self.cfg.finetune_config,
                **{
                    **self.cfg.finetune,
                    "model": self.cfg.student(student).model,
                    "data": str(datasets[ds]),
                    "run_dir": str(run_dir),
                    "progress": self.progress,
                },
            )
            res = self._timed(f"finetune {student}/{ds}", lambda c=cfg: finetune(c))
            write_json(
                done,
                {
                    "data_sha256": data_sha,
                    "model_dir": str(res.model_dir),
                    "global_step": res.metrics["global_step"],
                    "train_loss": res.metrics["train_loss"],
                },
            )
            models[(student, ds)] = Path(res.model_dir)
        return models

    def evaluate(
        self, models: Mapping[tuple[str, str], Path], items: Mapping[str, list[EvalItem]]
    ) -> pd.DataFrame:
        """Every untuned and tuned student answers the gold items; per-item scores."""
        from ..engines.hf import HFBackend
        from ..train.evaluate import generate_predictions, score_example
        from ..train.finetune import model_source

        systems: list[tuple[str, str, int | None, str]] = []
        for st in self.cfg.students:
            systems.append((st.name, "base", None, st.model))
            for (student, ds), path in models.items():
                if student == st.name:
                    kind, seed = ds.rsplit("-s", 1)
                    systems.append((student, kind, int(seed), str(path)))
        # untuned students first, then seed by seed: an interrupted study has whole seeds
        systems.sort(key=lambda s: (s[2] is not None, s[2] or 0))
        every = [it for its in items.values() for it in its]
        bench_of = {it.id: b for b, its in items.items() for it in its}
        rows = []
        for k, (student, kind, seed, model) in enumerate(systems, start=1):
            name = kind if seed is None else f"{kind}-s{seed}"
            run_dir = self.out / "eval" / student / name

            def answer(model: str = model, run_dir: Path = run_dir) -> dict[str, str]:
                backend = HFBackend(model_source(model), batch_size=self.cfg.eval.batch_size)
                try:
                    return generate_predictions(
                        backend,
                        every,
                        max_new_tokens=self.cfg.eval.max_new_tokens,
                        batch_size=self.cfg.eval.batch_size,
                        run_dir=run_dir,
                        progress=self.progress,
                    )
                finally:
                    backend.close()

            path = run_dir / "predictions.jsonl"
            preds = {
                r["id"]: r["prediction"]
                for r in (read_jsonl(path) if path.exists() else [])
                if r.get("prediction") is not None
            }
            if all(it.id in preds for it in every):
                pass  # answered before: no model is loaded
            elif self.read_only:
                self.log(
                    f"[replicate] {student}/{name}: {len(preds)} of {len(every)} items "
                    "answered, left out of the tables (run without --report-only to finish)"
                )
                continue
            else:
                self.log(
                    f"[replicate] evaluate {student}/{name} on {len(every)} items "
                    f"({k}/{len(systems)})"
                )
                preds = self._timed(f"evaluate {student}/{name}", answer)
            for it in every:
                rouge = score_example(preds.get(it.id, ""), it.references)[0]
                rows.append((student, kind, seed, bench_of[it.id], it.id, rouge))
        return pd.DataFrame(
            rows, columns=["student", "system", "seed", "benchmark", "item", "rouge"]
        )

    # -- the whole study -----------------------------------------------------------------------

    def run(self, *, report_only: bool = False, write: bool = True) -> dict[str, Any]:
        """Run what is missing (nothing with `report_only`), then build the tables and (with
        `write`) write them and the report. Returns the tables and a markdown ``summary``."""
        self.read_only = report_only
        if not report_only:
            self.out.mkdir(parents=True, exist_ok=True)
            self._check_config()
        elif (self.out / "study_config.json").exists():
            self._check_config()
        else:
            # nothing to report: an empty report would overwrite the docs' real one
            raise ConfigError(
                f"{self.out}: no study here (no study_config.json), so --report-only has nothing "
                "to report; check --out, or run without --report-only to make the study"
            )
        items = self.items()
        if not items:
            raise ConfigError("eval: no benchmark is available (see the lines above)")
        f3 = self.finding3(items)
        data = self.data()
        datasets = self.datasets(data)
        models = self.finetune(datasets)
        students = self.evaluate(models, items)
        # seed: None for untuned systems; a nullable int column concatenates without a dtype guess
        parts = [df.astype({"seed": "Int64"}) for df in (f3, students) if not df.empty]
        scores = pd.concat(parts, ignore_index=True) if parts else f3
        tables = self.tables(scores, data)
        if write:
            self.write_tables(tables)
        return {**tables, "summary": rep.readme_block(tables["comparisons"], "docs/replication.md")}

    def tables(self, scores: pd.DataFrame, data: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """scores, systems, comparisons, data and timings."""
        systems = rep.system_table(scores)
        comp = rep.compare(scores, comparisons(self.cfg), n_resamples=self.cfg.n_resamples)
        timings = json.loads(self._timings_path.read_text()) if self._timings_path.exists() else {}
        timing = pd.DataFrame(
            [{"step": k, "seconds": v} for k, v in timings.items()], columns=["step", "seconds"]
        )
        return {
            "scores": scores,
            "systems": systems,
            "comparisons": comp,
            "data": data,
            "timings": timing,
        }

    def write_tables(self, tables: Mapping[str, pd.DataFrame]) -> None:
        """tables/*.csv and the report (see `write_report`)."""
        tables_dir = self.out / "tables"
        tables_dir.mkdir(parents=True, exist_ok=True)
        for name, df in tables.items():
            df.to_csv(tables_dir / f"{name}.csv", index=False)
        self.write_report(tables)

    def setup_facts(self, tables: Mapping[str, pd.DataFrame]) -> dict[str, str]:
        """The set-up lines of the report, from the config and the data runs."""
        c = self.cfg
        data, scores = tables["data"], tables["scores"]
        n_train = int(data["kept"].min()) if len(data) == len(data_runs(c)) else None
        benches = {
            b: int(scores.loc[scores["benchmark"] == b, "item"].nunique())
            for b in sorted(scores["benchmark"].unique())
        }
        students = ", ".join(f"{s.name} = `{s.model}` ({s.kind})" for s in c.students)
        return {
            "data runs": (
                f"`{c.run_config}` (generator, mixture, stage-4 rule) with each method "
                f"({', '.join(METHODS)}), {c.num_instructions} instructions per task type, "
                f"seeds {c.seeds}"
            ),
            "training sets": (
                f"{n_train} examples each (the smallest kept set; size-matched by a seeded draw)"
                if n_train is not None
                else "not made yet"
            ),
            "students": f"{students}; finding 1 tunes {c.finding1_student}",
            "fine-tuning": f"`{c.finetune_config}` with {c.finetune or 'no overrides'}",
            "evaluation": (
                f"{benches or 'nothing scored yet'} items; greedy, {c.eval.max_new_tokens} new "
                "tokens, transformers (the reference implementation, so no engine check is needed)"
            ),
            "finding 3 members": (
                f"`{c.members}`: {c.finding3.instructed} vs {', '.join(c.finding3.vanilla)}"
            ),
        }

    def write_report(self, tables: Mapping[str, pd.DataFrame]) -> Path:
        """report.md and its figures in the study folder; copies where the config says."""
        import matplotlib.pyplot as plt

        report_dir = self.out / "report"
        report_dir.mkdir(parents=True, exist_ok=True)
        figs = {}
        if not tables["comparisons"].empty:
            figs["comparisons"] = rep.intervals_figure(tables["comparisons"])
        if not tables["systems"].empty:
            figs["scores"] = rep.scores_figure(tables["systems"])
        for name, fig in figs.items():
            fig.savefig(report_dir / f"{name}.png", dpi=110)
            plt.close(fig)
        notes = (
            []
            if "superni" in set(tables["scores"]["benchmark"])
            else [
                "SuperNI was not scored: its task files (definitions and inputs) are not on this "
                "machine (the data folder has the references only); set eval.superni_dir or "
                "$EI_SUPERNI_DIR to a natural-instructions tasks/ folder to add it."
            ]
        )
        setup = {
            "config": self.cfg.source or "<a dict>",
            "out": str(self.out),
            "n_resamples": self.cfg.n_resamples,
            "facts": self.setup_facts(tables),
        }

        def markdown(fig_dir: str) -> str:
            return rep.report_markdown(
                setup=setup,
                systems=tables["systems"],
                comparisons=tables["comparisons"],
                data=tables["data"],
                timings=tables["timings"],
                figures={k: f"{fig_dir}/{k}.png" for k in figs},
                notes=notes,
            )

        path = self.out / "report.md"
        path.write_text(markdown("report"))
        if self.cfg.report:
            import shutil

            doc = Path(self.cfg.report)
            fig_dir = doc.parent / doc.stem
            fig_dir.mkdir(parents=True, exist_ok=True)
            for name in figs:
                shutil.copyfile(report_dir / f"{name}.png", fig_dir / f"{name}.png")
            doc.write_text(markdown(doc.stem))
        if self.cfg.readme:
            readme = Path(self.cfg.readme)
            text = readme.read_text()
            block = rep.readme_block(tables["comparisons"], self.cfg.report or str(path))
            try:
                readme.write_text(rep.replace_block(text, block, README_START, README_END))
            except ValueError:
                self.log(f"{readme}: no {README_START} ... {README_END} block; summary not written")
        return path
