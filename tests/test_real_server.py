"""OpenAICompatBackend against REAL OpenAI-compatible servers on 127.0.0.1 serving a tiny Llama.

- `transformers serve` (needs `transformers[serving]`; skipped without it).
- vLLM's OpenAI api_server (needs vllm in this interpreter or in the one named by
  $EI_VLLM_PYTHON, e.g. `.venv-vllm/bin/python`; skipped otherwise).

Greedy results through /v1/completions and /v1/chat/completions are compared with the in-process
`HFBackend` on the same checkpoint. `transformers serve` decodes exactly like HFBackend, so texts
are equal. vLLM's incremental detokenizer withholds a trailing incomplete UTF-8 character (HF
writes U+FFFD), so vLLM texts equal HF texts up to trailing U+FFFD, with equal token counts, and
equal the in-process VLLMBackend exactly (checked when vllm is importable here).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from ensemble_instruct_lib.engines.base import DecodingParams
from ensemble_instruct_lib.testing.servers import (
    LocalServer,
    _group_alive,
    missing_requirement,
    serve_openai_compatible,
)

N_TOKENS = 32
GREEDY = DecodingParams(max_new_tokens=N_TOKENS)
FFFD = "\ufffd"
VLLM_PYTHON = os.environ.get("EI_VLLM_PYTHON") or sys.executable

pytestmark = pytest.mark.slow


def prompts_from_seeds(data_root: Path, n: int = 12) -> list[str]:
    import json

    path = data_root / "self_instruct" / "seed_tasks.jsonl"
    tasks = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:n]]
    return [f"instruction: {t['instruction']}\noutput:" for t in tasks]


def same_up_to_trailing_fffd(a: str, b: str) -> bool:
    return a == b or a.rstrip(FFFD) == b.rstrip(FFFD)


@pytest.fixture(scope="module")
def tiny_llama(tiny_llama_dir) -> Path:
    pytest.importorskip("transformers")
    return tiny_llama_dir


@pytest.fixture(scope="module")
def prompts(data_root) -> list[str]:
    return prompts_from_seeds(data_root)


@pytest.fixture(scope="module")
def hf(tiny_llama):
    from ensemble_instruct_lib.engines.hf import HFBackend

    be = HFBackend(str(tiny_llama), dtype="float32", batch_size=8)
    yield be
    be.close()


@pytest.fixture(scope="module")
def hf_greedy(hf, prompts):
    return hf.generate(prompts, GREEDY)


def client(server: LocalServer, **kw):
    from ensemble_instruct_lib.engines.openai_compat import OpenAICompatBackend

    kw.setdefault("max_retries", 1)
    kw.setdefault("timeout", 120.0)
    kw.setdefault("api_key_env", "EI_TEST_NO_KEY")
    return OpenAICompatBackend(server.model, server.base_url, **kw)


# ---- transformers serve ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tf_server(tiny_llama):
    reason = missing_requirement("transformers")
    if reason:
        pytest.skip(reason)
    with LocalServer(tiny_llama, "transformers", dtype="float32", startup_timeout=300) as srv:
        yield srv
    assert not _group_alive(srv.proc.pid), "server processes left behind"


@pytest.mark.timeout(300)
def test_transformers_serve_completions_equal_hf(tf_server, prompts, hf_greedy):
    be = client(tf_server, max_concurrency=4)
    try:
        out = be.generate(prompts, GREEDY)
    finally:
        be.close()
    assert [g.text for g in out] == [g.text for g in hf_greedy]
    assert [g.completion_tokens for g in out] == [g.completion_tokens for g in hf_greedy]
    assert [g.prompt_tokens for g in out] == [g.prompt_tokens for g in hf_greedy]
    assert [g.finish_reason for g in out] == [g.finish_reason for g in hf_greedy]


@pytest.mark.timeout(300)
def test_transformers_serve_stop_strings_equal_hf(tf_server, prompts, hf, hf_greedy):
    stops = tuple({g.text[3:5] for g in hf_greedy[:4] if g.text[3:5].isascii()}) or ("e",)
    params = DecodingParams(max_new_tokens=N_TOKENS, stop=stops)
    be = client(tf_server)
    try:
        out = be.generate(prompts[:6], params)
    finally:
        be.close()
    ref = hf.generate(prompts[:6], params)
    assert [g.text for g in out] == [g.text for g in ref]
    assert any(g.finish_reason == "stop" for g in out)
    assert all(not any(s in g.text for s in stops) for g in out)


@pytest.mark.timeout(300)
def test_transformers_serve_chat_equal_hf(tf_server, prompts, hf):
    params = DecodingParams(max_new_tokens=16, chat=True)
    be = client(tf_server)
    try:
        out = be.generate(prompts[:4], params)
    finally:
        be.close()
    assert [g.text for g in out] == [g.text for g in hf.generate(prompts[:4], params)]


@pytest.mark.timeout(120)
def test_failed_start_reports_log_and_leaves_nothing(tmp_path):
    reason = missing_requirement("transformers")
    if reason:
        pytest.skip(reason)
    server = LocalServer(tmp_path / "no_model_here", "transformers", startup_timeout=90)
    with pytest.raises(RuntimeError, match="exited with code") as err:
        server.start()
    assert str(server.log_path) in str(err.value)
    assert not server.running and not _group_alive(server.proc.pid)
    server.log_path.unlink()


def test_context_manager_yields_base_url_and_stops(tiny_llama):
    reason = missing_requirement("transformers")
    if reason:
        pytest.skip(reason)
    import urllib.request

    with serve_openai_compatible(tiny_llama, "transformers", startup_timeout=300) as url:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{url}/v1/models", timeout=30) as resp:
            assert resp.status == 200
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/health", timeout=5)


def test_bad_arguments_rejected(tmp_path):
    with pytest.raises(ValueError, match="engine must be one of"):
        LocalServer(tmp_path, "tgi")
    with pytest.raises(ValueError, match="cannot rename"):
        LocalServer(tmp_path, "transformers", served_model_name="other")


# ---- vLLM api_server -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_server(tiny_llama):
    reason = missing_requirement("vllm", VLLM_PYTHON)
    if reason:
        pytest.skip(f"{reason} (or point $EI_VLLM_PYTHON at an interpreter that has it)")
    with LocalServer(
        tiny_llama,
        "vllm",
        dtype="float32",
        python=VLLM_PYTHON,
        served_model_name="tiny-llama",
        extra_args=["--enforce-eager", "--max-model-len", "1024", "--seed", "0"],
        startup_timeout=420,
    ) as srv:
        yield srv
    assert not _group_alive(srv.proc.pid), "vLLM engine processes left behind"


@pytest.fixture(scope="module")
def vllm_served_greedy(vllm_server, prompts):
    be = client(vllm_server, max_concurrency=8)
    try:
        return be.generate(prompts, GREEDY)
    finally:
        be.close()


@pytest.mark.timeout(480)
def test_vllm_server_completions_equal_hf_up_to_trailing_fffd(vllm_served_greedy, hf_greedy):
    for v, h in zip(vllm_served_greedy, hf_greedy, strict=True):
        assert same_up_to_trailing_fffd(h.text, v.text), (h.text, v.text)
        assert (v.completion_tokens, v.prompt_tokens) == (h.completion_tokens, h.prompt_tokens)
        assert v.finish_reason == h.finish_reason


@pytest.mark.timeout(300)
def test_vllm_server_equals_in_process_vllm(vllm_served_greedy, tiny_llama, prompts):
    pytest.importorskip("vllm")
    from ensemble_instruct_lib.engines.vllm_engine import VLLMBackend

    be = VLLMBackend(
        str(tiny_llama),
        dtype="float32",
        max_model_len=1024,
        multiprocessing=False,
        enforce_eager=True,
    )
    try:
        out = be.generate(prompts, GREEDY)
    finally:
        be.close()
    assert [g.text for g in out] == [g.text for g in vllm_served_greedy]


@pytest.mark.timeout(300)
def test_vllm_server_chat_and_stop(vllm_server, prompts, hf, hf_greedy):
    be = client(vllm_server)
    try:
        chat = be.generate(prompts[:4], DecodingParams(max_new_tokens=16, chat=True))
        stop = hf_greedy[0].text[4:6]
        [cut] = be.generate(prompts[:1], DecodingParams(max_new_tokens=N_TOKENS, stop=(stop,)))
    finally:
        be.close()
    ref = hf.generate(prompts[:4], DecodingParams(max_new_tokens=16, chat=True))
    for v, h in zip(chat, ref, strict=True):
        assert same_up_to_trailing_fffd(h.text, v.text), (h.text, v.text)
    assert cut.text == hf_greedy[0].text[: hf_greedy[0].text.find(stop)]
    assert cut.finish_reason == "stop"


@pytest.mark.timeout(300)
def test_vllm_server_seeded_sampling_reproducible(vllm_server, prompts):
    params = DecodingParams(do_sample=True, temperature=1.0, top_k=50, max_new_tokens=16, seed=3)
    be = client(vllm_server)
    try:
        a = be.generate(prompts[:3], params, sample_indices=[0, 1, 2])
        b = be.generate(prompts[:3], params, sample_indices=[0, 1, 2])
        c = be.generate([prompts[0]] * 3, params, sample_indices=[0, 1, 2])
    finally:
        be.close()
    assert [g.text for g in a] == [g.text for g in b]
    assert c[0].text == a[0].text and len({g.text for g in c}) > 1
