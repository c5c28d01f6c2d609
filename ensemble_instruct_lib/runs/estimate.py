"""An estimate before a run: the expected LM calls, tokens and time per stage and model, without
running the job (``python -m ensemble_instruct_lib run --config ... --estimate``).

Not part of the method; it applies the method's numbers (METHOD.md) to a config:

- stage 1: per task type, ``prompts_per_round`` calls per round until ``num_instructions`` are
  accepted, at an assumed rate of accepted instructions per call (capped by the rounds budget);
- stage 2: one call per accepted instruction;
- stage 3: one call per valid instance (an assumed valid rate) per extra model (per sample of a
  self-ensemble);
- stage 4: no call for the paper's selectors (model-backed selectors are not estimated).

The rates (accepted per call, valid rate) come from a previous run dir's manifest when one is
given (or the run dir already holds one), else the documented defaults `DEFAULT_ACCEPTED_PER_CALL`
and `DEFAULT_VALID_RATE`. Prompt lengths come from building the real prompts with the config's
prompt set (seed tasks stand in for generated instructions); tokens are counted by the engine
on the calibration calls (its tokens per character then scale every built prompt), or, when the
engine reports no counts, by the chars/4 rule (the table says which). Speeds come from a short
calibration on each configured engine (per model: one prefill call, ``max_new_tokens=1``, on its
longest prompt, then ``calls_per_stage`` calls of each stage's prompt shape with the stage's own
decoding parameters, uncached, each timed), fitted as ``wall = prompt_tokens / prompt_tok_s +
completion_tokens / gen_tok_s``; or, for a model the previous run dir's ledger timed
(`engines.ledger`), from those measured calls, with no calibration call. Time is call time (the
ledger's ``wall_s``); model loading is shown apart. For llama.cpp, which reuses the prompt
prefix a call shares with the previous one, a stage's prompt cost is scaled by the share of its
prompt text that is new when a type's prompts run back to back (the "new prompt" column; a
one-template stage-2 prompt set is mostly shared). Left out: harvested extra instances, and
resuming (the whole job is estimated).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.public import SeedTask
from ..engines.base import Backend, DecodingParams, Generation, greedy_params, sampling_params
from ..engines.ledger import read_ledger
from ..errors import ConfigError
from ..method.prompts import END, get_prompt_set, instance_demos
from ..method.run_files import MANIFEST
from .config import ModelSpec, RunConfig

#: stage-1 accepted instructions per call when no previous run says otherwise (Ensemble-Instruct's
#: one-task prompt on Gemma 3 270M accepted 0.97 of the candidates it judged, README)
DEFAULT_ACCEPTED_PER_CALL = 0.9
#: stage-2 valid instances per accepted instruction when no previous run says otherwise
DEFAULT_VALID_RATE = 0.9
#: the token rule where an engine cannot count
CHARS_PER_TOKEN = 4.0


@dataclass
class Assumptions:
    """The rates behind the expected calls, and where they come from."""

    accepted_per_call: dict[str, float]
    valid_rate: float
    source: str


@dataclass
class Shape:
    """One stage's calls on one model: sample prompts, decoding params and expected calls."""

    stage: str
    model: ModelSpec
    prompts: list[str]
    params: DecodingParams
    calls: int
    fresh: float = 1.0


@dataclass
class ModelRates:
    """A model's measured speed: prompt and generated tokens per second, per stage the mean
    prompt and completion tokens per call, the model load time, and where it came from."""

    model: str
    prompt_tok_s: float
    gen_tok_s: float
    prompt_tokens: dict[str, float]
    completion_tokens: dict[str, float]
    token_count: str
    load_s: float
    calibration_calls: int
    source: str


@dataclass
class StageEstimate:
    stage: str
    model: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    token_count: str
    fresh_prompt: float = 1.0


