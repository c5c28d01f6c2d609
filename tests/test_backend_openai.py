"""OpenAICompatBackend against a real local HTTP server that injects faults (tests/fault_server.py)."""

from __future__ import annotations

import time

import pytest
from fault_server import FaultServer

from ensemble_instruct_lib.engines.base import DecodingParams
from ensemble_instruct_lib.engines.openai_compat import OpenAICompatBackend

KEY = "sk-test-0123456789-secret"
GREEDY = DecodingParams(max_new_tokens=64)


@pytest.fixture
def server():
    with FaultServer() as srv:
        yield srv


def make(urls, **kw) -> OpenAICompatBackend:
    kw.setdefault("backoff_base", 0.001)
    kw.setdefault("backoff_max", 0.01)
    kw.setdefault("timeout", 5.0)
    kw.setdefault("api_key_env", "EI_TEST_OPENAI_KEY")
    return OpenAICompatBackend("fake-model", urls, **kw)


def test_success_completions_body_and_result(server):
    be = make(server.url)
    try:
        [g] = be.generate(["hello world"], DecodingParams(max_new_tokens=8, stop=("\n\n",)))
    finally:
        be.close()
    assert g.text == "ECHO hello world"
    assert g.finish_reason == "stop"
    assert (g.prompt_tokens, g.completion_tokens) == (2, 3)
    [req] = server.requests
    assert req.path == "/v1/completions"
    assert req.body == {
        "model": "fake-model",
        "prompt": "hello world",
        "max_tokens": 8,
        "temperature": 0.0,
        "seed": 0,
        "stop": ["\n\n"],
    }


def test_sampling_params_mapping_and_extra_body(server):
    be = make(server.url, extra_body={"top_k": None, "repetition_penalty": 1.1})
    params = DecodingParams(
        do_sample=True, temperature=0.7, top_k=50, top_p=0.9, seed=10, min_new_tokens=3
    )
    try:
        be.generate(["a", "b"], params, sample_indices=[0, 5])
    finally:
        be.close()
    bodies = sorted((r.body for r in server.requests), key=lambda b: b["prompt"])
    assert [b["seed"] for b in bodies] == [10, 15]
    for b in bodies:
        assert b["temperature"] == 0.7 and b["top_p"] == 0.9
        assert b["min_tokens"] == 3 and b["repetition_penalty"] == 1.1
        assert "top_k" not in b  # removed by extra_body
    be2 = make(server.url)
    try:
        be2.generate(["c"], params)
    finally:
        be2.close()
    assert server.requests[-1].body["top_k"] == 50


def test_length_finish_reason_and_order(server):
    be = make(server.url, max_concurrency=4)
    prompts = [f"p{i} " + "w " * i for i in range(10)]
    try:
        out = be.generate(prompts, DecodingParams(max_new_tokens=4))
    finally:
        be.close()
    for i, g in enumerate(out):
        assert g.text.startswith(f"ECHO p{i}")
        assert g.finish_reason == (
            "length" if len(("ECHO " + prompts[i]).split(" ")) > 4 else "stop"
        )
    assert [g.finish_reason for g in out].count("length") >= 5


@pytest.mark.parametrize(
    "kind,opts",
    [("429", {}), ("500", {}), ("drop", {}), ("malformed", {}), ("slow", {"seconds": 1.0})],
)
def test_each_fault_is_recovered_by_retry(server, kind, opts):
    server.inject(kind, 2, **opts)
    be = make(server.url, timeout=0.3 if kind == "slow" else 5.0)
    try:
        [g] = be.generate(["retry me"], GREEDY)
    finally:
        be.close()
    assert g.text == "ECHO retry me"
    assert [r.fault for r in server.requests] == [kind, kind, None]


def test_retry_after_is_honoured(server):
    server.inject("429", 1, retry_after="1")
    be = make(server.url, backoff_base=0.0, backoff_max=0.0)
    t0 = time.monotonic()
    try:
        [g] = be.generate(["x"], GREEDY)
    finally:
        be.close()
    assert time.monotonic() - t0 >= 0.9
    assert g.text == "ECHO x"


def test_exhausted_retries_raise_clear_error_without_key(server, monkeypatch):
    monkeypatch.setenv("EI_TEST_OPENAI_KEY", KEY)
    server.inject("500", 10)
    be = make(server.url, max_retries=2)
    try:
        with pytest.raises(RuntimeError) as err:
            be.generate(["x"], GREEDY)
    finally:
        be.close()
    msg = str(err.value)
    assert "3 attempts" in msg and "500" in msg and server.url in msg
    assert KEY not in msg and KEY not in repr(err.value)
    assert len(server.requests) == 3
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in server.requests)


def test_connection_refused_is_retried_then_reported():
    with FaultServer() as srv:
        url = srv.url
    be = make(url, max_retries=1)
    try:
        with pytest.raises(RuntimeError, match="connection error") as err:
            be.generate(["x"], GREEDY)
    finally:
        be.close()
    assert "2 attempts" in str(err.value)


def test_client_error_is_not_retried(server):
    be = make(server.url + "/wrong-prefix")
    try:
        with pytest.raises(RuntimeError, match="404") as err:
            be.generate(["x"], GREEDY)
    finally:
        be.close()
    assert "not retried" in str(err.value)
    assert len(server.requests) == 1


