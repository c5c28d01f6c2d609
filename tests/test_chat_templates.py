"""Chat templates on every in-process engine: the call cache keys chat calls on the template, a
`chat: true` model without one is refused before any call, and the real SmolLM2-135M-Instruct is
prompted through the template stored in its GGUF, on llama.cpp and on transformers alike.

The real-model tests are skipped (with the install command) when llama-cpp-python or the model's
package is missing; scripts/setup.sh installs both.
"""

from __future__ import annotations

import pytest

from ensemble_instruct_lib.engines import models as M
from ensemble_instruct_lib.engines.base import DecodingParams, require_chat_template
from ensemble_instruct_lib.engines.cache import CachedBackend, CallCache, cache_key
from ensemble_instruct_lib.engines.scripted import ScriptedBackend
from ensemble_instruct_lib.errors import ConfigError
from ensemble_instruct_lib.testing.real_models import missing_real_models

SMOL = M.KNOWN_MODELS["smollm2-135m-instruct"]
CHAT = DecodingParams(max_new_tokens=8, chat=True)
RAW = DecodingParams(max_new_tokens=8)


class TemplatedScript(ScriptedBackend):
    """A scripted backend that says which chat template it renders with."""

    def __init__(self, template: str | None) -> None:
        super().__init__(lambda p, params, i: f"answer to {p}", model_id="templated")
        self.template = template

    def chat_template(self) -> str | None:
        return self.template


# ------------------------------------------------------------------------------------------
# the cache key


def test_raw_calls_keep_their_keys_whatever_the_template():
    plain = cache_key("b", "m", "r", RAW, "hello")
    assert cache_key("b", "m", "r", RAW, "hello", 0, "{{ messages }}") == plain


def test_chat_calls_key_on_the_template():
    none = cache_key("b", "m", "r", CHAT, "hello")
    one = cache_key("b", "m", "r", CHAT, "hello", 0, "template one")
    two = cache_key("b", "m", "r", CHAT, "hello", 0, "template two")
    assert len({none, one, two}) == 3
    assert cache_key("b", "m", "r", CHAT, "hello", 0, "template one") == one


def test_a_changed_template_asks_the_model_again(tmp_path):
    cache = CallCache(tmp_path / "c.sqlite")
    first = TemplatedScript("<user>{{ m }}</user>")
    CachedBackend(first, cache).generate(["hi"], CHAT)
    again = TemplatedScript("<user>{{ m }}</user>")
    cb = CachedBackend(again, cache)
    cb.generate(["hi"], CHAT)
    assert again.calls == [] and cb.hits == 1  # same template: served from the cache
    edited = TemplatedScript("<|user|>{{ m }}")
    cb = CachedBackend(edited, cache)
    cb.generate(["hi"], CHAT)
    assert edited.calls == ["hi"] and cb.misses == 1
    raw = TemplatedScript("<|user|>{{ m }}")
    CachedBackend(raw, cache).generate(["hi"], RAW)
    assert raw.calls == ["hi"]  # a raw call is another call
    cache.close()


# ------------------------------------------------------------------------------------------
# refusing chat: true without a template


def test_no_template_is_a_config_error_naming_the_model_and_field():
    with pytest.raises(ConfigError) as e:
        require_chat_template(TemplatedScript(None), "configs/x.yaml: extra_models[1].chat")
    msg = str(e.value)
    assert "configs/x.yaml: extra_models[1].chat" in msg and "'templated'" in msg
    assert "chat: false" in msg


def test_engines_that_cannot_tell_pass_and_templated_ones_pass():
    require_chat_template(ScriptedBackend({}), "x")  # a server: the template is not ours to see
    require_chat_template(TemplatedScript("{{ m }}"), "x")