@dataclass
class Estimate:
    """The expected work of a run, per stage and model, with what it assumed."""

    rows: list[StageEstimate]
    rates: dict[str, ModelRates]
    assumptions: Assumptions
    calibration_calls: int = 0
    notes: list[str] = field(default_factory=list)

    def total_seconds(self) -> float:
        return sum(r.seconds for r in self.rows) + sum(r.load_s for r in self.rates.values())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"total_seconds": self.total_seconds()}

    def to_text(self) -> str:
        a = self.assumptions
        lines = [
            f"estimate (nothing was run; {self.calibration_calls} calibration calls made)",
            f"  assumptions ({a.source}): accepted instructions per stage-1 call "
            f"{json.dumps(a.accepted_per_call)}, valid instances per instruction {a.valid_rate:.2f}",
        ]
        for r in self.rates.values():
            lines.append(
                f"  {r.model}: {r.prompt_tok_s:.0f} prompt tok/s, {r.gen_tok_s:.1f} generated "
                f"tok/s, load {r.load_s:.1f} s ({r.source}; tokens: {r.token_count})"
            )
        head = (
            "stage",
            "model",
            "calls",
            "prompt tokens",
            "completion tokens",
            "new prompt",
            "time s",
        )
        table = [head] + [
            (
                r.stage,
                r.model,
                str(r.calls),
                str(r.prompt_tokens),
                str(r.completion_tokens),
                f"{r.fresh_prompt:.0%}",
                f"{r.seconds:.1f}",
            )
            for r in self.rows
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(head))]
        lines += [
            "  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in table
        ]
        load = sum(r.load_s for r in self.rates.values())
        lines.append(
            f"  expected time on this machine: {self.total_seconds():.0f} s "
            f"(calls {self.total_seconds() - load:.0f} s + loading models {load:.0f} s)"
        )
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# assumptions and the expected calls


def measured_assumptions(config: RunConfig, run_dir: str | Path | None) -> Assumptions:
    """Acceptance and valid rates from a previous run dir's manifest, else the defaults."""
    groups = list(config.task_types)
    default = Assumptions(
        {g: DEFAULT_ACCEPTED_PER_CALL for g in groups}, DEFAULT_VALID_RATE, "defaults"
    )
    if run_dir is None or not (Path(run_dir) / MANIFEST).exists():
        return default
    counts = json.loads((Path(run_dir) / MANIFEST).read_text()).get("counts", {})
    ppr = config.instruction.prompts_per_round
    accepted = dict(default.accepted_per_call)
    for g, c in counts.get("stage1", {}).items():
        if g in accepted and c.get("rounds"):
            accepted[g] = max(c["accepted"] / (c["rounds"] * ppr), 1e-3)
    s2 = counts.get("stage2", {}).values()
    asked = sum(c["instructions"] for c in s2)
    valid = sum(c["valid"] for c in s2) / asked if asked else DEFAULT_VALID_RATE
    return Assumptions(accepted, valid, f"measured in {run_dir}")


def stage1_calls(config: RunConfig, accepted_per_call: float) -> tuple[int, float]:
    """(calls, expected accepted instructions) of one stage-1 group."""
    st, target = config.instruction, config.num_instructions
    per_round = st.prompts_per_round * accepted_per_call
    rounds = min(st.rounds_budget(target), math.ceil(target / per_round - 1e-9))
    return rounds * st.prompts_per_round, min(float(target), rounds * per_round)


