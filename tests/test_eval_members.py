"""eval-members: config validation, the echo rule, the paired bootstrap, the selector table on a
hand-made case, resuming by task id, the report-only path and the CLI, on scripted backends."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from ensemble_instruct_lib import cli
from ensemble_instruct_lib.analysis.eval_members import (
    ECHO_THRESHOLD,
    NOT_RUN,
    SELECTOR_ENTRIES,
    eval_members,
    is_echo,
    load_eval_config,
    load_items,
    mixture_rows,
    paired_bootstrap,
)
from ensemble_instruct_lib.data.eval_items import EvalItem
from ensemble_instruct_lib.data.jsonl import read_jsonl
from ensemble_instruct_lib.engines.scripted import ScriptedBackend
from ensemble_instruct_lib.errors import ConfigError

N = 6
CONFIG = {
    "name": "t",
    "n": N,
    "batch_size": 1,
    "max_failed_fraction": 1.0,
    "members": [
        {"kind": "scripted", "model": "gold", "name": "good"},
        {"kind": "scripted", "model": "echo", "name": "echo"},
        {"kind": "scripted", "model": "few", "name": "few", "prompt_style": "few_shot"},
    ],
    "mixtures": {"pair": ["good", "echo"], "three": ["few", "good", "echo"]},
}


def _write(tmp_path, data, name="c.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _items():
    return load_items(load_eval_config(CONFIG))


class Member:
    """Scripted answers per item, found from the zero-shot prompt (instruction first) or, for
    few-shot prompts, from the item's instruction at the end; counts calls; may fail or stop."""

    def __init__(self, how, fail_on=(), interrupt_after=None):
        self.items = _items()
        self.how, self.fail_on, self.interrupt_after = how, set(fail_on), interrupt_after
        self.backend = ScriptedBackend(self.answer, model_id=how)

    def item(self, prompt):
        flat = " ".join(prompt.split())
        found = [it for it in self.items if " ".join(it.instruction.split()) in flat[-2000:]]
        return max(found, key=lambda it: flat.rfind(" ".join(it.instruction.split())))

    def answer(self, prompt, params, index):
        it = self.item(prompt)
        if self.interrupt_after is not None and len(self.backend.calls) > self.interrupt_after:
            raise KeyboardInterrupt
        if it.id in self.fail_on:
            raise RuntimeError("scripted failure")
        if self.how == "gold":
            return it.references[0]
        if self.how == "echo":
            return it.input or it.instruction
        return "an answer that says little"


def _backends(**members):
    made = {"good": Member("gold"), "echo": Member("echo"), "few": Member("few"), **members}
    return made, {k: m.backend for k, m in made.items()}


# --------------------------------------------------------------------------------------------
# config


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mixtures": {"m": ["good", "nobody"]}}, "mixtures.m: unknown member(s) ['nobody']"),
        ({"mixtures": {"m": ["good"]}}, "mixtures.m: a mixture needs at least 2 members"),
        ({"colour": "red"}, "unknown key(s) ['colour']"),
        ({"n": 0}, "n: must be >= 1"),
        ({"n": "ten"}, "n: expected an integer"),
        ({"members": [{"model": "x"}]}, "members[0]: missing required key(s) ['kind']"),
        ({"tasks": ["gsm8k"]}, "tasks: must be a non-empty list"),
    ],
)
def test_config_errors_name_the_file_and_field(tmp_path, change, message):
    path = _write(tmp_path, {**CONFIG, **change})
    with pytest.raises(ConfigError) as e:
        load_eval_config(path)
    assert str(e.value).startswith(str(path)) and message in str(e.value)
    assert "\n" not in str(e.value)


def test_a_run_config_is_its_generator_and_extra_models_in_one_mixture(tmp_path):
    run = {
        "name": "r",
        "generator": {"kind": "scripted", "model": "gen"},
        "extra_models": [{"kind": "scripted", "model": "x1"}, {"kind": "scripted", "model": "x2"}],
        "output": {"max_new_tokens": 64},
    }
    cfg = load_eval_config(_write(tmp_path, run), n=5)
    assert [m.name for m in cfg.members] == ["gen", "x1", "x2"]
    assert [m.prompt_style for m in cfg.members] == ["few_shot", "zero_shot", "zero_shot"]
    assert cfg.mixtures == {"r": ["gen", "x1", "x2"]} and cfg.n == 5
    assert cfg.max_new_tokens == 64


