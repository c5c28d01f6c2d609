"""The reference code's forced minimum lengths: a stop string seen before `min_new_tokens` no
longer hides the run-on text, so `instance.harvest_extra_blocks` can see invented blocks; the
stage-1 option (`instruction.min_new_tokens`, the reference code's 15) reaches the backend."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from ensemble_instruct_lib import ConfigError
from ensemble_instruct_lib.data.jsonl import read_jsonl
from ensemble_instruct_lib.engines.base import DecodingParams, cut_generated, sampling_params
from ensemble_instruct_lib.engines.cache import cache_key
from ensemble_instruct_lib.engines.scripted import ScriptedBackend
from ensemble_instruct_lib.runs.config import InstanceStage, InstructionStage, load_config
from ensemble_instruct_lib.runs.pipeline import run
from ensemble_instruct_lib.testing.fake import fake_backends, fake_generator

RUN_ON = "input: a\noutput: b\n|EoS|\n\ninstruction: Say more.\noutput: c\n|EoS|"


def test_cut_generated_keeps_the_text_after_early_stops_only_when_asked():
    cut = DecodingParams(stop=("|EoS|", "\n\n"))
    keep = dataclasses.replace(cut, keep_after_stop=True)
    assert cut_generated(RUN_ON, cut) == "input: a\noutput: b\n"
    assert cut_generated(RUN_ON, keep) == RUN_ON[: -len("|EoS|")]  # only the final stop goes
    assert cut_generated("no stop here", keep) == "no stop here"


def test_the_flag_changes_cache_keys_only_when_on():
    p = DecodingParams(do_sample=True, stop=("|EoS|",), min_new_tokens=5)
    assert "keep_after_stop" not in p.to_dict()  # keys made before the flag existed stay valid
    on = dataclasses.replace(p, keep_after_stop=True)
    assert on.to_dict()["keep_after_stop"] is True
    assert cache_key("x", "m", "", p, "hi") != cache_key("x", "m", "", on, "hi")


def test_sampling_params_keep_the_text_when_a_minimum_is_forced():
    assert not sampling_params(InstanceStage(), ("|EoS|",), 0).keep_after_stop
    forced = sampling_params(InstanceStage(min_new_tokens=50), ("|EoS|",), 0)
    assert forced.keep_after_stop and forced.min_new_tokens == 50
    first = sampling_params(InstructionStage(min_new_tokens=15), ("|EoS|",), 0)
    assert first.keep_after_stop and first.min_new_tokens == 15


def test_scripted_backend_honours_the_flag():
    be = ScriptedBackend(lambda p, params, i: RUN_ON)
    params = DecodingParams(stop=("|EoS|",), min_new_tokens=50, max_new_tokens=512)
    assert be.generate(["x"], params)[0].text == "input: a\noutput: b\n"
    kept = be.generate(["x"], dataclasses.replace(params, keep_after_stop=True))[0].text
    assert "instruction: Say more." in kept and not kept.endswith("|EoS|")


def test_instruction_min_new_tokens_is_validated():
    base = {"generator": {"kind": "scripted", "model": "g"}}
    assert load_config(base).instruction.min_new_tokens == 0  # the paper
    with pytest.raises(ConfigError, match=r"instruction\.min_new_tokens"):
        load_config({**base, "instruction": {"min_new_tokens": 300}})


def _run_on_generator(seen: list[tuple[str, int, bool]]) -> ScriptedBackend:
    """The fake generator, whose stage-2 answers run on past the end marker into one more
    invented block (as a forced minimum length makes real LMs do); records each call's params."""
    inner = fake_generator("gen")

    def respond(prompt: str, params: DecodingParams, index: int) -> str:
        stage = "instance" if prompt.endswith("\n") else "instruction"
        seen.append((stage, params.min_new_tokens, params.keep_after_stop))
        raw = inner.generate([prompt], dataclasses.replace(params, stop=()), [index])[0].text
        if stage == "instruction":
            return raw
        words = hashlib.sha256(prompt.encode()).hexdigest()
        return (
            f"{raw}\n\ninstruction: Compose a motto about topic {words[:8]} and {words[8:16]}\n"
            "output: Onward.\n|EoS|"
        )

    return ScriptedBackend(respond, model_id="gen")


@pytest.mark.parametrize("min_new", [0, 50])
def test_forced_minimum_lets_harvest_see_invented_blocks(tmp_path, min_new):
    cfg = load_config(
        {
            "generator": {"kind": "scripted", "model": "gen"},
            "extra_models": [{"kind": "scripted", "model": "x1"}],
            "num_instructions": 4,
            "instruction": {"min_new_tokens": 15},
            "instance": {"min_new_tokens": min_new, "harvest_extra_blocks": True},
        }
    )
    seen: list[tuple[str, int, bool]] = []
    backends = {**fake_backends(cfg), "gen": _run_on_generator(seen)}
    run(cfg, tmp_path, backends=backends, progress=False, stages=(1, 2))
    assert {s for s in seen if s[0] == "instruction"} == {("instruction", 15, True)}
    assert {s for s in seen if s[0] == "instance"} == {("instance", min_new, min_new > 0)}
    stage2 = read_jsonl(tmp_path / "stage2_instances.jsonl")
    mottos = [r for r in stage2 if r["harvested_from"] and "motto" in r["instruction"]]
    raws = [r["raw"] for r in stage2 if not r["harvested_from"]]
    if min_new:
        assert mottos and all(r["output"] == "Onward." for r in mottos)
        assert all("Compose a motto" in raw for raw in raws)
    else:  # cut at the first end marker: the run-on block is never seen
        assert not mottos and not any("Compose a motto" in raw for raw in raws)


@pytest.mark.slow
def test_hf_backend_keeps_the_run_on_text(tiny_llama_dir, data_root):
    """A tiny random Llama, greedy: a stop string it writes early ends the text at that point,
    unless a forced minimum asks to keep what follows (then only a final stop string is cut)."""
    import re

    pytest.importorskip("torch")
    from ensemble_instruct_lib.engines.hf import HFBackend

    be = HFBackend(str(tiny_llama_dir), batch_size=2)
    prompt = "Give three tips for staying healthy."
    full = be.generate([prompt], DecodingParams(max_new_tokens=16, min_new_tokens=16))[0].text
    m = re.search(r"[!-~]{2}", full[:8])
    assert m, f"no printable pair early in {full!r}"
    stop = m.group(0)
    forced = DecodingParams(max_new_tokens=16, min_new_tokens=12, stop=(stop,))
    cut = be.generate([prompt], forced)[0]
    kept = be.generate([prompt], dataclasses.replace(forced, keep_after_stop=True))[0]
    assert cut.text == full[: full.find(stop)]  # the run-on text was generated, then cut away
    assert kept.completion_tokens >= 12 and stop in kept.text
    assert full.startswith(kept.text) and len(kept.text) > len(cut.text) + len(stop)
    if kept.finish_reason == "stop":
        assert not kept.text.endswith(stop)
