"""No single bad request or example stops a run (issue 13), against the local fault server.

Every faulty run is compared with a clean run of the same config: the same records for every
example that did not fail for good, the failures counted per stage and model, no id written
twice, and a re-run with the fault gone fills the failed ones in without asking anything else.
Resuming after kill -9 in the middle of a faulty run gives the same files. Also: resuming
compares resolved model identities, not the strings written in the config.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from fault_server import FaultServer

from ensemble_instruct_lib.data.jsonl import read_jsonl
from ensemble_instruct_lib.engines.base import Backend
from ensemble_instruct_lib.engines.isolation import PromptTooLong
from ensemble_instruct_lib.errors import ConfigError, TooManyFailures
from ensemble_instruct_lib.runs.config import load_config
from ensemble_instruct_lib.runs.pipeline import run
from ensemble_instruct_lib.testing.fake import fake_backends

TESTS = Path(__file__).resolve().parent
S3 = "stage3_outputs_srv.jsonl"
TOO_LONG = "This model's maximum context length is 2048 tokens; the prompt is too long"


def conf(url: str, **over) -> dict:
    """Generator and x1 are fake in-process LMs; `srv` is an OpenAI-compatible extra model."""
    options = {
        "base_urls": url,
        "api_key_env": "EI_TEST_NO_KEY",
        "max_retries": over.pop("max_retries", 3),
        "timeout": over.pop("timeout", 5.0),
        "backoff_base": 0.01,
        "backoff_max": over.pop("backoff_max", 0.05),
        "max_concurrency": 4,
    }
    return {
        "name": "f",
        "num_instructions": 6,
        "generator": {"kind": "scripted", "model": "gen"},
        "extra_models": [
            {"kind": "scripted", "model": "x1"},
            {"kind": "openai", "model": "served", "name": "srv", "options": options},
        ],
        "output": {"batch_size": 4},
        **over,
    }


def go(d: dict, out: Path, **kw):
    cfg = load_config(d)
    fakes = fake_backends(cfg)
    return run(cfg, out, backends={"gen": fakes["gen"], "x1": fakes["x1"]}, progress=False, **kw)


def by_id(path: Path) -> dict[str, dict]:
    recs = read_jsonl(path)
    ids = [r["id"] for r in recs]
    assert len(ids) == len(set(ids)), f"an id written twice in {path.name}"
    return {r["id"]: r for r in recs}


def asked(srv: FaultServer) -> list[str]:
    return [r.body["prompt"] for r in srv.requests if r.body]


@pytest.fixture
def server():
    with FaultServer() as srv:
        yield srv


@pytest.fixture
def clean(server, tmp_path):
    """A clean run's dir, and the server's requests cleared."""
    out = tmp_path / "clean"
    go(conf(server.url), out)
    server.requests.clear()
    return out


def same_as_clean(clean: Path, out: Path, failed: set[str] = frozenset()) -> None:
    """Every file of `out` equals the clean run's, except the records of `failed` ids."""
    for name in ("stage2_instances.jsonl", "stage3_outputs_x1.jsonl", S3):
        ref, got = by_id(clean / name), by_id(out / name)
        assert set(got) == set(ref), name
        for i in ref:
            if i in failed and name == S3:
                assert got[i]["status"] == "failed"
            else:
                assert got[i] == ref[i], (name, i)
    if not failed:
        for name in ("ensembled.jsonl", "dropped.jsonl", "alpaca.jsonl"):
            assert (out / name).read_bytes() == (clean / name).read_bytes(), name


# -- the done-when of issue 13 ---------------------------------------------------------------


