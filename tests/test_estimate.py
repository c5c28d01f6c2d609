"""The estimate before a run (`runs.estimate`, ``run --estimate``): expected calls, tokens and time
per stage and model from the method's numbers, built prompts and a timed calibration."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import yaml

from ensemble_instruct_lib import cli
from ensemble_instruct_lib.engines.ledger import read_ledger, summarize
from ensemble_instruct_lib.runs.config import load_config
from ensemble_instruct_lib.runs.estimate import estimate, fit_rates, shapes
from ensemble_instruct_lib.runs.pipeline import load_seeds, run
from ensemble_instruct_lib.testing.fake import fake_backends

BASE = {
    "name": "t",
    "generator": {"kind": "scripted", "model": "gen"},
    "extra_models": [
        {"kind": "scripted", "model": "x1"},
        {"kind": "scripted", "model": "x2", "prompt_style": "few_shot"},
    ],
    "num_instructions": 6,
}
PROMPT_TOK_S, GEN_TOK_S = 800.0, 40.0
COMPLETION = {"stage1": 20, "stage2": 50, "stage3": 10}  # tokens per answer


def stage_of(prompt, params):
    if not params.do_sample:
        return "stage3"
    return "stage1" if re.search(r"\n\d+\.$", prompt) else "stage2"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def timed(backends, clock):
    """Backends reporting one token per prompt character, a fixed completion length per stage,
    and advancing the fake clock by what that costs at PROMPT_TOK_S and GEN_TOK_S."""
    for b in backends.values():
        inner = b._generate

        def generate(prompts, params, idx, inner=inner):
            out = []
            for p, g in zip(prompts, inner(prompts, params, idx), strict=True):
                ct = min(COMPLETION[stage_of(p, params)], params.max_new_tokens)
                clock.now += len(p) / PROMPT_TOK_S + ct / GEN_TOK_S
                out.append(dataclasses.replace(g, prompt_tokens=len(p), completion_tokens=ct))
            return out

        b._generate = generate
    return backends


def test_fit_rates_recovers_known_speeds():
    samples = [(p, c, p / 500 + c / 25) for p, c in [(1000, 1), (800, 30), (200, 64), (1500, 120)]]
    p, g = fit_rates(samples)
    assert p == pytest.approx(500) and g == pytest.approx(25)


def test_estimate_on_scripted_backends_gives_the_expected_calls_tokens_and_time():
    cfg = load_config(BASE)
    clock = Clock()
    backends = timed(fake_backends(cfg), clock)
    est = estimate(cfg, backends=backends, clock=clock)
    rows = {(r.stage, r.model): r for r in est.rows}
    # the method's numbers with the defaults (0.9 accepted per call, 0.9 valid): 5 prompts a
    # round, ceil(6 / 4.5) = 2 rounds per type; 12 instances; round(12 * 0.9) = 11 answers each
    assert {k: r.calls for k, r in rows.items()} == {
        ("stage1", "gen"): 2 * 5 * 2,
        ("stage2", "gen"): 12,
        ("stage3", "x1"): 11,
        ("stage3", "x2"): 11,
    }
    # calibration: one prefill call per model, then 2 calls per stage shape; nothing else
    assert est.calibration_calls == (1 + 2 + 2) + (1 + 2) + (1 + 2)
    assert sum(len(b.calls) for b in backends.values()) == est.calibration_calls
    # completion tokens: what the engine reported in calibration, per call
    assert rows["stage1", "gen"].completion_tokens == 20 * 20
    assert rows["stage2", "gen"].completion_tokens == 12 * 50
    assert rows["stage3", "x1"].completion_tokens == 11 * 10
    # prompt tokens: the built prompts, counted with the engine's tokens per character (1 here)
    _, seeds = load_seeds(cfg)
    for s in shapes(cfg, seeds, est.assumptions):
        mean = sum(map(len, s.prompts)) / len(s.prompts)
        assert rows[s.stage, s.model.name].prompt_tokens == round(s.calls * mean)
        assert rows[s.stage, s.model.name].token_count == "engine"
    assert any(len(s.prompts[0]) > 2000 for s in shapes(cfg, seeds, est.assumptions))
    # speeds and time, from the fake clock
    for r in est.rates.values():
        assert r.prompt_tok_s == pytest.approx(PROMPT_TOK_S)
        assert r.gen_tok_s == pytest.approx(GEN_TOK_S)
    for r in est.rows:
        assert r.seconds == pytest.approx(
            r.prompt_tokens / PROMPT_TOK_S + r.completion_tokens / GEN_TOK_S, rel=1e-3
        )
    assert "stage3" in est.to_text() and "chars/4" not in est.to_text()


def test_estimate_from_a_previous_run_predicts_its_calls_exactly(tmp_path):
    """With the rates measured in a run dir (acceptance, valid rate, ledger speeds), the expected
    calls per stage are that run's calls, and no calibration call is made."""
    cfg = load_config(BASE)
    res = run(cfg, tmp_path, backends=timed(fake_backends(cfg), Clock()), progress=False)
    actual = res.manifest["ledger"]
    again = fake_backends(cfg)
    est = estimate(cfg, previous=tmp_path, backends=again)
    assert est.calibration_calls == 0 and sum(len(b.calls) for b in again.values()) == 0
    for r in est.rows:
        got = actual[r.model][r.stage]
        assert r.calls == got["calls"], r
        assert r.completion_tokens == got["completion_tokens"], r
        assert r.prompt_tokens == got["prompt_tokens"], r
    assert est.assumptions.source.startswith("measured")


