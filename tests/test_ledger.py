"""The token ledger (`engines.ledger`): per model and stage, calls, tokens, hits, failures and wall
time, each call counted once across kills and resumes; shown in the manifest, `show`, the card."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from ensemble_instruct_lib.engines.base import DecodingParams, Generation
from ensemble_instruct_lib.engines.cache import CachedBackend, CallCache
from ensemble_instruct_lib.engines.isolation import PartialFailure, generate_isolated
from ensemble_instruct_lib.engines.ledger import CallLedger, read_ledger, summarize
from ensemble_instruct_lib.engines.scripted import ScriptedBackend
from ensemble_instruct_lib.runs.config import load_config
from ensemble_instruct_lib.runs.pipeline import run
from ensemble_instruct_lib.testing.fake import fake_backends

BASE = {
    "name": "t",
    "generator": {"kind": "scripted", "model": "gen"},
    "extra_models": [{"kind": "scripted", "model": "x1"}, {"kind": "scripted", "model": "x2"}],
    "num_instructions": 6,
    "instance": {"batch_size": 2},
    "output": {"batch_size": 2},
}


def counting(backend: ScriptedBackend) -> ScriptedBackend:
    """The backend, reporting token counts (words of the prompt and of the answer)."""
    inner = backend._generate

    def generate(prompts, params, indices):
        return [
            dataclasses.replace(
                g, prompt_tokens=len(p.split()), completion_tokens=len(g.text.split())
            )
            for p, g in zip(prompts, inner(prompts, params, indices), strict=True)
        ]

    backend._generate = generate
    return backend


def backends_for(cfg):
    return {k: counting(b) for k, b in fake_backends(cfg).items()}


def tokens_only(summary):
    """The ledger without wall times (which differ between runs)."""
    return {
        m: {s: {k: v for k, v in c.items() if k not in ("wall_s", "timed")} for s, c in st.items()}
        for m, st in summary.items()
    }


def test_ledger_counts_every_call_once_per_stage_and_model(tmp_path):
    cfg = load_config(BASE)
    backends = backends_for(cfg)
    res = run(cfg, tmp_path, backends=backends, progress=False)
    led = res.manifest["ledger"]
    assert set(led) == {"gen", "x1", "x2"}
    assert set(led["gen"]) == {"stage1", "stage2"} and set(led["x1"]) == {"stage3"}
    # every model call is one new call with the tokens the engine reported
    prompts = backends["gen"].calls
    gen_new = led["gen"]["stage1"]["new"] + led["gen"]["stage2"]["new"]
    assert gen_new == len(set(prompts))
    assert led["gen"]["stage1"]["prompt_tokens"] + led["gen"]["stage2"]["prompt_tokens"] == sum(
        len(p.split()) for p in dict.fromkeys(prompts)
    )
    assert led["x1"]["stage3"]["new"] == len(backends["x1"].calls) > 0
    assert all(c["hits"] == 0 and c["failures"] == 0 for st in led.values() for c in st.values())
    assert all(c["completion_tokens"] > 0 for st in led.values() for c in st.values())
    # stored in the run dir, the manifest is its summary
    assert summarize(read_ledger(tmp_path)) == led
    from ensemble_instruct_lib.runs.show import describe_run

    shown = describe_run(tmp_path)
    assert "stage3" in shown and str(led["x1"]["stage3"]["completion_tokens"]) in shown
    card = (tmp_path / "README.md").read_text()
    assert "## Tokens" in card and f"| stage2 | gen | {led['gen']['stage2']['calls']} |" in card


def test_second_run_over_a_full_cache_counts_hits_and_no_new_tokens(tmp_path):
    cfg = load_config(BASE)
    first = run(cfg, tmp_path / "a", backends=backends_for(cfg), progress=False)
    # a new run dir over the same cache: every call is a hit, no new token
    cfg2 = load_config({**BASE, "cache": str(tmp_path / "a" / "cache.sqlite")})
    again = backends_for(cfg2)
    res = run(cfg2, tmp_path / "b", backends=again, progress=False)
    assert sum(len(b.calls) for b in again.values()) == 0
    led, ref = res.manifest["ledger"], first.manifest["ledger"]
    for model, stages in led.items():
        for stage, c in stages.items():
            assert c["new"] == c["prompt_tokens"] == c["completion_tokens"] == 0
            assert c["hits"] == c["calls"] == ref[model][stage]["calls"] > 0
    # resuming the finished run dir adds nothing
    res = run(cfg, tmp_path / "a", backends=backends_for(cfg), progress=False)
    assert res.manifest["ledger"] == ref


def test_failures_are_counted(tmp_path):
    def flaky(prompt, params, index):
        if "fail" in prompt:
            raise RuntimeError("boom")
        return Generation("ok", prompt_tokens=3, completion_tokens=1)

    ledger = CallLedger(tmp_path / "ledger.jsonl")
    ledger.stage = "stage3"
    cb = CachedBackend(
        ScriptedBackend(flaky), CallCache(tmp_path / "c.sqlite"), ledger=ledger, ledger_name="m"
    )
    gens = generate_isolated(cb, ["a", "fail 1", "b", "fail 2"], DecodingParams())
    assert [g.finish_reason for g in gens] == ["stop", "failed", "stop", "failed"]

    class Partial(ScriptedBackend):
        def _generate(self, prompts, params, indices):
            results = [None if "fail" in p else Generation("ok", "stop", 2, 1) for p in prompts]
            raise PartialFailure(
                results, [RuntimeError("x") if g is None else None for g in results]
            )

    cb2 = CachedBackend(Partial(flaky, model_id="p"), cb.cache, ledger=ledger, ledger_name="p")
    with pytest.raises(PartialFailure):
        cb2.generate(["c", "fail 3"], DecodingParams())
    ledger.close()
    s = summarize(read_ledger(tmp_path))
    assert s["m"]["stage3"] == {
        "calls": 2,
        "new": 2,
        "hits": 0,
        "failures": 2,  # the two prompts that failed alone (the batch that raised is not one)
        "prompt_tokens": 6,
        "completion_tokens": 2,
        "wall_s": s["m"]["stage3"]["wall_s"],
        "timed": 2,
    }
    assert s["p"]["stage3"]["failures"] == 1 and s["p"]["stage3"]["new"] == 1


def test_kill_after_cache_before_ledger_is_counted_as_new_once(tmp_path, monkeypatch):
    """The window the ledger must survive: a call cached, the process killed before its ledger
    row; the next run sees a hit for it and must count it as the new call it was."""
    cfg = load_config(BASE)
    ref = run(cfg, tmp_path / "ref", backends=backends_for(cfg), progress=False)
    seen = {"n": 0}
    original = CallLedger.answered

    def dying(self, model, calls, wall_s):
        seen["n"] += 1
        if seen["n"] in (3, 9):  # two kills: in stage 1, then in stage 2/3
            raise KeyboardInterrupt("killed between the cache commit and the ledger")
        return original(self, model, calls, wall_s)

    monkeypatch.setattr(CallLedger, "answered", dying)
    out = tmp_path / "run"
    kills = 0
    for _ in range(3):
        try:
            run(cfg, out, backends=backends_for(cfg), progress=False)
            break
        except KeyboardInterrupt:
            kills += 1
    assert kills == 2
    got = json.loads((out / "manifest.json").read_text())["ledger"]
    assert tokens_only(got) == tokens_only(ref.manifest["ledger"])
    recovered = [r for r in read_ledger(out) if r.get("recovered")]
    assert recovered and all(r["prompt_tokens"] > 0 for r in recovered)


KILL_SCRIPT = textwrap.dedent(
    """
    import dataclasses, sys, time
    from ensemble_instruct_lib.runs.config import load_config
    from ensemble_instruct_lib.testing.fake import fake_backends
    from ensemble_instruct_lib.runs.pipeline import run

    cfg = load_config({cfg!r})
    backends = fake_backends(cfg)
    for b in backends.values():
        inner = b._generate
        def slow(prompts, params, idx, inner=inner):
            time.sleep(0.03)
            return [
                dataclasses.replace(
                    g, prompt_tokens=len(p.split()), completion_tokens=len(g.text.split())
                )
                for p, g in zip(prompts, inner(prompts, params, idx))
            ]
        b._generate = slow
    run(cfg, sys.argv[1], backends=backends, progress=False)
    """
)


def _rows_in(stage, n):
    """Whether a run dir's ledger has at least `n` new calls of `stage` (when to kill it)."""

    def ready(run_dir):
        path = run_dir / "ledger.jsonl"
        text = path.read_text() if path.exists() else ""
        new = [line for line in text.splitlines() if line.startswith('{"event":"new"')]
        return sum(f'"stage":"{stage}"' in line for line in new) >= n

    return ready