def test_a_run_refuses_chat_true_on_a_model_without_template_before_any_call(tmp_path, data_root):
    from ensemble_instruct_lib.runs.config import load_config
    from ensemble_instruct_lib.runs.pipeline import run

    cfg_file = tmp_path / "chat.yaml"
    cfg_file.write_text(
        "name: chat\n"
        f"data_dir: {data_root}\n"
        "num_instructions: 1\n"
        "generator: {kind: scripted, model: gen}\n"
        "extra_models:\n  - {kind: scripted, model: base, name: base, chat: true}\n"
    )
    cfg = load_config(cfg_file)
    base = TemplatedScript(None)
    with pytest.raises(ConfigError, match=r"extra_models\[0\]\.chat: chat: true but model"):
        run(cfg, tmp_path / "out", progress=False, backends={"base": base}, stages=[3])
    assert base.calls == []


# ------------------------------------------------------------------------------------------
# the real instruction-tuned model


@pytest.fixture(scope="module")
def smol_llama():
    if reason := missing_real_models(SMOL.name):
        pytest.skip(reason)
    from ensemble_instruct_lib.engines.llama_cpp import LlamaCppBackend

    backend = LlamaCppBackend("smollm2-135m-instruct", n_ctx=1024, n_threads=2)
    yield backend
    backend.close()


QUESTION = "What is the capital of France? Answer in one word."


@pytest.mark.slow
def test_smollm2_gguf_is_pinned_and_carries_its_template(smol_llama):
    assert smol_llama.revision == f"sha256:{SMOL.gguf_sha256}"
    template = smol_llama.chat_template()
    assert template and "<|im_start|>" in template
    assert M.gguf_chat_template(smol_llama.path) == template


@pytest.mark.slow
def test_llama_cpp_renders_the_gguf_template(smol_llama):
    text = smol_llama.render(QUESTION, chat=True)
    assert f"<|im_start|>user\n{QUESTION}<|im_end|>" in text
    assert text.rstrip().endswith("<|im_start|>assistant")
    assert smol_llama.render(QUESTION, chat=False) == QUESTION
    ids = smol_llama._encode(QUESTION, True)
    im_start = smol_llama.llm.tokenize(b"<|im_start|>", add_bos=False, special=True)
    assert len(im_start) == 1 and ids.count(im_start[0]) >= 2  # special tokens, not text


@pytest.mark.slow
def test_llama_cpp_chat_answers_as_an_assistant(smol_llama):
    chat = smol_llama.generate([QUESTION], DecodingParams(max_new_tokens=24, chat=True))[0]
    raw = smol_llama.generate([QUESTION], DecodingParams(max_new_tokens=24))[0]
    assert "paris" in chat.text.lower()
    assert "<|im_" not in chat.text and chat.finish_reason == "stop"  # ended at <|im_end|>
    assert chat.prompt_tokens > raw.prompt_tokens  # the template's tokens were sent


@pytest.mark.slow
def test_gemma_has_no_template_and_chat_is_refused():
    if reason := missing_real_models("gemma-3-270m"):
        pytest.skip(reason)
    from ensemble_instruct_lib.engines.llama_cpp import LlamaCppBackend

    backend = LlamaCppBackend("gemma-3-270m", n_ctx=256, n_threads=2)
    try:
        assert backend.chat_template() is None
        with pytest.raises(ConfigError, match="'gemma-3-270m'.*has no chat template"):
            backend.render("hi", chat=True)
        with pytest.raises(ConfigError, match="gemma-3-270m"):
            require_chat_template(backend, "generator.chat")
    finally:
        backend.close()


@pytest.mark.slow
def test_hf_renders_the_same_template_from_the_converted_folder(smol_llama):
    from ensemble_instruct_lib.engines.factory import make_backend

    hf = make_backend({"kind": "hf", "model": "smollm2-135m-instruct"})
    try:
        assert hf.model_id == "smollm2-135m-instruct"
        assert hf.chat_template() == smol_llama.chat_template()
        text = hf.render(QUESTION, chat=True)
        assert f"<|im_start|>user\n{QUESTION}<|im_end|>" in text
        assert text == smol_llama.render(QUESTION, chat=True)
        ids = hf.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ids == smol_llama._encode(QUESTION, True)  # the same tokens reach both engines
        chat = hf.generate([QUESTION], DecodingParams(max_new_tokens=24, chat=True))[0]
        assert "paris" in chat.text.lower() and "<|im_" not in chat.text
    finally:
        hf.close()
