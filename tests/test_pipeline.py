"""The pipeline end to end on a fake LM: files, counts, resuming, determinism, the rounds budget."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from ensemble_instruct_lib.data.jsonl import read_jsonl
from ensemble_instruct_lib.engines.ledger import LEDGER, read_ledger, summarize
from ensemble_instruct_lib.engines.scripted import ScriptedBackend
from ensemble_instruct_lib.method.consensus import select_consensus
from ensemble_instruct_lib.method.run_files import stage1_path
from ensemble_instruct_lib.runs.config import load_config
from ensemble_instruct_lib.runs.pipeline import run
from ensemble_instruct_lib.runs.run_folder import load_run
from ensemble_instruct_lib.runs.stage4 import run_stage4
from ensemble_instruct_lib.testing.fake import fake_backends

BASE = {
    "name": "t",
    "generator": {"kind": "scripted", "model": "gen"},
    "extra_models": [{"kind": "scripted", "model": "x1"}, {"kind": "scripted", "model": "x2"}],
    "num_instructions": 6,
}


def _cfg(**over):
    return load_config({**BASE, **over})


def _calls(backends):
    return sum(len(b.calls) for b in backends.values())


def test_full_run_files_and_counts(tmp_path):
    cfg = _cfg(instance={"harvest_extra_blocks": True})
    backends = fake_backends(cfg)
    res = run(cfg, tmp_path, backends=backends, progress=False)
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["status"] == "done" and m["config"]["num_instructions"] == 6
    assert m["cache"]["misses"] == _calls(backends) > 0
    assert set(m["prompt_versions"]) == {
        "instruction",
        "instance",
        "output_zero_shot",
        "output_few_shot",
    }
    assert "transformers" in m["versions"] and "stage1" in m["timings_s"]
    for t in ("A", "B"):
        recs = read_jsonl(stage1_path(tmp_path, t))
        acc = [r for r in recs if r["accepted"]]
        assert len(acc) == 6 and [r["id"] for r in acc] == [f"{t}-{i:05d}" for i in range(6)]
        assert all(r["max_score"] <= 0.7 and len(r["most_similar"]) == 10 for r in acc)
        rej = [r for r in recs if not r["accepted"]]
        assert {r["reason"] for r in rej} <= {
            "keyword:draw",
            "too_short",
            "not_novel",
            "target_reached",
        }
        assert m["counts"]["stage1"][t]["accepted"] == 6
    inst = read_jsonl(tmp_path / "stage2_instances.jsonl")
    assert {r["reason"] for r in inst if not r["valid"]} <= {"no_output", "no_input"}
    harvested = [r for r in inst if r["harvested_from"]]
    assert harvested and all(r["valid"] for r in harvested)
    valid_ids = [r["id"] for r in inst if r["valid"]]
    for name in ("x1", "x2"):
        outs = read_jsonl(tmp_path / f"stage3_outputs_{name}.jsonl")
        assert [r["id"] for r in outs] == valid_ids
    kept = read_jsonl(tmp_path / "ensembled.jsonl")
    dropped = read_jsonl(tmp_path / "dropped.jsonl")
    assert len(kept) + len(dropped) == len(valid_ids) and kept and dropped
    for r in kept + dropped:  # each decision is select_consensus on the stored candidates
        again = select_consensus(r["candidates"])
        assert (again.index, again.reason) == (r["chosen_index"], r["reason"])
    assert all(r["reason"] == "below_threshold" for r in dropped)
    alpaca = read_jsonl(tmp_path / "alpaca.jsonl")
    assert len(alpaca) == len(kept) and set(alpaca[0]) == {"instruction", "input", "output"}
    assert len(read_jsonl(tmp_path / "alpaca_single_output.jsonl")) == len(valid_ids)
    card = (tmp_path / "README.md").read_text()
    assert f"**{len(kept)}** ensembled" in card and "| generator (stages 1-2) | gen |" in card
    import datasets

    assert len(datasets.load_from_disk(str(tmp_path / "hf_dataset"))) == len(kept)
    tables = load_run(tmp_path)
    assert len(tables.ensembled) == len(kept) and len(tables.outputs) == 2 * len(valid_ids)
    assert res.counts["stage4"]["kept"] == len(kept)


def test_rerun_makes_zero_model_calls_and_changes_nothing(tmp_path):
    cfg = _cfg()
    run(cfg, tmp_path, backends=fake_backends(cfg), progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.jsonl")}
    again = fake_backends(cfg)
    res = run(cfg, tmp_path, backends=again, progress=False)
    assert _calls(again) == 0 and res.manifest["cache"] == {"hits": 0, "misses": 0}
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.jsonl")} == before
    # a fresh run dir sharing the cache file: every call is a hit
    cfg2 = _cfg(cache=str(tmp_path / "cache.sqlite"))
    third = fake_backends(cfg2)
    res = run(cfg2, tmp_path / "copy", backends=third, progress=False)
    assert _calls(third) == 0 and res.manifest["cache"]["hits"] > 0
    assert res.manifest["cache"]["misses"] == 0
    assert (tmp_path / "copy" / "ensembled.jsonl").read_bytes() == before["ensembled.jsonl"]


def test_same_config_and_seed_give_same_prompts(tmp_path):
    cfg = _cfg()
    a, b = fake_backends(cfg), fake_backends(cfg)
    run(cfg, tmp_path / "a", backends=a, progress=False)
    run(cfg, tmp_path / "b", backends=b, progress=False)
    assert a["gen"].calls == b["gen"].calls
    c = fake_backends(cfg)
    run(_cfg(seed=1), tmp_path / "c", backends=c, progress=False)
    assert c["gen"].calls[:5] != a["gen"].calls[:5]


def test_partly_written_round_is_redone_from_cache(tmp_path):
    cfg = _cfg()
    run(cfg, tmp_path / "full", backends=fake_backends(cfg), progress=False, stages=(1,))
    full = stage1_path(tmp_path / "full", "A").read_text().splitlines(keepends=True)
    # simulate a kill: the same run dir and cache, with round 1 only half written and a torn line
    out = tmp_path / "killed"
    run(cfg, out, backends=fake_backends(cfg), progress=False, stages=(1,))
    path = stage1_path(out, "A")
    path.write_text("".join(full[:7]) + full[7][:20])
    again = fake_backends(cfg)
    run(cfg, out, backends=again, progress=False, stages=(1,))
    assert path.read_text().splitlines(keepends=True) == full
    assert _calls(again) == 0  # the redone round came from the cache


def test_budget_ends_a_stage_that_yields_nothing(tmp_path, capsys):
    cfg = _cfg(num_instructions=3, instruction={"max_rounds": 4, "prompts_per_round": 2})
    useless = ScriptedBackend(
        [(r"\n\d+\.$", " Draw a map of the whole old city. |EoS|")], model_id="gen"
    )
    backends = {**fake_backends(cfg), "gen": useless}
    res = run(cfg, tmp_path, backends=backends, progress=False)
    assert len(useless.calls) == 2 * 4 * 2  # rounds x prompts x types, then it stopped
    assert "stopped after 4 rounds (the budget) with 0 of 3" in capsys.readouterr().out
    assert res.counts["stage1"]["A"] == {
        "candidates": 8,
        "accepted": 0,
        "rejected": {"keyword:draw": 8},
        "rounds": 4,
    }
    assert read_jsonl(tmp_path / "ensembled.jsonl") == []


def test_changed_config_is_refused_and_stage4_can_be_rerun(tmp_path):
    cfg = _cfg()
    run(cfg, tmp_path, backends=fake_backends(cfg), progress=False)
    with pytest.raises(Exception, match="different seed"):
        run(_cfg(seed=3), tmp_path, backends=fake_backends(cfg), progress=False)
    strict = run_stage4(tmp_path, threshold=0.99)
    assert (
        strict["kept"]
        <= json.loads((tmp_path / "manifest.json").read_text())["counts"]["stage4"]["kept"]
    )
    assert all(
        r["min_score"] > 0.99 or r["reason"] == "exact_match"
        for r in read_jsonl(tmp_path / "ensembled.jsonl")
    )


def test_vanilla_extra_model_gets_few_shot_prompts(tmp_path):
    cfg = _cfg(extra_models=[{"kind": "scripted", "model": "x1", "prompt_style": "few_shot"}])
    seen = []

    def vanilla(prompt, params, i):
        seen.append(prompt)
        return " Some answer.\n\ninstruction: run-on"

    backends = {**fake_backends(cfg), "x1": ScriptedBackend(vanilla, model_id="x1")}
    run(cfg, tmp_path, backends=backends, progress=False)
    assert seen and all(p.endswith("\noutput:") and p.count("|EoS|") == 8 for p in seen)
    outs = read_jsonl(tmp_path / "stage3_outputs_x1.jsonl")
    assert {r["output"] for r in outs} == {"Some answer."}


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from ensemble_instruct_lib.runs.config import load_config
    from ensemble_instruct_lib.testing.fake import fake_backends
    from ensemble_instruct_lib.runs.pipeline import run

    cfg = load_config({cfg!r})
    backends = fake_backends(cfg)
    log = open(sys.argv[2], "a")
    for b in backends.values():
        inner = b._generate
        def slow(prompts, params, idx, inner=inner):
            for p in prompts:
                log.write(repr(p)[:200] + "\\n")
            log.flush()
            time.sleep(0.05)
            return inner(prompts, params, idx)
        b._generate = slow
    run(cfg, sys.argv[1], backends=backends, progress=False)
    """
)