def shapes(
    config: RunConfig, seeds: Mapping[str, Sequence[SeedTask]], a: Assumptions
) -> list[Shape]:
    """Every stage's expected calls per model, with sample prompts built by the prompt set."""
    from .stage3 import stage3_models

    if config.method != "ensemble_instruct":
        raise ConfigError(
            f"--estimate knows the calls of method 'ensemble_instruct' only, not {config.method!r}"
        )
    cfg, ps = config, get_prompt_set(config.prompts, config.data_dir)
    gen, types = cfg.generator, list(cfg.task_types)
    s1 = {t: stage1_calls(cfg, a.accepted_per_call[t]) for t in types}
    st1 = cfg.instruction
    p1 = []
    for t in types:
        stand_in = [s.instruction for s in seeds[t][-10:]]  # generated instructions stand-ins
        rng = random.Random(f"{cfg.seed}-stage1-{t}-0")
        p1.append(
            [
                ps.instruction_prompt(
                    t,
                    seeds[t],
                    stand_in,
                    rng,
                    st1.num_seed_demos.get(t),
                    st1.num_generated_demos.get(t),
                ).text
                for _ in range(st1.prompts_per_round)
            ]
        )
    st2 = cfg.instance
    demos = {t: instance_demos(t, list(seeds[t]), st2.num_demos.get(t), cfg.seed) for t in types}
    p2 = [
        [ps.instance_prompt(s.instruction, t, demos[t]).text for s in seeds[t][:4]] for t in types
    ]
    accepted = sum(n for _, n in s1.values())
    stops = (END, "\n\n") if st2.stop_at_blank_line else (END,)
    out = [
        Shape(
            "stage1",
            gen,
            _interleave(p1),
            sampling_params(st1, (END,), cfg.seed),
            sum(c for c, _ in s1.values()),
            _fresh(gen, p1),
        ),
        Shape(
            "stage2",
            gen,
            _interleave(p2),
            sampling_params(st2, stops, cfg.seed),
            round(accepted),
            _fresh(gen, p2),
        ),
    ]
    st3 = cfg.output
    samples = len(st3.self_ensemble.sample_names()) if st3.self_ensemble is not None else 1
    valid = round(accepted * a.valid_rate)
    for spec in stage3_models(cfg):
        few = (
            {t: instance_demos(t, list(seeds[t]), st3.few_shot_demos, cfg.seed) for t in types}
            if spec.prompt_style == "few_shot"
            else {}
        )
        p3 = [
            [
                ps.output_prompt(
                    s.instruction,
                    s.instances[0].input,
                    style=spec.prompt_style,
                    task_type=t,
                    demos=few.get(t, ()),
                ).text
                for s in seeds[t][:4]
            ]
            for t in types
        ]
        params = greedy_params(st3, cfg.seed, spec.chat)
        out.append(
            Shape("stage3", spec, _interleave(p3), params, valid * samples, _fresh(spec, p3))
        )
    return out


def _fresh(spec: ModelSpec, per_type: Sequence[Sequence[str]]) -> float:
    """The share of a stage's prompt characters an engine must evaluate anew: 1, except for
    llama.cpp, which reuses the longest common prefix with the previous prompt. A run asks each
    type's prompts back to back, so each type's first prompt counts in full and every later one
    by what it does not share with the one before."""
    if spec.kind != "llama_cpp":
        return 1.0
    new = total = 0
    for prompts in per_type:
        if not prompts:
            continue
        new += len(prompts[0])
        total += len(prompts[0])
        for prev, cur in itertools.pairwise(prompts):
            total += len(cur)
            new += len(cur) - len(os.path.commonprefix([prev, cur]))
    return new / total if total else 1.0


def _interleave(lists: Sequence[Sequence[str]]) -> list[str]:
    """A0, B0, A1, B1, ...: the first calibration calls cover every task type."""
    return [x for group in zip(*lists, strict=False) for x in group]


# ------------------------------------------------------------------------------------------
# rates


def fit_rates(samples: Sequence[tuple[float, float, float]]) -> tuple[float, float]:
    """(prompt tok/s, generated tok/s) from (prompt tokens, completion tokens, wall s) per call:
    least squares of ``wall = p / P + c / G`` with both costs >= 0."""
    spp = sum(p * p for p, _, _ in samples)
    scc = sum(c * c for _, c, _ in samples)
    spc = sum(p * c for p, c, _ in samples)
    spw = sum(p * w for p, _, w in samples)
    scw = sum(c * w for _, c, w in samples)
    det = spp * scc - spc * spc
    a = b = -1.0
    if det > 1e-12 * max(spp * scc, 1e-300):
        a, b = (spw * scc - scw * spc) / det, (scw * spp - spw * spc) / det
    if a < 0 or b < 0:  # one cost explains it all
        a, b = (0.0, scw / scc if scc else 0.0) if a < 0 else (spw / spp if spp else 0.0, 0.0)
    return (1 / a if a > 0 else math.inf), (1 / b if b > 0 else math.inf)