def test_the_shipped_config_loads():
    cfg = load_eval_config(Path(__file__).parents[1] / "configs" / "eval-members.yaml")
    assert [m.name for m in cfg.members] == [
        "gemma-fewshot",
        "gemma-zeroshot",
        "smollm2-chat",
        "smollm2-fewshot",
    ]
    assert cfg.member("smollm2-chat").chat and cfg.n == 120 and cfg.max_new_tokens == 128
    assert list(cfg.mixtures) == ["one-model", "gemma-majority", "smollm2-majority", "smollm2-only"]


# --------------------------------------------------------------------------------------------
# echo and bootstrap (pure)


def test_is_echo_hand_worked_cases():
    mat = "The cat sat on the mat."
    assert is_echo(mat, mat)  # 6 of 6 tokens in order
    # twice the input: the input is repeated round(12/6) = 2 times, LCS 12 of 12
    assert is_echo("the cat sat on the mat the cat sat on the mat", mat)
    # a prefix before the copy: LCS 6 of 7 output tokens (0.86 >= 0.8), all 6 input tokens
    assert is_echo("Output: the cat sat on the mat", mat)
    # a different answer sharing words: LCS 3 ("cat", "on", "mat") of 6
    assert not is_echo("a cat sits on a mat", mat)
    paris = "My name is John Smith and I live in Paris."
    assert not is_echo("John Smith", paris)  # 2 tokens: a name lifted from the input
    # 4 of 4 output tokens copied, but only 4 of 10 input tokens: extraction, not a copy
    assert not is_echo("I live in Paris", paris)
    assert is_echo("John Smith and I live in Paris", paris)  # 7 of 7 and 7 of 10
    assert not is_echo("Pizza is a popular Italian dish", "I love pizza")
    assert not is_echo("anything at all here", "") and not is_echo("", mat)
    assert ECHO_THRESHOLD == 0.8


def test_paired_bootstrap():
    rng = np.random.default_rng(1)
    a, b = rng.random(80), rng.random(80)
    mean, lo, hi = paired_bootstrap(a, b, seed=3)
    assert lo < mean < hi and mean == pytest.approx(float(np.mean(a - b)))
    assert paired_bootstrap(a, b, seed=3) == (mean, lo, hi)  # seeded
    assert paired_bootstrap(a, a) == (0.0, 0.0, 0.0)
    assert paired_bootstrap(b + 0.25, b) == (0.25, 0.25, 0.25)
    assert all(math.isnan(v) for v in paired_bootstrap([], []))
    with pytest.raises(ValueError):
        paired_bootstrap([1.0, 2.0], [1.0])


def test_paired_bootstrap_width_matches_the_normal_approximation():
    d = np.random.default_rng(0).normal(0.1, 1.0, size=400)
    _, lo, hi = paired_bootstrap(d, np.zeros_like(d), n_resamples=20000, seed=0)
    normal = 2 * 1.959964 * d.std(ddof=1) / math.sqrt(len(d))
    assert (hi - lo) == pytest.approx(normal, rel=0.06)


# --------------------------------------------------------------------------------------------
# the selector table on a hand-made case


