"""VLLMBackend: decoding-parameter mapping (always) and a real vLLM engine on a tiny Llama (extra).

The engine tests need the vllm extra (`pip install -r requirements-vllm.txt`) and are skipped
without it. They compare vLLM's greedy output with `transformers`' on the same random-weight
checkpoint: the generated token ids are identical; the texts are identical except that vLLM's
incremental detokenizer withholds a trailing incomplete UTF-8 character (HF decodes it as U+FFFD),
which random byte-level BPE models hit often and real models rarely.

One module-scoped engine runs in-process (`multiprocessing=False`, ~3 s start); one test runs the
default spawned-engine mode the way a user script does (a `__main__` guard, ~45 s on 2 cores).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ensemble_instruct_lib.engines.base import DecodingParams
from ensemble_instruct_lib.engines.vllm_engine import (
    DEFAULT_CPU_KVCACHE_GIB,
    VLLMBackend,
    finish_reason,
    sampling_kwargs,
)

N_TOKENS = 48
GREEDY = DecodingParams(max_new_tokens=N_TOKENS)
FFFD = "\ufffd"


def prompts_from_seeds(data_root: Path, n: int = 16) -> list[str]:
    """Stage-2 style prompts of varied lengths built from the seed tasks."""
    path = data_root / "self_instruct" / "seed_tasks.jsonl"
    tasks = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:n]]
    return [
        f"instruction: {t['instruction']}\ninput: {t['instances'][0]['input']}\noutput:"
        for t in tasks
    ]


def same_up_to_trailing_fffd(hf_text: str, vllm_text: str) -> bool:
    return hf_text == vllm_text or hf_text.rstrip(FFFD) == vllm_text.rstrip(FFFD)


# ---- pure mapping: runs without vLLM ---------------------------------------------------------


def test_greedy_maps_to_temperature_zero_without_seed():
    kw = sampling_kwargs(DecodingParams(max_new_tokens=7, min_new_tokens=2, stop=("|EoS|",)), 3)
    assert kw == {
        "max_tokens": 7,
        "min_tokens": 2,
        "n": 1,
        "stop": ["|EoS|"],
        "temperature": 0.0,
        "top_k": -1,
        "top_p": 1.0,
    }


def test_sampling_maps_one_to_one_with_per_sample_seed():
    p = DecodingParams(do_sample=True, temperature=0.7, top_k=50, top_p=0.9, seed=11)
    assert sampling_kwargs(p, 0)["seed"] == 11
    kw = sampling_kwargs(p, 4)
    assert (kw["temperature"], kw["top_k"], kw["top_p"], kw["seed"]) == (0.7, 50, 0.9, 15)
    assert "stop" not in kw
    assert sampling_kwargs(DecodingParams(do_sample=True, top_k=0), 0)["top_k"] == -1


def test_finish_reasons_mapped():
    assert [finish_reason(r) for r in ("stop", "length", "abort", None)] == [
        "stop",
        "length",
        "error",
        "error",
    ]


def test_arguments_validated_and_engine_lazy(tmp_path):
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        VLLMBackend(str(tmp_path), tensor_parallel_size=0)
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        VLLMBackend(str(tmp_path), gpu_memory_utilization=1.5)
    be = VLLMBackend(str(tmp_path), dtype="float32", max_model_len=512, enforce_eager=True)
    assert be._llm is None  # nothing started yet
    args = be.engine_args()
    assert args["max_model_len"] == 512 and args["enforce_eager"] is True
    assert "gpu_memory_utilization" not in args and "revision" not in args
    assert be.describe()["backend"] == "vllm"
    be.close()


def test_factory_builds_vllm_backend_lazily(tmp_path):
    pytest.importorskip("vllm")
    from ensemble_instruct_lib.engines.factory import make_backend

    be = make_backend({"kind": "vllm", "model": str(tmp_path), "dtype": "float32"})
    assert isinstance(be, VLLMBackend) and be._llm is None


def test_unsupported_cpu_head_size_fails_early_and_clearly(request):
    pytest.importorskip("vllm")
    from ensemble_instruct_lib.engines.vllm_engine import _is_cpu_build

    if not _is_cpu_build():
        pytest.skip("a GPU build of vLLM supports other head sizes")
    d = request.getfixturevalue("tiny_llama64_dir")  # 4 heads: head size 16
    be = VLLMBackend(str(d), dtype="float32", multiprocessing=False)
    with pytest.raises(ValueError, match="head size 16"):
        be.generate(["hi"], DecodingParams(max_new_tokens=2))
    assert be._llm is None


# ---- a real engine ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llama(tiny_llama_dir) -> Path:
    pytest.importorskip("vllm")
    return tiny_llama_dir


@pytest.fixture(scope="module")
def engine(tiny_llama):
    be = VLLMBackend(
        str(tiny_llama),
        dtype="float32",
        max_model_len=1024,
        multiprocessing=False,
        enforce_eager=True,
    )
    yield be
    be.close()


@pytest.fixture(scope="module")
def hf(tiny_llama):
    from ensemble_instruct_lib.engines.hf import HFBackend

    be = HFBackend(str(tiny_llama), dtype="float32", batch_size=8)
    yield be
    be.close()


@pytest.fixture(scope="module")
def prompts(data_root) -> list[str]:
    return prompts_from_seeds(data_root)


@pytest.fixture(scope="module")
def vllm_greedy(engine, prompts):
    return engine.generate(prompts, GREEDY)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_greedy_token_ids_equal_transformers(engine, hf, prompts):
    import torch
    from vllm import SamplingParams

    outs = engine.llm.generate(
        prompts, SamplingParams(temperature=0.0, max_tokens=N_TOKENS), use_tqdm=False
    )
    for prompt, out in zip(prompts, outs, strict=True):
        enc = hf.tokenizer(prompt, return_tensors="pt")
        assert list(out.prompt_token_ids) == enc["input_ids"][0].tolist()
        with torch.no_grad():
            ids = hf.model.generate(
                **enc,
                do_sample=False,
                max_new_tokens=N_TOKENS,
                pad_token_id=hf.tokenizer.pad_token_id,
            )
        assert list(out.outputs[0].token_ids) == ids[0, enc["input_ids"].shape[1] :].tolist()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_greedy_texts_equal_hf_backend(vllm_greedy, hf, prompts):
    hf_out = hf.generate(prompts, GREEDY)
    exact = 0
    for h, v in zip(hf_out, vllm_greedy, strict=True):
        assert (v.completion_tokens, v.finish_reason) == (h.completion_tokens, h.finish_reason)
        assert v.prompt_tokens == h.prompt_tokens
        assert same_up_to_trailing_fffd(h.text, v.text), (h.text, v.text)
        if not h.text.endswith(FFFD):
            assert h.text == v.text
        exact += h.text == v.text
    assert exact >= len(prompts) // 2


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_results_in_input_order(engine, prompts, vllm_greedy):
    order = list(range(len(prompts)))[::-1]
    again = engine.generate([prompts[i] for i in order], GREEDY)
    assert [g.text for g in again] == [vllm_greedy[i].text for i in order]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_stop_string_cut_and_finish_reason(engine, prompts, vllm_greedy):
    checked = 0
    for prompt, full in zip(prompts, vllm_greedy, strict=True):
        text = full.text
        candidates = [text[i : i + 3] for i in range(4, len(text) - 3)]
        stop = next((s for s in candidates if s.isascii() and s.strip() == s and s.isalnum()), None)
        if stop is None:
            continue
        [g] = engine.generate([prompt], DecodingParams(max_new_tokens=N_TOKENS, stop=(stop,)))
        assert g.text == text[: text.find(stop)]
        assert g.finish_reason == "stop"
        assert g.completion_tokens < full.completion_tokens
        checked += 1
    assert checked >= 4


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_max_tokens_gives_length(engine, prompts, vllm_greedy):
    long_ones = [
        p for p, g in zip(prompts, vllm_greedy, strict=True) if g.finish_reason == "length"
    ]
    assert long_ones, "every greedy output hit EOS: pick other prompts"
    out = engine.generate(long_ones, DecodingParams(max_new_tokens=5))
    assert all(g.finish_reason == "length" and g.completion_tokens == 5 for g in out)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_min_new_tokens_delays_stop(engine, prompts, vllm_greedy):
    prompt, full = prompts[0], vllm_greedy[0].text
    stop = full[1:3]
    [early] = engine.generate([prompt], DecodingParams(max_new_tokens=N_TOKENS, stop=(stop,)))
    [late] = engine.generate(
        [prompt], DecodingParams(max_new_tokens=N_TOKENS, min_new_tokens=20, stop=(stop,))
    )
    assert early.completion_tokens < 20 <= late.completion_tokens


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_seeded_sampling_reproducible_and_distinct(engine, prompts):
    p = DecodingParams(do_sample=True, temperature=1.0, top_k=50, max_new_tokens=24, seed=5)
    few = prompts[:4]
    a = engine.generate(few, p, sample_indices=[0, 1, 2, 3])
    b = engine.generate(few, p, sample_indices=[0, 1, 2, 3])
    assert [g.text for g in a] == [g.text for g in b]
    # A request's sample depends on its own seed only, not on the rest of the batch.
    [alone] = engine.generate([few[2]], p, sample_indices=[2])
    assert alone.text == a[2].text
    same_prompt = engine.generate([few[0]] * 4, p, sample_indices=[0, 1, 2, 3])
    assert same_prompt[0].text == a[0].text
    assert len({g.text for g in same_prompt}) > 1
    other_seed = engine.generate(few, dataclasses.replace(p, seed=6))
    assert [g.text for g in other_seed] != [g.text for g in a]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_chat_uses_the_template_like_hf(engine, hf, prompts):
    params = DecodingParams(max_new_tokens=24, chat=True)
    v = engine.generate(prompts[:6], params)
    h = hf.generate(prompts[:6], params)
    for a, b in zip(h, v, strict=True):
        assert a.prompt_tokens == b.prompt_tokens
        assert same_up_to_trailing_fffd(a.text, b.text), (a.text, b.text)


SCRIPT = """
import json, sys
from ensemble_instruct_lib.engines.base import DecodingParams
from ensemble_instruct_lib.engines.vllm_engine import VLLMBackend


def main():
    be = VLLMBackend(sys.argv[1], dtype="float32", max_model_len=1024)
    prompts = json.loads(open(sys.argv[2]).read())
    out = be.generate(prompts, DecodingParams(max_new_tokens={n}))
    print("RESULT " + json.dumps([g.text for g in out]), flush=True)
    be.close()


if __name__ == "__main__":
    main()
"""


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_default_spawned_engine_in_a_guarded_script(tiny_llama, prompts, vllm_greedy, tmp_path):
    script = tmp_path / "run_vllm.py"
    script.write_text(textwrap.dedent(SCRIPT.format(n=N_TOKENS)), encoding="utf-8")
    (tmp_path / "prompts.json").write_text(json.dumps(prompts[:8]), encoding="utf-8")
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(DEFAULT_CPU_KVCACHE_GIB)}
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    proc = subprocess.run(
        [sys.executable, str(script), str(tiny_llama), str(tmp_path / "prompts.json")],
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
        cwd=tmp_path,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    assert json.loads(line[len("RESULT ") :]) == [g.text for g in vllm_greedy[:8]]