@pytest.mark.slow
def test_kill_9_and_resume(tmp_path):
    conf = {
        **BASE,
        "num_instructions": 12,
        "instance": {"batch_size": 2},
        "output": {"batch_size": 2},
    }
    script = tmp_path / "job.py"
    script.write_text(KILL_SCRIPT.format(cfg=conf))
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(
        [sys.executable, str(script), str(ref_dir), str(tmp_path / "ref.log")],
        check=True,
        env=env,
        timeout=300,
    )
    ref_calls = len((tmp_path / "ref.log").read_text().splitlines())
    kills = 0
    for delay in (0.6, 1.2, 2.0):  # kill in stage 1, then later stages
        proc = subprocess.Popen(
            [sys.executable, str(script), str(run_dir), str(tmp_path / "run.log")], env=env
        )
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
    assert kills >= 1
    subprocess.run(
        [sys.executable, str(script), str(run_dir), str(tmp_path / "run.log")],
        check=True,
        env=env,
        timeout=300,
    )
    for f in sorted(ref_dir.glob("*.jsonl")):
        if f.name == LEDGER:  # holds wall times: compared by its counts below
            continue
        assert (run_dir / f.name).read_bytes() == f.read_bytes(), f.name  # no lost/duplicated line

    def counts(folder):
        summary = summarize(read_ledger(folder))
        keep = ("calls", "new", "hits", "prompt_tokens", "completion_tokens")
        return {m: {s: {k: c[k] for k in keep} for s, c in st.items()} for m, st in summary.items()}

    assert counts(run_dir) == counts(ref_dir)  # every call counted once across the kills
    calls = len((tmp_path / "run.log").read_text().splitlines())
    # a call in flight at a kill may be repeated; a finished (cached) one never is
    assert ref_calls <= calls <= ref_calls + kills * 10