def test_poison_prompt_fails_alone_and_a_rerun_fills_it_in(server, clean, tmp_path):
    valid = [r for r in read_jsonl(clean / "stage2_instances.jsonl") if r["valid"]]
    victim = valid[3]
    server.poison(victim["instruction"])
    out = tmp_path / "run"
    res = go(conf(server.url), out)
    assert res.manifest["status"] == "done"
    recs = by_id(out / S3)
    bad = recs[victim["id"]]
    assert bad["status"] == "failed" and bad["output"] is None
    assert bad["reason"] == "prompt_too_long" and TOO_LONG in bad["error"]
    assert "Traceback" not in bad["error"] and "\n" not in bad["error"]
    assert [i for i, r in recs.items() if r["status"] == "failed"] == [victim["id"]]
    same_as_clean(clean, out, failed={victim["id"]})
    assert res.manifest["failures"]["stage3"] == {
        "srv": {"failed": 1, "reasons": {"prompt_too_long": 1}},
        "x1": {"failed": 0, "reasons": {}},
    }
    assert res.manifest["failures"]["stage2"] == {"gen": {"failed": 0, "reasons": {}}}
    # stage 4 ensembles the victim over the members that answered
    decided = {
        r["id"]: r for r in read_jsonl(out / "ensembled.jsonl") + read_jsonl(out / "dropped.jsonl")
    }
    assert decided[victim["id"]]["missing_models"] == ["srv"]
    assert decided[victim["id"]]["models"] == ["gen", "x1"]
    assert all(r["missing_models"] == [] for i, r in decided.items() if i != victim["id"])
    assert res.counts["stage4"]["with_missing"] == 1
    # still poisoned: a re-run asks the victim only, fails it again and finishes
    server.requests.clear()
    res = go(conf(server.url), out)
    assert len(server.requests) == 1 and res.manifest["status"] == "done"
    same_as_clean(clean, out, failed={victim["id"]})
    # the server is fixed: a re-run asks the victim only, and the run equals the clean one
    server.cure()
    server.requests.clear()
    again = go(conf(server.url), out)
    assert len(server.requests) == 1 and victim["instruction"] in asked(server)[0]
    same_as_clean(clean, out)
    assert again.manifest["failures"]["stage3"]["srv"]["failed"] == 0


def test_retry_failed_false_keeps_the_failure(server, clean, tmp_path):
    victim = [r for r in read_jsonl(clean / "stage2_instances.jsonl") if r["valid"]][0]
    server.poison(victim["instruction"])
    out = tmp_path / "run"
    go(conf(server.url), out)
    server.cure()
    server.requests.clear()
    res = go(conf(server.url, retry_failed=False), out)
    assert server.requests == []
    assert by_id(out / S3)[victim["id"]]["status"] == "failed"
    assert res.manifest["failures"]["stage3"]["srv"]["failed"] == 1


def test_summary_names_the_failures(server, clean, tmp_path, capsys):
    victim = [r for r in read_jsonl(clean / "stage2_instances.jsonl") if r["valid"]][0]
    server.poison(victim["instruction"])
    capsys.readouterr()
    go(conf(server.url), tmp_path / "run")
    text = capsys.readouterr().out
    assert "failed for good: stage 3 srv: 1" in text and "prompt_too_long" in text


# -- transient faults: nothing fails, the files equal the clean run --------------------------


def test_429_storm_with_retry_after(server, clean, tmp_path):
    server.inject("429", 30, retry_after="0.01")
    res = go(conf(server.url, max_retries=40), tmp_path / "run")
    assert server.pending_faults() == 0
    assert res.manifest["failures"]["stage3"]["srv"]["failed"] == 0
    same_as_clean(clean, tmp_path / "run")


def test_timeouts_are_retried(server, clean, tmp_path):
    server.inject("slow", 3, seconds=1.0)
    res = go(conf(server.url, timeout=0.3, max_retries=5), tmp_path / "run")
    assert res.manifest["failures"]["stage3"]["srv"]["failed"] == 0
    same_as_clean(clean, tmp_path / "run")


def test_server_dies_mid_run_and_comes_back(server, clean, tmp_path):
    server.delay = 0.02

    def bounce() -> None:
        while len(server.requests) < 4:
            time.sleep(0.005)
        server.stop()
        time.sleep(0.6)
        server.start()

    t = threading.Thread(target=bounce)
    t.start()
    res = go(conf(server.url, max_retries=8, backoff_max=0.3), tmp_path / "run")
    t.join()
    assert res.manifest["failures"]["stage3"]["srv"]["failed"] == 0
    same_as_clean(clean, tmp_path / "run")