def _tokens(n: int, text: str) -> float:
    return float(n) if n > 0 else len(text) / CHARS_PER_TOKEN


def calibrate(
    spec: ModelSpec,
    model_shapes: Sequence[Shape],
    backend_for: Callable[[ModelSpec], Backend],
    calls_per_stage: int,
    clock: Callable[[], float],
) -> ModelRates:
    """A model's rates from a few timed, uncached calls of each of its stages' prompt shapes."""
    t0 = clock()
    backend = backend_for(spec)
    load = clock() - t0
    samples: list[tuple[float, float, float]] = []
    chars = engine_tokens = 0
    completion: dict[str, list[float]] = {}
    try:
        # the prefill call: the longest prompt no later call repeats (llama.cpp would reuse it)
        unused = [p for s in model_shapes for p in s.prompts[calls_per_stage:]]
        longest = max(unused or [p for s in model_shapes for p in s.prompts], key=len)
        plan = [("prefill", longest, dataclasses.replace(model_shapes[0].params, max_new_tokens=1))]
        plan += [(s.stage, p, s.params) for s in model_shapes for p in s.prompts[:calls_per_stage]]
        for stage, prompt, params in plan:
            t = clock()
            g: Generation = backend.generate([prompt], params)[0]
            wall = clock() - t
            samples.append(
                (_tokens(g.prompt_tokens, prompt), _tokens(g.completion_tokens, g.text), wall)
            )
            if g.prompt_tokens > 0:
                chars, engine_tokens = chars + len(prompt), engine_tokens + g.prompt_tokens
            if stage != "prefill":
                completion.setdefault(stage, []).append(samples[-1][1])
    finally:
        backend.close()
    per_char = engine_tokens / chars if chars else 1 / CHARS_PER_TOKEN
    prompt_tok_s, gen_tok_s = fit_rates(samples)
    return ModelRates(
        model=spec.name,
        prompt_tok_s=prompt_tok_s,
        gen_tok_s=gen_tok_s,
        prompt_tokens={
            s.stage: per_char * sum(map(len, s.prompts)) / len(s.prompts) for s in model_shapes
        },
        completion_tokens={k: sum(v) / len(v) for k, v in completion.items()},
        token_count="engine" if chars else "chars/4",
        load_s=load,
        calibration_calls=len(plan),
        source="calibration",
    )


def ledger_rates(model: str, rows: Sequence[Mapping[str, Any]], source: str) -> ModelRates | None:
    """A model's rates from the timed new calls of a previous run's ledger (None: none timed)."""
    mine = [r for r in rows if r["event"] == "new" and r["model"] == model]
    timed = [r for r in mine if r.get("wall_s") is not None]
    if not timed:
        return None
    prompt_tok_s, gen_tok_s = fit_rates(
        [(r["prompt_tokens"], r["completion_tokens"], r["wall_s"]) for r in timed]
    )
    stages: dict[str, list[Mapping[str, Any]]] = {}
    for r in mine:
        stages.setdefault(r["stage"], []).append(r)
    return ModelRates(
        model=model,
        prompt_tok_s=prompt_tok_s,
        gen_tok_s=gen_tok_s,
        prompt_tokens={s: sum(r["prompt_tokens"] for r in v) / len(v) for s, v in stages.items()},
        completion_tokens={
            s: sum(r["completion_tokens"] for r in v) / len(v) for s, v in stages.items()
        },
        token_count="engine (ledger)",
        load_s=0.0,
        calibration_calls=0,
        source=f"ledger of {source}",
    )


# ------------------------------------------------------------------------------------------
# the estimate