def test_chars_per_4_rule_when_the_engine_counts_nothing():
    cfg = load_config(BASE)
    est = estimate(cfg, backends=fake_backends(cfg))  # scripted text, no token counts
    _, seeds = load_seeds(cfg)
    s1 = shapes(cfg, seeds, est.assumptions)[0]
    row = est.rows[0]
    assert row.token_count == "chars/4"
    assert row.prompt_tokens == round(s1.calls * sum(map(len, s1.prompts)) / len(s1.prompts) / 4)


def test_cli_estimate_makes_only_calibration_calls_and_writes_no_stage_file(
    tmp_path, monkeypatch, capsys
):
    from ensemble_instruct_lib.engines import factory

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(BASE))
    cfg = load_config(BASE)
    made = []

    def fake_make_backend(spec, where=""):
        b = timed(fake_backends(cfg), Clock())[spec["model"]]
        made.append(b)
        return b

    monkeypatch.setattr(factory, "make_backend", fake_make_backend)
    out = tmp_path / "run"
    assert cli.main(["run", "--config", str(config), "--out", str(out), "--estimate"]) == 0
    text = capsys.readouterr().out
    calls = sum(len(b.calls) for b in made)
    assert calls == 11 and "(nothing was run; 11 calibration calls made)" in text
    assert not out.exists()  # no run dir, no stage file, no ledger, no cache
    # a run dir that holds a run: its rates and ledger are used, nothing in it changes
    run(cfg, out, backends=timed(fake_backends(cfg), Clock()), progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    made.clear()
    assert cli.main(["run", "--config", str(config), "--out", str(out), "--estimate"]) == 0
    assert "0 calibration calls" in capsys.readouterr().out
    assert sum(len(b.calls) for b in made) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert summarize(read_ledger(out)) == json.loads((out / "manifest.json").read_text())["ledger"]


def test_llama_cpp_prompt_share_counts_first_prompts_in_full_and_later_ones_by_what_is_new():
    from ensemble_instruct_lib.runs.config import ModelSpec
    from ensemble_instruct_lib.runs.estimate import _fresh

    llama = ModelSpec(kind="llama_cpp", model="m.gguf", name="m")
    # type A: "abcd" in full (4), then "abce" shares "abc" (1 new); type B: "xy" in full (2)
    assert _fresh(llama, [["abcd", "abce"], ["xy"]]) == pytest.approx(7 / 10)
    assert _fresh(llama, [["same", "same", "same"]]) == pytest.approx(4 / 12)
    assert _fresh(ModelSpec(kind="hf", model="m", name="h"), [["abcd", "abce"]]) == 1.0
    assert _fresh(llama, [[], []]) == 1.0
