"""RayDataBackend on a local Ray cluster: same results as the single-process backends.

Needs the vllm extra (ray[data] + vllm); skipped without it. engine="vllm" runs two vLLM replicas
in Ray actors and must reproduce the in-process `VLLMBackend` exactly (greedy; seeded sampling
through the chat template). engine="http" spreads the rows over two real `transformers serve`
endpoints and must reproduce `HFBackend` exactly. Each vLLM job starts its engines (~35-60 s on 2
cores), so the jobs are few and large.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ensemble_instruct_lib.engines.base import DecodingParams
from ensemble_instruct_lib.engines.openai_wire import request_body
from ensemble_instruct_lib.engines.ray_data import RayDataBackend

pytestmark = pytest.mark.slow

GREEDY = DecodingParams(max_new_tokens=32)
SAMPLED_CHAT = DecodingParams(
    do_sample=True, temperature=1.0, top_k=40, top_p=0.95, max_new_tokens=24, seed=7, chat=True
)


def test_request_body_fields():
    p = DecodingParams(do_sample=True, top_k=0, seed=2, min_new_tokens=3, stop=("|EoS|",))
    body = request_body("m", "hi", p, 5, chat=False)
    assert body == {
        "model": "m",
        "max_tokens": 256,
        "prompt": "hi",
        "temperature": 0.7,
        "top_p": 1.0,
        "seed": 7,
        "min_tokens": 3,
        "stop": ["|EoS|"],
    }
    chat = request_body("m", "hi", DecodingParams(), 5, chat=True)
    assert chat["messages"] == [{"role": "user", "content": "hi"}] and chat["temperature"] == 0.0


def test_arguments_validated():
    with pytest.raises(ValueError, match="engine must be"):
        RayDataBackend("m", engine="tgi")
    with pytest.raises(ValueError, match="needs model"):
        RayDataBackend(["http://127.0.0.1:1"], engine="http")
    with pytest.raises(ValueError, match="http://"):
        RayDataBackend(["127.0.0.1:1"], engine="http", model="m")
    with pytest.raises(ValueError, match="no 'model'"):
        RayDataBackend({"dtype": "float32"})
    with pytest.raises(ValueError, match="num_replicas"):
        RayDataBackend("m", num_replicas=0)
    with pytest.raises(ValueError, match="once"):
        RayDataBackend(["http://a:1"], engine="http", model="m", endpoints=["http://b:1"])


def test_factory_style_keywords(tmp_path):
    be = RayDataBackend(
        {"kind": "vllm", "model": str(tmp_path), "dtype": "float32", "multiprocessing": False},
        engine_kwargs={"enforce_eager": True},
        num_replicas=2,
    )
    assert be.model_id == str(tmp_path)
    assert be.engine_kwargs == {"dtype": "float32", "enforce_eager": True}
    http = RayDataBackend(
        engine="http", model="m", endpoints=["http://h:8000/v1/", "http://g:8000"]
    )
    assert http.endpoints == ["http://h:8000/v1", "http://g:8000"]
    assert http.describe()["endpoints"] == http.endpoints


@pytest.fixture(scope="module")
def tiny_llama(tiny_llama_dir) -> Path:
    pytest.importorskip("vllm")
    pytest.importorskip("ray.data.llm")
    return tiny_llama_dir


@pytest.fixture(scope="module")
def prompts(data_root) -> list[str]:
    path = data_root / "self_instruct" / "seed_tasks.jsonl"
    tasks = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()[:16]]
    return [f"instruction: {t['instruction']}\noutput:" for t in tasks]


@pytest.fixture(scope="module")
def single_process(tiny_llama, prompts):
    """Reference results of the in-process engine: greedy, and sampled chat."""
    from ensemble_instruct_lib.engines.vllm_engine import VLLMBackend

    be = VLLMBackend(
        str(tiny_llama),
        dtype="float32",
        max_model_len=1024,
        multiprocessing=False,
        enforce_eager=True,
    )
    try:
        greedy = be.generate(prompts, GREEDY)
        sampled = be.generate(prompts[:8], SAMPLED_CHAT, sample_indices=list(range(8)))
    finally:
        be.close()
    return greedy, sampled


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_vllm(local_ray, tiny_llama):
    spec = {
        "model": str(tiny_llama),
        "dtype": "float32",
        "max_model_len": 1024,
        "enforce_eager": True,
    }
    be = RayDataBackend(spec, engine="vllm", num_replicas=2, batch_size=4)
    yield be
    be.close()


@pytest.mark.timeout(600)
def test_vllm_replicas_greedy_equal_single_process(ray_vllm, single_process, prompts):
    out = ray_vllm.generate(prompts, GREEDY)
    greedy, _ = single_process
    assert [g.text for g in out] == [g.text for g in greedy]
    assert [g.completion_tokens for g in out] == [g.completion_tokens for g in greedy]
    assert [g.prompt_tokens for g in out] == [g.prompt_tokens for g in greedy]
    assert [g.finish_reason for g in out] == [g.finish_reason for g in greedy]


@pytest.mark.timeout(600)
def test_vllm_replicas_seeded_chat_sampling_equal_single_process(ray_vllm, single_process, prompts):
    out = ray_vllm.generate(prompts[:8], SAMPLED_CHAT, sample_indices=list(range(8)))
    _, sampled = single_process
    assert [g.text for g in out] == [g.text for g in sampled]
    assert [g.prompt_tokens for g in out] == [g.prompt_tokens for g in sampled]


@pytest.fixture(scope="module")
def two_endpoints(tiny_llama):
    from ensemble_instruct_lib.testing.servers import LocalServer, missing_requirement

    reason = missing_requirement("transformers")
    if reason:
        pytest.skip(reason)
    a = LocalServer(tiny_llama, "transformers", dtype="float32", startup_timeout=300)
    b = LocalServer(tiny_llama, "transformers", dtype="float32", startup_timeout=300)
    with a, b:
        yield a, b


@pytest.mark.timeout(600)
def test_http_fleet_equals_hf(local_ray, two_endpoints, tiny_llama, prompts):
    from ensemble_instruct_lib.engines.hf import HFBackend

    a, b = two_endpoints
    be = RayDataBackend(
        [a.base_url, b.base_url], engine="http", model=a.model, num_replicas=1, batch_size=4
    )
    out = be.generate(prompts, GREEDY)
    chat = be.generate(prompts[:4], DecodingParams(max_new_tokens=16, chat=True))
    be.close()
    hf = HFBackend(str(tiny_llama), dtype="float32")
    try:
        ref = hf.generate(prompts, GREEDY)
        ref_chat = hf.generate(prompts[:4], DecodingParams(max_new_tokens=16, chat=True))
    finally:
        hf.close()
    assert [g.text for g in out] == [g.text for g in ref]
    assert [g.completion_tokens for g in out] == [g.completion_tokens for g in ref]
    assert [g.text for g in chat] == [g.text for g in ref_chat]
    assert all("Request received" in srv.log_tail(100_000) for srv in (a, b)), "one endpoint idle"


@pytest.mark.timeout(900)
def test_pipeline_on_ray_writes_what_the_single_process_run_writes(
    local_ray, two_endpoints, tiny_llama, tmp_path
):
    """Stage 3 as a Ray Data job over two servers: the run files equal an in-process run's."""
    from ensemble_instruct_lib.data.jsonl import read_jsonl
    from ensemble_instruct_lib.runs.config import load_config
    from ensemble_instruct_lib.runs.pipeline import run
    from ensemble_instruct_lib.testing.fake import fake_generator

    a, b = two_endpoints

    def config(extra):
        return load_config(
            {
                "name": "ray",
                "num_instructions": 2,
                "generator": {"kind": "scripted", "model": "gen"},
                "extra_models": [extra],
                "output": {"max_new_tokens": 16},
            }
        )

    on_ray = config(
        {
            "kind": "ray",
            "model": a.model,
            "name": "llama",
            "options": {"engine": "http", "endpoints": [a.base_url, b.base_url], "batch_size": 2},
        }
    )
    local = config(
        {"kind": "hf", "model": str(tiny_llama), "name": "llama", "options": {"dtype": "float32"}}
    )
    run(on_ray, tmp_path / "ray", backends={"gen": fake_generator("gen")}, progress=False)
    run(local, tmp_path / "local", backends={"gen": fake_generator("gen")}, progress=False)
    keys = ("id", "model", "output", "raw")
    ray_rows = read_jsonl(tmp_path / "ray" / "stage3_outputs_llama.jsonl")
    local_rows = read_jsonl(tmp_path / "local" / "stage3_outputs_llama.jsonl")
    assert ray_rows and [{k: r[k] for k in keys} for r in ray_rows] == [
        {k: r[k] for k in keys} for r in local_rows
    ]
    for name in ("stage2_instances.jsonl", "ensembled.jsonl", "dropped.jsonl", "alpaca.jsonl"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    again = run(on_ray, tmp_path / "ray", backends={"gen": fake_generator("gen")}, progress=False)
    assert again.manifest["cache"] == {"hits": 0, "misses": 0}  # resumes like any backend
