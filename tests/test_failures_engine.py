"""Per-call failure isolation at the engine level (engines/isolation.py), the HTTP backend's
partial failures, and the call cache keeping every finished call of a chunk that failed part-way.

The HTTP cases run against the real local fault-injecting server (tests/fault_server.py).
"""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
from fault_server import FaultServer

from ensemble_instruct_lib.engines import DecodingParams, Generation, ScriptedBackend
from ensemble_instruct_lib.engines.cache import CachedBackend, CallCache
from ensemble_instruct_lib.engines.isolation import (
    CallFailed,
    PartialFailure,
    PromptTooLong,
    failure,
    failure_counts,
    generate_isolated,
    is_failure,
    one_line,
)
from ensemble_instruct_lib.engines.openai_compat import OpenAICompatBackend

GREEDY = DecodingParams(max_new_tokens=64)
TOO_LONG = "This model's maximum context length is 2048 tokens; the prompt is too long"


def make(url, **kw) -> OpenAICompatBackend:
    kw.setdefault("backoff_base", 0.001)
    kw.setdefault("backoff_max", 0.01)
    kw.setdefault("timeout", 5.0)
    kw.setdefault("api_key_env", "EI_TEST_OPENAI_KEY")
    return OpenAICompatBackend("fake-model", url, **kw)


@pytest.fixture
def server():
    with FaultServer() as srv:
        yield srv


def asked(srv: FaultServer) -> list[str]:
    return [r.body["prompt"] for r in srv.requests if r.body]


# -- the HTTP backend ------------------------------------------------------------------------


def test_poison_prompt_fails_alone_with_the_servers_message(server):
    server.poison("POISON")
    be = make(server.url, max_concurrency=3)
    prompts = ["a", "b POISON", "c", "d"]
    try:
        with pytest.raises(PartialFailure) as err:
            be.generate(prompts, GREEDY)
    finally:
        be.close()
    e = err.value
    assert e.n_failed == 1
    assert [g.text if g else None for g in e.results] == ["ECHO a", None, "ECHO c", "ECHO d"]
    assert isinstance(e.errors[1], PromptTooLong) and e.errors[1].reason == "prompt_too_long"
    assert TOO_LONG in str(e.errors[1]) and "not retried" in str(e.errors[1])
    assert asked(server).count("b POISON") == 1  # a 400 is not retried


def test_other_client_errors_are_rejected_and_exhaustion_is_named(server):
    server.poison("BAD", status=422, message="unknown field 'foo'")
    be = make(server.url, max_retries=1)
    try:
        with pytest.raises(CallFailed) as err:
            be.generate(["BAD"], GREEDY)
        assert err.value.reason == "rejected" and "422" in str(err.value)
        server.inject("500", 2)
        with pytest.raises(CallFailed) as err:
            be.generate(["x"], GREEDY)
        assert err.value.reason == "retries_exhausted" and "2 attempts" in str(err.value)
    finally:
        be.close()


def test_streaming_hands_over_answers_as_they_arrive(server):
    # s0 answers last (wide margins: CI is busy); `match` pins the delay to s0 whichever request
    # reaches the server first
    server.inject("slow", 1, seconds=4.0, match="s0")
    be = make(server.url, max_concurrency=4)
    got: list[tuple[float, int]] = []
    try:
        t0 = time.monotonic()
        out = be.generate_streaming(
            ["s0", "s1", "s2"], GREEDY, on_result=lambda i, g: got.append((time.monotonic(), i))
        )
        t_end = time.monotonic()
    finally:
        be.close()
    assert [g.text for g in out] == ["ECHO s0", "ECHO s1", "ECHO s2"]
    assert sorted(i for _, i in got) == [0, 1, 2]
    early = [i for t, i in got if t - t0 < 2.5]
    assert set(early) == {1, 2} and t_end - t0 >= 2.9


# -- the cache keeps what a failing chunk finished -------------------------------------------