@pytest.mark.slow
def test_ledger_of_a_run_killed_twice_equals_the_uninterrupted_one(tmp_path):
    """kill -9 twice (a real subprocess), resume: same calls and tokens per model and stage."""
    conf = {**BASE, "num_instructions": 10}
    script = tmp_path / "job.py"
    script.write_text(KILL_SCRIPT.format(cfg=conf))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    subprocess.run([sys.executable, str(script), str(ref_dir)], check=True, env=env, timeout=300)
    kills = 0
    for ready in (_rows_in("stage1", 3), _rows_in("stage2", 1)):  # mid stage 1, then stage 2
        proc = subprocess.Popen([sys.executable, str(script), str(run_dir)], env=env)
        deadline = time.monotonic() + 120
        while proc.poll() is None and not ready(run_dir) and time.monotonic() < deadline:
            time.sleep(0.02)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
    assert kills == 2
    subprocess.run([sys.executable, str(script), str(run_dir)], check=True, env=env, timeout=300)
    ref = json.loads((ref_dir / "manifest.json").read_text())
    got = json.loads((run_dir / "manifest.json").read_text())
    assert got["invocations"] == 1 + kills
    assert tokens_only(got["ledger"]) == tokens_only(ref["ledger"])
    assert summarize(read_ledger(run_dir)) == got["ledger"]


def test_progress_bar_shows_generated_tokens_per_second():
    from ensemble_instruct_lib.engines.resumable import progress_bar

    made = [0]
    bar = progress_bar(4, "stage 2", True, lambda: made[0])
    time.sleep(0.05)
    made[0] = 100
    bar.set_postfix({"valid": 1}, refresh=False)
    post = bar.postfix
    bar.update(1)
    bar.close()
    assert "valid=1" in post and "tok/s=" in post
    assert 0 < float(post.split("tok/s=")[1]) <= 100 / 0.05