def test_dead_server_stops_the_run_and_a_rerun_finishes(server, clean, tmp_path):
    url = server.url
    server.stop()
    out = tmp_path / "run"
    with pytest.raises(TooManyFailures, match="stage 3 \\(srv\\): .* calls failed for good"):
        go(conf(url, max_retries=1), out)
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "stopped" and "max_failed_fraction" in m["stopped_because"]
    assert m["failures"]["stage3"]["srv"]["failed"] >= 10
    assert not (out / "ensembled.jsonl").exists()
    server.start()  # back on the same port
    res = go(conf(url), out)
    assert res.manifest["status"] == "done"
    same_as_clean(clean, out)


def test_dead_server_is_one_message_through_the_cli(server, clean, tmp_path, capsys):
    import yaml

    from ensemble_instruct_lib.cli import main

    url = server.url
    server.stop()
    d = conf(url, max_retries=0)
    d["extra_models"] = d["extra_models"][1:]  # srv only
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(d))
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(clean / "stage2_instances.jsonl", out)
    rc = main(["run", "--config", str(cfg), "--out", str(out), "--stages", "3", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("error: stage 3 (srv):") and "run the same command again" in err[0]


# -- stage 2: an in-process engine that rejects one prompt ------------------------------------


class _Picky(Backend):
    """Wraps a backend; any batch holding `poison` raises, like an engine over its context."""

    def __init__(self, inner: Backend, poison: str | None) -> None:
        self.inner, self.poison = inner, poison
        self.name, self.model_id, self.revision = inner.name, inner.model_id, inner.revision
        self.calls: list[str] = []

    def _generate(self, prompts, params, sample_indices):
        if self.poison and any(self.poison in p for p in prompts):
            raise PromptTooLong("a prompt of 5000 tokens does not fit the context of 2048")
        self.calls += prompts
        return self.inner.generate(prompts, params, sample_indices)


def test_stage2_call_failing_in_process_is_isolated(tmp_path):
    d = {
        "name": "s2",
        "num_instructions": 6,
        "generator": {"kind": "scripted", "model": "gen"},
        "extra_models": [{"kind": "scripted", "model": "x1"}],
        "instance": {"batch_size": 4},
    }
    cfg = load_config(d)
    ref = tmp_path / "ref"
    run(cfg, ref, backends=fake_backends(cfg), progress=False)
    victim = read_jsonl(ref / "stage2_instances.jsonl")[2]
    out = tmp_path / "run"
    run(cfg, out, backends=fake_backends(cfg), progress=False, stages=[1])
    fakes = fake_backends(cfg)
    res = run(
        cfg,
        out,
        backends={**fakes, "gen": _Picky(fakes["gen"], victim["instruction"])},
        progress=False,
        stages=[2, 3, 4],
    )
    recs = by_id(out / "stage2_instances.jsonl")
    bad = recs[victim["id"]]
    assert bad["status"] == "failed" and not bad["valid"] and bad["reason"] == "prompt_too_long"
    assert "5000 tokens" in bad["error"]
    ref_recs = by_id(ref / "stage2_instances.jsonl")
    assert all(recs[i] == ref_recs[i] for i in ref_recs if i != victim["id"])
    assert res.manifest["failures"]["stage2"]["gen"] == {
        "failed": 1,
        "reasons": {"prompt_too_long": 1},
    }
    fakes = fake_backends(cfg)
    fixed = _Picky(fakes["gen"], None)
    run(cfg, out, backends={**fakes, "gen": fixed}, progress=False)
    assert len(fixed.calls) == 1 and victim["instruction"] in fixed.calls[0]
    assert by_id(out / "stage2_instances.jsonl") == ref_recs
    for name in ("ensembled.jsonl", "dropped.jsonl"):
        assert (out / name).read_bytes() == (ref / name).read_bytes()


# -- kill -9 in the middle of a faulty run ----------------------------------------------------

KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_failures_pipeline import conf, go
    from ensemble_instruct_lib.engines import openai_compat
    inner = openai_compat.OpenAICompatBackend._one
    log = open(sys.argv[3], "a")
    def logged(self, prompt, params, index):
        g = inner(self, prompt, params, index)
        log.write(repr(prompt)[:80] + "\\n"); log.flush()
        time.sleep(0.02)
        return g
    openai_compat.OpenAICompatBackend._one = logged
    go(conf(sys.argv[1]), __import__("pathlib").Path(sys.argv[2]))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["poison", "429", "slow"])
def test_kill_9_in_a_faulty_run_then_resume(fault, server, clean, tmp_path):
    victim = [r for r in read_jsonl(clean / "stage2_instances.jsonl") if r["valid"]][5]
    if fault == "poison":
        server.poison(victim["instruction"])
    elif fault == "429":
        server.inject("429", 20, retry_after="0.01")
    else:
        server.inject("slow", 2, seconds=1.0)
    script = tmp_path / "job.py"
    script.write_text(KILL_SCRIPT.format(tests=str(TESTS)))
    out, log = tmp_path / "run", tmp_path / "calls.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    kills = 0
    for _ in range(2):
        proc = subprocess.Popen(
            [sys.executable, str(script), server.url, str(out), str(log)], env=env
        )
        n0 = len(server.requests)
        deadline = time.monotonic() + 60
        while len(server.requests) < n0 + 6 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
    assert kills >= 1
    with server._lock:
        server._faults.clear()
    r = subprocess.run(
        [sys.executable, str(script), server.url, str(out), str(log)], env=env, timeout=300
    )
    assert r.returncode == 0
    failed = {victim["id"]} if fault == "poison" else set()
    same_as_clean(clean, out, failed=failed)
    m = json.loads((out / "manifest.json").read_text())
    assert m["failures"]["stage3"]["srv"]["failed"] == len(failed)
    answered = [line for line in log.read_text().splitlines()]
    n_valid = len(by_id(clean / S3))
    # every answered call is cached as it arrives: at most the calls in flight at a kill repeat
    assert n_valid - len(failed) <= len(answered) <= n_valid - len(failed) + kills * 4


# -- resume identity ---------------------------------------------------------------------------


def _model_dir(path: Path, content: str) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"content": content}))
    return path