def test_key_sent_as_bearer_but_never_shown(server, monkeypatch):
    monkeypatch.setenv("EI_TEST_OPENAI_KEY", KEY)
    be = make(server.url)
    try:
        be.generate(["x"], GREEDY)
        assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"
        assert KEY not in repr(be)
        assert KEY not in str(be.describe())
        assert be.describe()["backend"] == "openai"
    finally:
        be.close()


def test_no_key_no_authorization_header(server, monkeypatch):
    monkeypatch.delenv("EI_TEST_OPENAI_KEY", raising=False)
    be = make(server.url)
    try:
        be.generate(["x"], GREEDY)
    finally:
        be.close()
    assert "authorization" not in server.requests[0].headers


def test_concurrency_bound_respected():
    with FaultServer(delay=0.1) as srv:
        be = make(srv.url, max_concurrency=3)
        try:
            out = be.generate([f"q{i}" for i in range(12)], GREEDY)
        finally:
            be.close()
        assert [g.text for g in out] == [f"ECHO q{i}" for i in range(12)]
        assert len(srv.requests) == 12
        assert 2 <= srv.max_in_flight <= 3


def test_several_base_urls_round_robin_and_retry_on_next():
    with FaultServer() as a, FaultServer() as b:
        be = make([a.url, b.url + "/v1/"], max_concurrency=2)
        try:
            out = be.generate([f"q{i}" for i in range(8)], GREEDY)
            assert [g.text for g in out] == [f"ECHO q{i}" for i in range(8)]
            assert len(a.requests) == 4 and len(b.requests) == 4
            assert {r.path for r in a.requests + b.requests} == {"/v1/completions"}
        finally:
            be.close()
        a.requests.clear()
        b.requests.clear()
        a.inject("500", 1)
        be = make([a.url, b.url])
        try:
            [g] = be.generate(["again"], GREEDY)
        finally:
            be.close()
        assert g.text == "ECHO again"
        assert [r.fault for r in a.requests] == ["500"]
        assert [r.fault for r in b.requests] == [None]


def test_stop_string_cut_defensively(server):
    be = make(server.url)
    try:
        [g] = be.generate(["abc |EoS| def"], DecodingParams(stop=("|EoS|", "\n\n")))
    finally:
        be.close()
    assert g.text == "ECHO abc "
    assert server.requests[0].body["stop"] == ["|EoS|", "\n\n"]


def test_chat_endpoint_used_when_chat(server):
    be = make(server.url, chat=True)
    try:
        [g] = be.generate(["hi there"], GREEDY)
    finally:
        be.close()
    assert g.text == "CHAT hi there"
    req = server.requests[0]
    assert req.path == "/v1/chat/completions"
    assert req.body["messages"] == [{"role": "user", "content": "hi there"}]
    assert "prompt" not in req.body

    be = make(server.url)
    try:
        [g] = be.generate(["per call"], DecodingParams(chat=True))
    finally:
        be.close()
    assert g.text == "CHAT per call"
    assert server.requests[-1].path == "/v1/chat/completions"


@pytest.mark.parametrize(
    "kw",
    [
        {"base_urls": []},
        {"base_urls": "localhost:8000"},
        {"base_urls": "http://x", "max_concurrency": 0},
        {"base_urls": "http://x", "max_retries": -1},
    ],
)
def test_bad_arguments_rejected(kw):
    with pytest.raises(ValueError):
        OpenAICompatBackend("m", **kw)


def test_userinfo_redacted_from_describe():
    be = OpenAICompatBackend("m", "http://user:pw@127.0.0.1:9/v1")
    try:
        assert "pw" not in str(be.describe()) and "pw" not in repr(be)
        assert be.describe()["base_urls"] == ["http://127.0.0.1:9/v1"]
    finally:
        be.close()


def test_retry_after_parsing_and_backoff_window():
    import email.utils

    from ensemble_instruct_lib.engines.openai_compat import _parse_retry_after

    assert _parse_retry_after("2") == 2.0
    assert _parse_retry_after("0.25") == 0.25
    assert _parse_retry_after(None) is None and _parse_retry_after("soon") is None
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= _parse_retry_after(future) <= 31
    be = OpenAICompatBackend("m", "http://127.0.0.1:9", backoff_base=0.5, backoff_max=2.0)
    try:
        assert be._backoff(0, 3.0) == 3.0  # a server's Retry-After wins
        assert be._backoff(0, 600.0) <= 0.5  # an absurd one is ignored
        assert all(0 <= be._backoff(10, None) <= 2.0 for _ in range(50))  # capped, jittered
    finally:
        be.close()


def test_wire_answer_read_once_for_both_backends():
    """engines/openai_wire.py reads answers for OpenAICompatBackend and RayDataBackend alike."""
    from ensemble_instruct_lib.engines.openai_wire import MalformedResponse, read_answer
    from ensemble_instruct_lib.engines.ray_data import _http_result

    data = {
        "choices": [{"message": {"content": None}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4},
    }
    answer = read_answer(data, chat=True)
    assert (answer.text, answer.finish_reason, answer.prompt_tokens) == ("", "length", 3)
    assert (
        read_answer({"choices": [{"text": "hi"}], "usage": []}, chat=False).completion_tokens == 0
    )
    with pytest.raises(MalformedResponse):
        read_answer({"choices": []}, chat=False)
    row = _http_result({"idx": 2, "http_response": {"choices": [{"text": 5}]}}, chat=False)
    assert row["finish_reason"] == "error" and row["text"] == ""
    ok = _http_result({"idx": 1, "http_response": data}, chat=True)
    assert ok == {
        "idx": 1,
        "text": "",
        "finish_reason": "length",
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "error": "",
    }
