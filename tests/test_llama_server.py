"""Pipeline stages 2-4 through a REAL `python -m llama_cpp.server` on 127.0.0.1 serving Gemma 3 270M.

The kit's OpenAI-compatible backend is the generator (stage 2, sampling with per-sample seeds) and
one extra model (stage 3, greedy); the in-process llama.cpp backend on the same GGUF is the other
extra model. Stage 1 comes from the fake LM, so the test is about the serving path, not about
what a 270M model invents. Tiny budget: 2 instructions per type, 4 demos, short outputs.
"""

from __future__ import annotations

import importlib.util

import pytest

from ensemble_instruct_lib.data.jsonl import read_jsonl
from ensemble_instruct_lib.engines import models as M
from ensemble_instruct_lib.method.run_files import ENSEMBLED, STAGE2
from ensemble_instruct_lib.runs.config import load_config
from ensemble_instruct_lib.runs.pipeline import run
from ensemble_instruct_lib.testing.fake import fake_generator
from ensemble_instruct_lib.testing.real_models import missing_real_models
from ensemble_instruct_lib.testing.servers import LocalServer, missing_requirement

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def llama_server():
    reason = missing_requirement("llama_cpp") or missing_real_models(
        "gemma-3-270m", llama_cpp=False
    )
    if reason:
        pytest.skip(reason)
    with LocalServer(
        "gemma-3-270m", "llama_cpp", served_model_name="gemma-3-270m", startup_timeout=300
    ) as srv:
        yield srv


def _served(srv, name):
    options = {
        "base_urls": [srv.base_url],
        "api_key_env": "EI_TEST_NO_KEY",
        "max_retries": 2,
        "timeout": 300.0,
        "max_concurrency": 1,  # the server answers one request at a time
        "revision": "sha256:" + M.KNOWN_MODELS["gemma-3-270m"].gguf_sha256,
    }
    return {"kind": "openai", "model": srv.model, "name": name, "options": options}


def test_the_server_lists_the_model(llama_server):
    import httpx

    data = httpx.get(f"{llama_server.base_url}/v1/models", timeout=30).json()
    assert [m["id"] for m in data["data"]] == ["gemma-3-270m"]


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs llama-cpp-python")
def test_stages_2_to_4_through_a_real_llama_cpp_server(llama_server, tmp_path):
    cfg = load_config(
        {
            "name": "llama-served",
            "num_instructions": 2,
            "generator": _served(llama_server, "served-gemma"),
            "extra_models": [
                _served(llama_server, "served-gemma-fs") | {"prompt_style": "few_shot"},
                {
                    "kind": "llama_cpp",
                    "model": "gemma-3-270m",
                    "name": "local-gemma",
                    "prompt_style": "few_shot",
                    "options": {"n_ctx": 2048, "n_threads": 2},
                },
            ],
            "instance": {"num_demos": {"A": 4, "B": 4}, "max_new_tokens": 64},
            "output": {"max_new_tokens": 24, "few_shot_demos": 3},
        }
    )
    # stage 1 from the fake LM, then stages 2-4 with the served model
    run(
        cfg, tmp_path, backends={"served-gemma": fake_generator("gen")}, progress=False, stages=(1,)
    )
    res = run(cfg, tmp_path, progress=False, stages=(2, 3, 4))
    stage2 = read_jsonl(tmp_path / STAGE2)
    assert len(stage2) == 4 and {r["finish_reason"] for r in stage2} <= {"stop", "length"}
    valid = [r for r in stage2 if r["valid"]]
    assert valid, "no stage-2 response of the real model parsed"
    served = read_jsonl(tmp_path / "stage3_outputs_served-gemma-fs.jsonl")
    local = read_jsonl(tmp_path / "stage3_outputs_local-gemma.jsonl")
    assert [r["id"] for r in served] == [r["id"] for r in valid]
    assert [r["id"] for r in local] == [r["id"] for r in valid]
    # greedy, same GGUF, same prompts: the server and the in-process engine mostly agree (the
    # prefix reuse of each engine can flip a near-tie, so not every output must match)
    same = sum(a["raw"] == b["raw"] for a, b in zip(served, local, strict=True))
    assert same >= len(valid) / 2
    kept = read_jsonl(tmp_path / ENSEMBLED)
    dropped = read_jsonl(tmp_path / "dropped.jsonl")
    assert len(kept) + len(dropped) == len(valid)
    assert res.manifest["status"] == "done"
    assert res.manifest["models"]["local-gemma"]["revision"].startswith("sha256:a5fd3b62")
    again = run(cfg, tmp_path, progress=False, stages=(2, 3, 4))
    assert again.manifest["cache"]["misses"] == 0