def test_chunk_failing_part_way_keeps_finished_calls_and_rerun_asks_only_the_failed(
    server, tmp_path
):
    # concurrency 1: the first request meets the three 500s and fails for good after 2 retries
    server.inject("500", 3)
    cache = CallCache(tmp_path / "c.sqlite")
    be = CachedBackend(make(server.url, max_retries=2, max_concurrency=1), cache, chunk_size=4)
    prompts = [f"q{i}" for i in range(6)]
    with pytest.raises(PartialFailure) as err:
        be.generate(prompts, GREEDY)
    assert err.value.n_failed == 1 and err.value.results[0] is None
    assert err.value.errors[0].reason == "retries_exhausted"
    assert len(cache) == 5  # every finished call of the failing chunk, and the next chunk
    server.requests.clear()
    out = be.generate(prompts, GREEDY)
    assert asked(server) == ["q0"]
    assert [g.text for g in out] == [f"ECHO {p}" for p in prompts]
    assert [g.cached for g in out] == [False] + [True] * 5
    be.close()


def test_finished_calls_are_committed_before_the_chunk_ends(server, tmp_path):
    path = tmp_path / "c.sqlite"
    server.inject("slow", 1, seconds=3.0, match="w0")
    be = CachedBackend(make(server.url, max_concurrency=4), CallCache(path))
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        reader = CallCache(path)
        while not stop.is_set():
            with contextlib.suppress(Exception):  # the file may not exist yet
                seen.append(len(reader))
            time.sleep(0.05)
        reader.close()

    t = threading.Thread(target=watch)
    t.start()
    try:
        be.generate(["w0", "w1", "w2", "w3"], GREEDY)
    finally:
        stop.set()
        t.join()
        be.close()
    assert 3 in seen  # three answers were on disk while the slow one was still out


