"""Reading a self-ensemble run back, and the selectors compared on a generated run (issue 15)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from self_ensemble_fakes import SAMPLES, sampler_backends

from ensemble_instruct_lib.analysis.selectors_on_run import (
    run_selector_decisions,
    run_selector_table,
    selector_agreement_table,
)
from ensemble_instruct_lib.data.jsonl import read_jsonl, write_jsonl
from ensemble_instruct_lib.engines.scripted import ScriptedBackend
from ensemble_instruct_lib.errors import ConfigError
from ensemble_instruct_lib.runs.config import load_config
from ensemble_instruct_lib.runs.pipeline import run
from ensemble_instruct_lib.runs.run_folder import load_run
from ensemble_instruct_lib.testing.fake import fake_backends

BASE = {
    "name": "t",
    "generator": {"kind": "scripted", "model": "gen"},
    "extra_models": [{"kind": "scripted", "model": "x1"}, {"kind": "scripted", "model": "x2"}],
    "num_instructions": 3,
}
SELF = {
    **BASE,
    "extra_models": [],
    "output": {"self_ensemble": {"model": "gen", "samples": 3, "temperature": 0.5}},
}


@pytest.fixture(scope="module")
def self_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("self")
    run(load_config(SELF), out, backends=sampler_backends(), progress=False)
    return out


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = load_config(BASE)
    run(cfg, out, backends=fake_backends(cfg), progress=False)
    return out


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.suffix == ".jsonl"}


# ------------------------------------------------------------------------------------------
# gap 1: a self-ensemble run read back


def test_load_run_reads_every_sample_of_a_self_ensemble(self_run):
    tables = load_run(self_run)
    n_valid = sum(bool(v) for v in tables.instances["valid"])
    assert n_valid > 0
    assert sorted(tables.outputs["sample"].unique()) == ["gen-s0", "gen-s1", "gen-s2"]
    assert len(tables.outputs) == 3 * n_valid
    by_sample = tables.outputs.groupby("sample")["output"].first().to_dict()
    assert by_sample == {"gen-s0": SAMPLES[0], "gen-s1": SAMPLES[1], "gen-s2": SAMPLES[2]}


def test_load_run_still_reads_the_extra_models(fake_run):
    tables = load_run(fake_run)
    assert set(tables.outputs["model"]) == {"x1", "x2"}  # the generator's is the stage-2 file
    assert len(tables.outputs) == 2 * int(tables.instances["valid"].sum())


def test_notebook_study_names_the_samples(self_run, tmp_path):
    from ensemble_instruct_lib.nb.steps import ensembling as steps

    run_copy = tmp_path / "run"
    shutil.copytree(self_run, run_copy)
    cfg = steps.EnsemblingConfig(out_dir=str(tmp_path / "nb"), run_dir=str(run_copy))
    study = steps.ensemble_study(cfg)
    assert study.models == ["gen-s0", "gen-s1", "gen-s2"]
    assert set(study.frame["chosen_model"].dropna()) == {"gen-s0"}


# ------------------------------------------------------------------------------------------
# gap 2: selectors compared on a run


def test_sum_row_is_what_the_run_decided_and_files_stay(fake_run):
    before = _files(fake_run)
    decisions = run_selector_decisions(fake_run, ["sum", "best_pair", "mbr:chrf", "judge"])
    assert _files(fake_run) == before  # stage-4 files (and every other) untouched
    assert list(decisions.columns) == ["id", "sum", "best_pair", "mbr:chrf"]  # judge: unset
    recorded = {
        r["id"]: -1 if r["chosen_index"] is None else r["chosen_index"]
        for r in read_jsonl(fake_run / "ensembled.jsonl") + read_jsonl(fake_run / "dropped.jsonl")
    }
    assert dict(zip(decisions["id"], decisions["sum"], strict=True)) == recorded
    table = selector_agreement_table(decisions)
    row = table.set_index("selector").loc["sum"]
    assert row["n_examples"] == len(recorded)
    assert row["kept_fraction"] == pytest.approx(
        len(read_jsonl(fake_run / "ensembled.jsonl")) / len(recorded)
    )
    assert row["agree_sum"] == 1.0


def test_self_ensemble_run_compared(self_run):
    table = run_selector_table(self_run, ["sum", "best_pair"]).set_index("selector")
    # samples 0 and 2 are equal: every selector keeps sample 0 by the exact-match shortcut
    assert list(table["kept_fraction"]) == [1.0, 1.0]
    assert table.loc["sum", "agree_best_pair"] == 1.0


HAND = {
    # exact match (after normalization): every selector keeps candidate 0
    0: ["The cat sat.", "the cat sat", "dogs run far"],
    # no shared word: the lowest pairwise Rouge-L is 0 <= 0.01, every selector drops it
    1: ["alpha", "beta", "gamma"],
    # Rouge-L F: (0,1) 4/7, (0,2) 2/7, (1,2) 1/2; sums 6/7, 15/14, 11/14: sum keeps 1; the best
    # pair is (0,1), best_pair keeps its first member 0; token F1 equals Rouge-L here
    2: ["red blue zed", "red blue cat dog", "cat dog zed yak"],
}


def _hand_run(fake_run: Path, out: Path) -> list[str]:
    shutil.copytree(fake_run, out)
    stage2 = [r for r in read_jsonl(out / "stage2_instances.jsonl") if r["valid"]][:3]
    ids = [r["id"] for r in stage2]
    for k, r in enumerate(stage2):
        r["output"] = HAND[k][0]
    write_jsonl(out / "stage2_instances.jsonl", stage2)
    for m, name in ((1, "x1"), (2, "x2")):
        path = out / f"stage3_outputs_{name}.jsonl"
        recs = {r["id"]: r for r in read_jsonl(path)}
        write_jsonl(path, [{**recs[i], "output": HAND[k][m]} for k, i in enumerate(ids)])
    return ids


def test_hand_worked_run(fake_run, tmp_path):
    ids = _hand_run(fake_run, tmp_path / "hand")
    decisions = run_selector_decisions(
        tmp_path / "hand", ["sum", "best_pair", "mbr:token_f1", "mbr:rouge_l"]
    )
    assert list(decisions["id"]) == ids
    assert list(decisions["sum"]) == [0, -1, 1]
    assert list(decisions["best_pair"]) == [0, -1, 0]
    assert list(decisions["mbr:token_f1"]) == [0, -1, 1]
    assert list(decisions["mbr:rouge_l"]) == [0, -1, 1]
    table = selector_agreement_table(decisions).set_index("selector")
    assert table.loc["sum", "kept_fraction"] == pytest.approx(2 / 3)
    assert table.loc["sum", "n_examples"] == 3
    assert table.loc["sum", "agree_best_pair"] == pytest.approx(2 / 3)
    assert table.loc["best_pair", "agree_sum"] == pytest.approx(2 / 3)
    assert table.loc["sum", "agree_mbr:token_f1"] == 1.0
    # a threshold above 2/7 drops example 2 as well, for every selector
    strict = run_selector_table(tmp_path / "hand", ["sum", "best_pair"], threshold=0.3)
    assert list(strict["kept_fraction"]) == pytest.approx([1 / 3, 1 / 3])
    assert list(strict["agree_sum"]) == [1.0, 1.0]


def test_judge_runs_when_configured(fake_run, tmp_path):
    out = tmp_path / "hand"
    _hand_run(fake_run, out)

    def longest(prompt, params, index):  # scores a response by its word count
        m = re.search(r"<response>\n(.*?)\n</response>", prompt, re.DOTALL)
        return f" {min(10, len(m.group(1).split()))}"

    judge = ScriptedBackend(longest, model_id="j")
    decisions = run_selector_decisions(
        out,
        ["sum", "judge"],
        consensus={"judges": [{"kind": "scripted", "model": "j"}]},
        backends={"j": judge},
    )
    assert list(decisions["judge"]) == [0, -1, 1]  # the longest (earliest on ties); 1 dropped
    assert judge.calls


def test_bad_entry_and_not_a_run(tmp_path, fake_run):
    with pytest.raises(ConfigError, match="selectors"):
        run_selector_decisions(fake_run, ["mbr"])
    with pytest.raises(ConfigError, match="not a run dir"):
        run_selector_decisions(tmp_path, ["sum"])