def test_mixture_rows_hand_made_case():
    items = [
        EvalItem("i1", "Describe it.", "the cat sat on the mat", ("a cat is on a mat",)),
        EvalItem("i2", "Capital of France?", "", ("paris is the capital of france",)),
        EvalItem("i3", "Name a colour.", "", ("blue",)),
    ]
    answers = {
        # i1: a echoes the input, b is the gold answer, c agrees most with both
        # i2: c shares no token with the others: dropped (lowest pairwise Rouge-L 0 <= 0.01)
        # i3: a == b: the exact-match shortcut keeps a (the first)
        "a": {"i1": "the cat sat on the mat", "i2": "paris is the capital of france", "i3": "blue"},
        "b": {"i1": "a cat is on a mat", "i2": "the capital of france is paris", "i3": "blue"},
        "c": {"i1": "a cat sits on the mat", "i2": "zzz qqq", "i3": "red"},
    }
    rows = {
        r["selector"]: r
        for r in mixture_rows(
            "m", ["a", "b", "c"], answers, items, all_members=["a", "b", "c", "d"]
        )
    }
    assert list(rows) == list(SELECTOR_ENTRIES)
    s = rows["sum"]
    # i1 Rouge-L between candidates: a-b 0.5, a-c 4/6, b-c 4/6: sums a 1.17, b 1.17, c 1.33 -> c
    assert (s["n"], s["kept"], s["kept_fraction"]) == (3, 2, round(2 / 3, 4))
    # vs gold: i1 c 4/6, i3 a 1.0; on the kept items a 0.75, b 1.0, c 1/3: best member b
    assert s["rouge_kept"] == pytest.approx(100 * (4 / 6 + 1) / 2, abs=1e-3)
    assert s["rouge_all"] == pytest.approx(100 * (4 / 6 + 1) / 3, abs=1e-3)
    assert (s["best_member"], s["best_member_rouge_kept"]) == ("b", 100.0)
    assert s["diff"] == pytest.approx(100 * ((4 / 6 + 1) / 2 - 1), abs=1e-3)
    assert s["ci_lo"] <= s["diff"] <= s["ci_hi"]
    assert (s["share_a"], s["share_b"], s["share_c"], s["share_d"]) == (0.5, 0.0, 0.5, "")
    assert s["echo_rate_kept"] == 0.0
    # best_pair: every candidate's best pair scores 4/6, so the first (a, the echo) is kept
    bp = rows["best_pair"]
    assert (bp["kept"], bp["share_a"], bp["echo_rate_kept"]) == (2, 1.0, 0.5)
    assert bp["rouge_kept"] == 75.0 and bp["diff"] == -25.0 and bp["best_member"] == "b"
    assert rows["mbr:rouge_l"]["share_c"] == s["share_c"]  # mbr with Rouge-L is the sum rule


# --------------------------------------------------------------------------------------------
# answering: resumable, cached, spec-checked


def test_a_run_writes_answers_and_reports(tmp_path):
    made, backends = _backends()
    cfg = load_eval_config(CONFIG)
    res = eval_members(cfg, tmp_path, backends=backends, progress=False, n_resamples=200)
    assert all(len(m.backend.calls) == N for m in made.values())
    good = read_jsonl(tmp_path / "answers" / "good.jsonl")
    items = _items()
    assert [r["id"] for r in good] == [it.id for it in items]
    # cut at the stage-3 stop strings, as stage 3 cuts
    assert [r["output"] for r in good] == [it.references[0].split("\n\n")[0] for it in items]
    spec = json.loads((tmp_path / "answers" / "good.spec.json").read_text())
    assert spec["spec"]["model"] == "gold" and spec["generation"]["max_new_tokens"] == 128
    by = {r["member"]: r for r in res.members}
    assert (
        by["echo"]["echo_rate_kept"] > 0.5 and by["good"]["rouge_all"] > 80
    )  # item 5 is cut at its blank line
    assert not math.isnan(by["gold"]["echo_rate_kept"])
    assert len(res.mixtures) == 2 * len(SELECTOR_ENTRIES)
    # the few-shot member got demonstrations before its task
    few_prompt = made["few"].backend.calls[0]
    assert few_prompt.count("output:") > 1
    md = (tmp_path / "report.md").read_text()
    assert all(f"`{k}`" in md for k in NOT_RUN) and "| pair | sum |" in md


def test_an_interrupted_member_resumes_with_only_the_missing_items(tmp_path):
    cfg = load_eval_config(CONFIG)
    made, backends = _backends(echo=Member("echo", interrupt_after=3))
    with pytest.raises(KeyboardInterrupt):
        eval_members(cfg, tmp_path, backends=backends, progress=False)
    assert len(read_jsonl(tmp_path / "answers" / "echo.jsonl")) == 3
    assert not (tmp_path / "answers" / "few.jsonl").exists()
    made, backends = _backends()
    eval_members(cfg, tmp_path, backends=backends, progress=False, n_resamples=100)
    calls = {k: len(m.backend.calls) for k, m in made.items()}
    assert calls == {"good": 0, "echo": N - 3, "few": N}
    assert len(read_jsonl(tmp_path / "answers" / "echo.jsonl")) == N


def test_failed_calls_are_recorded_and_asked_again(tmp_path):
    cfg = load_eval_config(CONFIG)
    items = _items()
    made, backends = _backends(good=Member("gold", fail_on=[items[2].id]))
    res = eval_members(cfg, tmp_path, backends=backends, progress=False, n_resamples=100)
    good = {r["member"]: r for r in res.members}["good"]
    assert (good["n"], good["failed"], good["missing"]) == (N - 1, 1, 1)
    assert {r["n"] for r in res.mixtures} == {N - 1}  # items every member answered
    made, backends = _backends()
    res = eval_members(cfg, tmp_path, backends=backends, progress=False, n_resamples=100)
    assert {k: len(m.backend.calls) for k, m in made.items()} == {"good": 1, "echo": 0, "few": 0}
    assert {r["member"]: r for r in res.members}["good"]["failed"] == 0