def test_processes_opening_one_new_cache_at_once_all_get_in(tmp_path):
    # SQLite says "database is locked" (without waiting) to a connection that opens a file while
    # another creates it or switches it to WAL; the cache waits that out instead of failing
    errors: list[Exception] = []

    def open_and_count(path) -> None:
        try:
            cache = CallCache(path)
            assert len(cache) == 0
            cache.close()
        except Exception as e:  # noqa: BLE001 - collected and reported below
            errors.append(e)

    for trial in range(60):
        threads = [
            threading.Thread(target=open_and_count, args=(tmp_path / f"c{trial}.sqlite",))
            for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[:3]


def test_failure_markers_are_never_cached(tmp_path):
    answers = iter([failure("boom", "error"), Generation("ok")])
    inner = ScriptedBackend(lambda p, params, i: next(answers))
    be = CachedBackend(inner, tmp_path / "c.sqlite")
    assert is_failure(be.generate(["p"], GREEDY)[0])
    assert be.generate(["p"], GREEDY)[0].text == "ok"
    assert be.generate(["p"], GREEDY)[0].cached and len(inner.calls) == 2


# -- generate_isolated -----------------------------------------------------------------------


def test_isolated_keeps_answers_of_a_partial_failure_without_asking_again(server, tmp_path):
    server.poison("POISON")
    be = CachedBackend(make(server.url), CallCache(tmp_path / "c.sqlite"))
    prompts = ["a", "POISON b", "c"]
    out = generate_isolated(be, prompts, GREEDY)
    assert [g.text for g in out] == ["ECHO a", "", "ECHO c"]
    assert [is_failure(g) for g in out] == [False, True, False]
    assert out[1].extra["reason"] == "prompt_too_long" and TOO_LONG in out[1].extra["error"]
    assert sorted(asked(server)) == sorted(prompts)  # each asked once
    assert failure_counts(out) == {"failed": 1, "reasons": {"prompt_too_long": 1}}
    # the server is fixed: a re-run asks only the failed prompt
    server.cure()
    server.requests.clear()
    out = generate_isolated(be, prompts, GREEDY)
    assert asked(server) == ["POISON b"] and not any(is_failure(g) for g in out)
    be.close()


def test_isolated_retries_one_by_one_when_the_whole_batch_raises():
    def answer(p, params, i):
        if "bad" in p:
            raise RuntimeError("CUDA error: device-side assert\nTraceback (most recent call last)")
        return p.upper()

    inner = ScriptedBackend(answer)
    out = generate_isolated(inner, ["x", "bad y", "z"], GREEDY)
    assert [g.text for g in out] == ["X", "", "Z"]
    bad = out[1]
    assert bad.finish_reason == "failed" and bad.extra["reason"] == "error"
    assert "\n" not in bad.extra["error"] and bad.extra["error"].startswith("CUDA error")
    assert inner.batches == [["x", "bad y", "z"], ["x"], ["bad y"], ["z"]]


def test_isolated_precheck_marks_too_long_prompts_before_the_call():
    inner = ScriptedBackend(lambda p, params, i: p)
    inner.check_prompts = lambda prompts, params: [  # type: ignore[attr-defined]
        "too long: 9000 tokens" if len(p) > 5 else None for p in prompts
    ]
    out = generate_isolated(inner, ["ok", "much too long", "fine"], GREEDY)
    assert [g.text for g in out] == ["ok", "", "fine"]
    assert out[1].extra == {"error": "too long: 9000 tokens", "reason": "prompt_too_long"}
    assert inner.calls == ["ok", "fine"]


def test_isolated_precheck_goes_through_the_cache(tmp_path):
    inner = ScriptedBackend(lambda p, params, i: p)
    inner.check_prompts = lambda prompts, params: [  # type: ignore[attr-defined]
        "too long" if len(p) > 5 else None for p in prompts
    ]
    be = CachedBackend(inner, tmp_path / "c.sqlite")
    out = generate_isolated(be, ["ok", "much too long"], GREEDY)
    assert [is_failure(g) for g in out] == [False, True] and inner.calls == ["ok"]
    assert CachedBackend(ScriptedBackend({}), tmp_path / "d.sqlite").check_prompts(
        ["a"], GREEDY
    ) == [None]


def test_isolated_lets_interrupts_through():
    def answer(p, params, i):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_isolated(ScriptedBackend(answer), ["a", "b"], GREEDY)


def test_one_line_and_reasons():
    assert one_line(ValueError("a\n  b\tc")) == "a b c"
    assert one_line("x" * 1000, limit=10) == "xxxxxxx..."
    assert one_line(RuntimeError()) == "RuntimeError"
    assert CallFailed("m", "nonsense").reason == "error"
    assert isinstance(PromptTooLong("m"), ValueError)


# -- HF: the pre-check uses the tokenizer and the model's context ----------------------------


@pytest.mark.slow
def test_hf_prompt_too_long_is_found_before_the_call(tmp_path):
    pytest.importorskip("transformers")
    from ensemble_instruct_lib.engines.hf import HFBackend
    from ensemble_instruct_lib.testing.tiny import build_tiny_model

    path = build_tiny_model(tmp_path / "short", "gpt2", max_positions=64)
    be = HFBackend(str(path), device="cpu", batch_size=4)
    params = DecodingParams(max_new_tokens=8)
    long_prompt = "word " * 200
    problems = be.check_prompts(["short one", long_prompt], params)
    assert problems[0] is None and "context of 64 tokens" in problems[1]
    with pytest.raises(PromptTooLong):
        be.generate(["short one", long_prompt], params)
    out = generate_isolated(be, ["short one", long_prompt, "another"], params)
    assert [is_failure(g) for g in out] == [False, True, False]
    assert out[1].extra["reason"] == "prompt_too_long"
    be.close()


def test_failure_budget_rules():
    from ensemble_instruct_lib.engines.isolation import FailureBudget
    from ensemble_instruct_lib.errors import TooManyFailures

    ok, bad, long_ = (
        Generation("x"),
        failure("down", "retries_exhausted"),
        failure("l", "prompt_too_long"),
    )
    b = FailureBudget("stage 3 (m)", 0.2)
    b.add([bad, bad, ok])
    b.check()  # 3 calls: too few to judge a fraction
    b.add([ok] * 7)
    b.check()  # 2 of 10 = 20%: not more than 0.2
    b.add([bad])
    with pytest.raises(
        TooManyFailures, match=r"stage 3 \(m\): 3 of 11 calls failed .*last error: down"
    ):
        b.check()
    small = FailureBudget("s", 0.2)
    small.add([bad, bad])
    small.check()
    with pytest.raises(TooManyFailures):
        small.check(final=True)  # a small stage where every call failed
    poison_rerun = FailureBudget("s", 0.2)
    poison_rerun.add([long_])
    poison_rerun.check(final=True)  # only over-long prompts: the run finishes
    never = FailureBudget("s", 1.0)
    never.add([bad] * 20)
    never.check(final=True)
    with pytest.raises(ValueError):
        FailureBudget("s", 1.5)