def test_answers_to_a_different_instruction_are_rejected_and_counted(tmp_path):
    """Stage 2 on an LM that, for some prompts, answers another task (the falcon-40b failure):
    those get the reason "different_instruction", in the records, the manifest and the tables;
    an answer that repeats the asked instruction first is still valid."""
    from ensemble_instruct_lib.nb.tables import reason_counts
    from ensemble_instruct_lib.testing.fake import fake_generator

    cfg = _cfg(task_types=["B"])
    fake = fake_generator("gen")

    def respond(prompt, params, i):
        if not prompt.endswith("\n"):
            return fake.generate([prompt], params, [i])[0]
        asked = prompt.rstrip("\n").rsplit("\ninstruction: ", 1)[1]
        if len(asked) % 2:
            return f"instruction:  {asked}:\noutput: An answer.\n|EoS|"
        return "instruction: Give tips for learning a language.\noutput: Practice daily.\n|EoS|"

    gen = ScriptedBackend(respond, model_id="gen")
    res = run(cfg, tmp_path, backends={**fake_backends(cfg), "gen": gen}, progress=False)
    inst = read_jsonl(tmp_path / "stage2_instances.jsonl")
    different = [r for r in inst if len(r["instruction"]) % 2 == 0]
    assert different and len(different) < len(inst)
    for r in inst:
        if r in different:
            assert (r["valid"], r["reason"], r["output"]) == (False, "different_instruction", None)
        else:
            assert (r["valid"], r["reason"], r["output"]) == (True, "ok", "An answer.")
    assert res.counts["stage2"]["B"]["invalid"] == {"different_instruction": len(different)}
    table = reason_counts(load_run(tmp_path).instances, ok_column="valid")
    assert table.loc["different_instruction", "total"] == len(different)
    assert {r["id"] for r in read_jsonl(tmp_path / "single_output.jsonl")}.isdisjoint(
        r["id"] for r in different
    )
