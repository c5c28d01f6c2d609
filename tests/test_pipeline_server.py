"""Pipeline stages 2-4 through a REAL OpenAI-compatible server (`transformers serve` on 127.0.0.1).

Stage 3 (and so stage 4) runs with a served tiny Llama as one extra model and the same checkpoint
in process as the other: greedy outputs must be equal, every valid instance must get an answer,
and a re-run must send no request. Stage 2 runs with the served model as the generator (sampling,
with the extra fields `transformers serve` rejects removed, as docs/engines.md says to).
"""

from __future__ import annotations

import pytest

from ensemble_instruct_lib.data.jsonl import read_jsonl
from ensemble_instruct_lib.method.run_files import STAGE2
from ensemble_instruct_lib.runs.config import load_config
from ensemble_instruct_lib.runs.pipeline import run
from ensemble_instruct_lib.testing.fake import fake_generator
from ensemble_instruct_lib.testing.servers import LocalServer, missing_requirement

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def served(tiny_llama_dir):
    reason = missing_requirement("transformers")
    if reason:
        pytest.skip(reason)
    model = tiny_llama_dir
    with LocalServer(model, "transformers", dtype="float32", startup_timeout=300) as srv:
        yield srv, model


def _openai(srv, name, **extra):
    options = {
        "base_urls": [srv.base_url],
        "api_key_env": "EI_TEST_NO_KEY",
        "max_retries": 2,
        "timeout": 120.0,
        "max_concurrency": 4,
        **extra,
    }
    return {"kind": "openai", "model": srv.model, "name": name, "options": options}


def test_stages_3_and_4_through_the_server(served, tmp_path):
    srv, model = served
    cfg = load_config(
        {
            "name": "served",
            "num_instructions": 3,
            "generator": {"kind": "scripted", "model": "gen"},
            "extra_models": [
                _openai(srv, "served-llama"),
                {
                    "kind": "hf",
                    "model": str(model),
                    "name": "local-llama",
                    "options": {"dtype": "float32"},
                },
            ],
            "output": {"max_new_tokens": 16},
        }
    )
    res = run(cfg, tmp_path, backends={"gen": fake_generator("gen")}, progress=False)
    valid = [r for r in read_jsonl(tmp_path / STAGE2) if r["valid"]]
    served_out = read_jsonl(tmp_path / "stage3_outputs_served-llama.jsonl")
    local_out = read_jsonl(tmp_path / "stage3_outputs_local-llama.jsonl")
    assert len(valid) > 0
    assert [r["id"] for r in served_out] == [r["id"] for r in valid]
    assert [r["raw"] for r in served_out] == [r["raw"] for r in local_out]  # greedy, same weights
    kept = read_jsonl(tmp_path / "ensembled.jsonl")
    dropped = read_jsonl(tmp_path / "dropped.jsonl")
    assert len(kept) + len(dropped) == len(valid)
    assert res.manifest["models"]["served-llama"]["backend"] == "openai"
    again = run(cfg, tmp_path, backends={"gen": fake_generator("gen")}, progress=False)
    assert again.manifest["cache"] == {"hits": 0, "misses": 0}


def test_stage_2_through_the_server(served, tmp_path):
    srv, _ = served
    gen = _openai(srv, "served-gen", extra_body={"top_k": None, "min_tokens": None})
    cfg = load_config(
        {
            "name": "served-gen",
            "num_instructions": 2,
            "generator": gen,
            "extra_models": [_openai(srv, "served-extra")],
            "instance": {"max_new_tokens": 24},
            "output": {"max_new_tokens": 8},
        }
    )
    # stage 1 from a fake LM (a random tiny model rarely writes a usable instruction) ...
    run(cfg, tmp_path, backends={"served-gen": fake_generator("gen")}, progress=False, stages=(1,))
    # ... then stages 2-4 with the served model as generator and extra model
    res = run(cfg, tmp_path, progress=False, stages=(2, 3, 4))
    stage2 = read_jsonl(tmp_path / STAGE2)
    assert len(stage2) == 4 and all(isinstance(r["raw"], str) for r in stage2)
    assert {r["finish_reason"] for r in stage2} <= {"stop", "length"}
    assert res.manifest["cache"]["misses"] >= 4
    assert res.manifest["status"] == "done"
