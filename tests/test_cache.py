"""CallCache and CachedBackend: each distinct call reaches the model once, across runs."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from ensemble_instruct_lib.engines import DecodingParams, Generation, ScriptedBackend
from ensemble_instruct_lib.engines.cache import CachedBackend, CallCache, cache_key

GREEDY = DecodingParams(max_new_tokens=32)
SAMPLE = DecodingParams(do_sample=True, seed=7)


def fake(model_id: str = "m") -> ScriptedBackend:
    return ScriptedBackend(
        lambda p, params, i: Generation(
            f"{model_id}:{p}:{i if params.do_sample else '-'}",
            finish_reason="length" if p.startswith("long") else "stop",
            prompt_tokens=len(p),
            completion_tokens=3,
            extra={"note": p},
        ),
        model_id=model_id,
    )


def test_second_identical_call_makes_no_inner_call(tmp_path):
    inner = fake()
    be = CachedBackend(inner, CallCache(tmp_path / "c.sqlite"))
    prompts = ["a", "b", "long c"]
    first = be.generate(prompts, GREEDY)
    assert inner.calls == prompts and not any(g.cached for g in first)
    second = be.generate(prompts, GREEDY)
    assert inner.calls == prompts  # no new call
    assert all(g.cached for g in second)
    for f, s in zip(first, second, strict=True):
        assert (f.text, f.finish_reason, f.prompt_tokens, f.completion_tokens, f.extra) == (
            s.text,
            s.finish_reason,
            s.prompt_tokens,
            s.completion_tokens,
            s.extra,
        )
    assert be.stats() == {"hits": 3, "misses": 3} and (be.hits, be.misses) == (3, 3)


def test_only_misses_go_to_inner_in_one_batch_and_order_kept(tmp_path):
    inner = fake()
    be = CachedBackend(inner, tmp_path / "c.sqlite")
    be.generate(["b", "d"], GREEDY)
    out = be.generate(["a", "b", "c", "d", "e"], GREEDY)
    assert [g.text for g in out] == [f"m:{x}:-" for x in "abcde"]
    assert [g.cached for g in out] == [False, True, False, True, False]
    assert inner.batches[-1] == ["a", "c", "e"]
    assert len(inner.batches) == 2


def test_different_params_model_or_sample_index_miss(tmp_path):
    cache = CallCache(tmp_path / "c.sqlite")
    inner = fake()
    be = CachedBackend(inner, cache)
    be.generate(["p"], GREEDY)
    be.generate(["p"], DecodingParams(max_new_tokens=33))
    be.generate(["p"], DecodingParams(max_new_tokens=32, stop=("\n",)))
    assert len(inner.calls) == 3
    other = fake("other")
    CachedBackend(other, cache).generate(["p"], GREEDY)
    assert other.calls == ["p"]
    be.generate(["p", "p"], SAMPLE, sample_indices=[0, 1])
    assert inner.calls[-2:] == ["p", "p"]
    be.generate(["p"], SAMPLE, sample_indices=[1])
    be.generate(["p"], DecodingParams(do_sample=True, seed=8), sample_indices=[1])
    assert len(inner.calls) == 6
    assert len(cache) == 7


def test_greedy_ignores_sample_index_and_dedupes_in_batch(tmp_path):
    inner = fake()
    be = CachedBackend(inner, tmp_path / "c.sqlite")
    out = be.generate(["p", "p", "q"], GREEDY, sample_indices=[0, 5, 9])
    assert inner.calls == ["p", "q"]
    assert [g.cached for g in out] == [False, True, False]
    assert out[0].text == out[1].text
    be.generate(["p"], GREEDY, sample_indices=[42])
    assert inner.calls == ["p", "q"]
    assert be.stats() == {"hits": 2, "misses": 2}


def test_key_is_canonical():
    k = cache_key("hf", "m", "r", DecodingParams(top_p=1), "x", 0)
    assert k == cache_key("hf", "m", "r", DecodingParams(top_p=1.0), "x", 3)  # greedy
    assert k != cache_key("hf", "m", "r2", DecodingParams(), "x")
    assert k != cache_key("openai", "m", "r", DecodingParams(), "x")
    s = DecodingParams(do_sample=True)
    assert cache_key("hf", "m", "r", s, "x", 0) != cache_key("hf", "m", "r", s, "x", 1)


def test_cache_survives_reopening(tmp_path):
    path = tmp_path / "sub" / "dir" / "c.sqlite"
    be = CachedBackend(fake(), CallCache(path))
    be.generate(["a", "b"], SAMPLE, sample_indices=[0, 1])
    be.cache.close()
    assert path.exists()
    inner = fake()
    be2 = CachedBackend(inner, CallCache(path))
    out = be2.generate(["a", "b"], SAMPLE, sample_indices=[0, 1])
    assert inner.calls == [] and [g.text for g in out] == ["m:a:0", "m:b:1"]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_errors_are_not_stored(tmp_path):
    answers = iter([Generation("", finish_reason="error"), Generation("ok", finish_reason="stop")])
    inner = ScriptedBackend(lambda p, params, i: next(answers))
    be = CachedBackend(inner, tmp_path / "c.sqlite")
    assert be.generate(["p"], GREEDY)[0].finish_reason == "error"
    assert be.generate(["p"], GREEDY)[0].text == "ok"
    assert be.generate(["p"], GREEDY)[0].cached
    assert len(inner.calls) == 2


def test_chunks_commit_partial_progress(tmp_path):
    calls = []

    def flaky(p, params, i):
        calls.append(p)
        if p == "boom":
            raise RuntimeError("server died")
        return p.upper()

    be = CachedBackend(ScriptedBackend(flaky), tmp_path / "c.sqlite", chunk_size=2)
    with pytest.raises(RuntimeError):
        be.generate(["a", "b", "boom", "c"], GREEDY)
    assert len(be.cache) == 2  # the first chunk was committed
    with pytest.raises(ValueError):
        CachedBackend(fake(), tmp_path / "x.sqlite", chunk_size=0)


def test_delegates_identity_and_describe(tmp_path):
    inner = ScriptedBackend({"a": "b"}, model_id="mm", revision="r1")
    be = CachedBackend(inner, tmp_path / "c.sqlite")
    assert (be.name, be.model_id, be.revision) == ("scripted", "mm", "r1")
    assert be.describe() == inner.describe()


def test_concurrent_readers_while_writing(tmp_path):
    path = tmp_path / "c.sqlite"
    writer = CachedBackend(fake(), CallCache(path))
    writer.generate([f"w{i}" for i in range(50)], GREEDY)
    keys = [cache_key("scripted", "m", "", GREEDY, f"w{i}") for i in range(50)]
    errors: list[BaseException] = []
    seen: list[int] = []

    def read() -> None:
        try:
            reader = CallCache(path)
            for _ in range(20):
                got = reader.get_many(keys)
                seen.append(len(got))
                assert all(g.cached and g.text.startswith("m:w") for g in got.values())
            reader.close()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for n in range(10):  # the writer keeps writing while the readers read
        writer.generate([f"x{n}-{i}" for i in range(20)], GREEDY)
    for t in threads:
        t.join()
    assert not errors
    assert seen and min(seen) == 50
    assert len(writer.cache) == 250


def test_shared_cache_object_across_threads(tmp_path):
    cache = CallCache(tmp_path / "c.sqlite")
    backends = [CachedBackend(fake(f"m{k}"), cache) for k in range(4)]
    threads = [
        threading.Thread(target=b.generate, args=([f"p{i}" for i in range(30)], GREEDY))
        for b in backends
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 120


def test_not_a_database_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_text("this is not sqlite" * 100)
    with pytest.raises(RuntimeError, match="move it away"):
        CallCache(bad).get("k")


def test_greedy_keys_ignore_sampling_settings():
    from ensemble_instruct_lib.engines.base import DecodingParams
    from ensemble_instruct_lib.engines.cache import cache_key

    a = DecodingParams(do_sample=False, temperature=0.7, top_k=50, seed=0)
    b = DecodingParams(do_sample=False, temperature=0.2, top_k=5, top_p=0.5, seed=9)
    assert cache_key("hf", "m", "r", a, "p") == cache_key("hf", "m", "r", b, "p")
    s1 = DecodingParams(do_sample=True, temperature=0.7)
    s2 = DecodingParams(do_sample=True, temperature=0.2)
    assert cache_key("hf", "m", "r", s1, "p") != cache_key("hf", "m", "r", s2, "p")
    assert cache_key("hf", "m", "r", a, "p") != cache_key("hf", "m", "r", s1, "p")
