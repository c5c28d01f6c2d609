"""ScriptedBackend (the fake LM of the pipeline tests) and make_backend's validation."""

from __future__ import annotations

import importlib.util
import re

import pytest

from ensemble_instruct_lib.engines import (
    Backend,
    DecodingParams,
    Generation,
    ScriptedBackend,
    make_backend,
)
from ensemble_instruct_lib.engines.scripted import UnscriptedPromptError

P = DecodingParams()


def test_dict_responder_counts_calls_and_keeps_order():
    be = ScriptedBackend({"a": "alpha", "b": "beta"})
    out = be.generate(["b", "a", "b"], P)
    assert [g.text for g in out] == ["beta", "alpha", "beta"]
    assert be.calls == ["b", "a", "b"]
    assert be.batches == [["b", "a", "b"]]
    assert all(g.finish_reason == "stop" and not g.cached for g in out)
    assert be.describe() == {"backend": "scripted", "model_id": "scripted", "revision": ""}


def test_unmatched_prompt_is_a_clear_error():
    be = ScriptedBackend({"a": "alpha"})
    with pytest.raises(UnscriptedPromptError, match="no answer for prompt 'zzz'") as err:
        be.generate(["zzz"], P)
    assert isinstance(err.value, KeyError)
    rules = ScriptedBackend([(r"^x", "y")])
    with pytest.raises(KeyError, match=re.escape("rules tried: ['^x']")):
        rules.generate(["abc"], P)


def test_rules_first_match_wins_and_callables_get_prompt_params_index():
    seen = []

    def echo(prompt, params, index):
        seen.append((prompt, params.do_sample, index))
        return f"{prompt.upper()}#{index}"

    be = ScriptedBackend([(r"instruction:", echo), (re.compile(r"inst"), "second"), (r".", "any")])
    params = DecodingParams(do_sample=True)
    out = be.generate(["instruction: hi", "inst", "zz"], params, sample_indices=[3, 4, 5])
    assert [g.text for g in out] == ["INSTRUCTION: HI#3", "second", "any"]
    assert seen == [("instruction: hi", True, 3)]


def test_function_responder_and_stop_cut():
    be = ScriptedBackend(lambda p, params, i: f"{p} out |EoS| extra", model_id="fn")
    [g] = be.generate(["in"], DecodingParams(stop=("|EoS|",)))
    assert g.text == "in out "
    assert be.model_id == "fn"


def test_generation_answers_pass_through_and_are_copied():
    canned = Generation("cut off", finish_reason="length", completion_tokens=7)
    be = ScriptedBackend({"p": canned})
    g1, g2 = be.generate(["p", "p"], P)
    assert g1.finish_reason == "length" and g1.completion_tokens == 7
    g1.cached = True
    assert not g2.cached and not canned.cached


def test_bad_responder_rejected():
    with pytest.raises(TypeError):
        ScriptedBackend(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rule 0"):
        ScriptedBackend([("only-a-pattern",)])  # type: ignore[list-item]


def test_backend_interface_checks():
    be = ScriptedBackend({"a": "x"})
    assert be.generate([], P) == []
    with pytest.raises(ValueError, match="sample_indices"):
        be.generate(["a"], P, sample_indices=[0, 1])


# ------------------------------------------------------------------------------------------
# make_backend


def test_make_backend_builds_and_validates_keys():
    be = make_backend({"kind": "scripted", "responder": {"a": "b"}, "model_id": "m"})
    assert isinstance(be, ScriptedBackend) and isinstance(be, Backend)
    assert be.generate(["a"], P)[0].text == "b"
    with pytest.raises(
        ValueError, match=r"unknown key 'modle'.*allowed keys: \['kind', 'responder'"
    ):
        make_backend({"kind": "scripted", "responder": {}, "modle": "m"})


def test_make_backend_unknown_kind_and_missing_keys():
    with pytest.raises(ValueError, match=r"unknown backend kind 'gpt'.*'hf'.*'openai'"):
        make_backend({"kind": "gpt", "model": "x"})
    with pytest.raises(ValueError, match="no 'kind'"):
        make_backend({"model": "x"})
    with pytest.raises(ValueError, match=r"missing \['base_urls'\]"):
        make_backend({"kind": "openai", "model": "x"})
    with pytest.raises(ValueError, match="unknown key 'batch_size'.*'max_concurrency'"):
        make_backend({"kind": "openai", "model": "x", "base_urls": "http://h", "batch_size": 4})


def test_make_backend_openai_kwargs_reach_constructor():
    be = make_backend(
        {"kind": "openai", "model": "m", "base_urls": ["http://127.0.0.1:1"], "chat": True}
    )
    try:
        assert be.describe()["chat"] is True and be.name == "openai"
    finally:
        be.close()


def test_make_backend_vllm_missing_says_how_to_install():
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    with pytest.raises(ImportError, match="vllm extra"):
        make_backend({"kind": "vllm", "model": "x"})