def estimate(
    config: RunConfig,
    *,
    previous: str | Path | None = None,
    backends: Mapping[str, Backend] | None = None,
    calls_per_stage: int = 2,
    clock: Callable[[], float] = time.perf_counter,
    rates: Mapping[str, ModelRates] | None = None,
) -> Estimate:
    """The expected calls, tokens and time of `config`'s run, per stage and model.

    Args:
        previous: a run dir whose manifest gives the acceptance and valid rates and whose ledger
            gives measured speeds (its models are not calibrated).
        backends: ready backends by model name (tests), instead of building them.
        calls_per_stage: calibration calls per stage's prompt shape and model.
        clock: seconds (tests pass a fake one).
        rates: ready rates by model name (e.g. another estimate's): those models are not
            calibrated.
    """
    from ..engines.factory import make_backend
    from .pipeline import load_seeds

    _, seeds = load_seeds(config)
    a = measured_assumptions(config, previous)
    plan = shapes(config, seeds, a)
    rows = read_ledger(previous) if previous is not None else []

    def backend_for(spec: ModelSpec) -> Backend:
        given = (backends or {}).get(spec.name)
        return given if given is not None else make_backend(spec.backend_spec(), where=spec.where)

    given, rates = dict(rates or {}), {}
    for name in dict.fromkeys(s.model.name for s in plan):
        if name in given:
            rates[name] = dataclasses.replace(given[name], calibration_calls=0)
            continue
        mine = [s for s in plan if s.model.name == name]
        measured = ledger_rates(name, rows, str(previous)) if rows else None
        if measured is not None and all(s.stage in measured.prompt_tokens for s in mine):
            rates[name] = measured
        else:
            rates[name] = calibrate(mine[0].model, mine, backend_for, calls_per_stage, clock)
    out = []
    for s in plan:
        r = rates[s.model.name]
        pt = r.prompt_tokens[s.stage]
        ct = r.completion_tokens.get(s.stage, float(s.params.max_new_tokens))
        fresh = s.fresh if r.source == "calibration" else 1.0  # a ledger measured reuse already
        per_call = pt * fresh / r.prompt_tok_s + ct / r.gen_tok_s
        out.append(
            StageEstimate(
                stage=s.stage,
                model=s.model.name,
                calls=s.calls,
                prompt_tokens=round(s.calls * pt),
                completion_tokens=round(s.calls * ct),
                seconds=s.calls * per_call,
                token_count=r.token_count,
                fresh_prompt=round(fresh, 3),
            )
        )
    notes = []
    if config.consensus.selector not in ("sum", "best_pair"):
        notes.append(f"stage 4's selector {config.consensus.selector!r} makes calls not estimated")
    return Estimate(out, rates, a, sum(r.calibration_calls for r in rates.values()), notes)


def compare(
    est: Estimate, ledger: Mapping[str, Mapping[str, Mapping[str, Any]]]
) -> list[dict[str, Any]]:
    """Estimate vs a finished run's ledger summary, per stage and model (ratio = actual/estimate)."""
    out = []
    for r in est.rows:
        got = ledger.get(r.model, {}).get(r.stage, {})
        row: dict[str, Any] = {"stage": r.stage, "model": r.model}
        for k, actual in (
            ("calls", got.get("new", 0) + got.get("hits", 0)),
            ("prompt_tokens", got.get("prompt_tokens", 0)),
            ("completion_tokens", got.get("completion_tokens", 0)),
            ("seconds", got.get("wall_s", 0.0)),
        ):
            want = getattr(r, k)
            row[k] = {"estimate": round(want, 1), "actual": round(actual, 1)}
        out.append(row)
    return out


__all__ = [
    "CHARS_PER_TOKEN",
    "DEFAULT_ACCEPTED_PER_CALL",
    "DEFAULT_VALID_RATE",
    "Assumptions",
    "Estimate",
    "ModelRates",
    "StageEstimate",
    "compare",
    "estimate",
    "fit_rates",
    "measured_assumptions",
    "shapes",
]