def test_a_changed_spec_under_the_same_name_is_refused(tmp_path):
    _, backends = _backends()
    eval_members(load_eval_config(CONFIG), tmp_path, backends=backends, progress=False)
    members = [dict(CONFIG["members"][0], model="other"), *CONFIG["members"][1:]]
    cfg = load_eval_config({**CONFIG, "members": members})
    with pytest.raises(ConfigError, match="'good' .* another spec .*spec.model.*another name"):
        eval_members(cfg, tmp_path, backends=_backends()[1], progress=False)
    # a second config sharing members with the same spec reuses their answers
    shared = {**CONFIG, "name": "t2", "mixtures": {"two": ["echo", "good"]}}
    shared["members"] = CONFIG["members"][:2]
    made, backends = _backends()
    eval_members(load_eval_config(shared), tmp_path, backends=backends, progress=False)
    assert len(made["good"].backend.calls) == len(made["echo"].backend.calls) == 0


def test_report_only_makes_no_call_and_skips_what_has_no_answers(tmp_path):
    cfg = load_eval_config(CONFIG)
    _, backends = _backends()
    eval_members(cfg, tmp_path, only=["good", "echo"], backends=backends, progress=False)
    boom = {k: ScriptedBackend(lambda *a: pytest.fail("an LM call")) for k in ("good", "echo")}
    res = eval_members(cfg, tmp_path, backends=boom, report_only=True, n_resamples=100)
    assert [r["mixture"] for r in res.mixtures] == ["pair"] * len(SELECTOR_ENTRIES)
    assert res.skipped == {"few": "no answers yet", "mixture three": "no answers from ['few']"}
    with pytest.raises(ConfigError, match="unknown member"):
        eval_members(cfg, tmp_path, only=["nobody"], report_only=True)


def test_the_cli_writes_the_tables(tmp_path, monkeypatch, capsys):
    import ensemble_instruct_lib.engines.factory as factory

    made, _ = _backends()
    by_model = {"gold": made["good"], "echo": made["echo"], "few": made["few"]}
    monkeypatch.setattr(
        factory, "make_backend", lambda spec, where="": by_model[spec["model"]].backend
    )
    path = _write(tmp_path, CONFIG)
    out = tmp_path / "out"
    argv = ["eval-members", "--config", str(path), "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| mixture | selector |" in printed and "members.csv" in printed
    with open(out / "mixtures.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["mixture"], r["selector"]) for r in rows][:2] == [
        ("pair", "sum"),
        ("pair", "best_pair"),
    ]
    assert {"ci_lo", "ci_hi", "echo_rate_kept", "share_good", "share_few"} <= set(rows[0])
    with open(out / "members.csv") as f:
        assert [r["member"] for r in csv.DictReader(f)] == ["good", "echo", "few", "gold"]
    assert cli.main([*argv, "--report-only", "--n", "3"]) == 0
    with open(out / "members.csv") as f:
        assert {r["n"] for r in csv.DictReader(f)} == {"3"}


def test_superni_items_follow_the_user_oriented_ones(monkeypatch):
    import ensemble_instruct_lib.data.superni as superni

    fake = [EvalItem(f"task1-{k}", "Define.", f"x{k}", (f"y{k}",)) for k in range(5)]
    monkeypatch.setattr(superni, "load_superni_items", lambda: fake)
    cfg = load_eval_config({**CONFIG, "tasks": ["user_oriented", "superni"], "n": 2})
    items = load_items(cfg)
    ids = [it.id for it in items]
    assert ids == ["user_oriented_task_0", "user_oriented_task_1", "task1-0", "task1-1"]


def test_config_errors_carry_the_line_of_the_key(tmp_path):
    path = _write(tmp_path, {**CONFIG, "n": 0})
    line = 1 + path.read_text().splitlines().index("n: 0")
    with pytest.raises(ConfigError) as e:
        load_eval_config(path)
    assert str(e.value) == f"{path}, line {line}: n: must be >= 1, got 0"
    cfg = load_eval_config(_write(tmp_path, CONFIG))
    model = 1 + path.read_text().splitlines().index("  model: gold")
    assert cfg.members[0].where == f"{tmp_path / 'c.yaml'}, line {model}: members[0].model"