def _ident_conf(model: str) -> dict:
    return {
        "name": "ident",
        "num_instructions": 2,
        "generator": {"kind": "hf", "model": model, "name": "gen"},
        "extra_models": [{"kind": "scripted", "model": "x1"}],
    }


def _ident_run(d: dict, out: Path):
    cfg = load_config(d)
    fakes = fake_backends(load_config({**d, "generator": {"kind": "scripted", "model": "gen"}}))
    return run(cfg, out, backends=fakes, progress=False)


def test_resume_with_the_same_model_written_another_way(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = _model_dir(tmp_path / "models" / "gen", "weights A")
    out = tmp_path / "out"
    _ident_run(_ident_conf("models/gen"), out)  # relative, as the CLI would run it
    res = _ident_run(_ident_conf(str(model)), out)  # absolute, as a notebook would
    assert res.manifest["invocations"] == 2 and res.manifest["cache"]["misses"] == 0
    res = _ident_run(_ident_conf("./models/../models/gen/"), out)
    assert res.manifest["invocations"] == 3
    other = _model_dir(tmp_path / "models" / "other", "weights B")
    with pytest.raises(ConfigError, match="different generator"):
        _ident_run(_ident_conf(str(other)), out)
    with pytest.raises(ConfigError, match="different generator"):
        _ident_run(_ident_conf("org/some-hub-model"), out)


def test_resume_of_an_older_run_by_its_weights_digest(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from ensemble_instruct_lib.engines.hf import local_digest

    monkeypatch.chdir(tmp_path)
    model = _model_dir(tmp_path / "models" / "gen", "weights A")
    out = tmp_path / "out"
    _ident_run(_ident_conf("models/gen"), out)
    # an older run: no resolved identity in its manifest, only the digest the backend reported
    m = json.loads((out / "manifest.json").read_text())
    del m["identities"]
    m["models"]["gen"]["revision"] = local_digest(model)
    (out / "manifest.json").write_text(json.dumps(m))
    moved = tmp_path / "elsewhere" / "gen"
    shutil.copytree(model, moved)
    res = _ident_run(_ident_conf(str(moved)), out)
    assert res.manifest["invocations"] == 2
    changed = tmp_path / "changed" / "gen"
    shutil.copytree(model, changed)
    (changed / "config.json").write_text("{}")  # other weights
    m = json.loads((out / "manifest.json").read_text())
    del m["identities"]
    m["models"]["gen"]["revision"] = local_digest(model)
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ConfigError, match="different generator"):
        _ident_run(_ident_conf(str(changed)), out)
