"""HFBackend on tiny random-weight GPT-2, Llama and T5 checkpoints built locally (no download)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from ensemble_instruct_lib.engines.base import DecodingParams, cut_at_stop  # noqa: E402
from ensemble_instruct_lib.engines.hf import (  # noqa: E402
    HFBackend,
    local_digest,
    resolve_device,
    resolve_dtype,
    token_budget_batches,
)

pytestmark = pytest.mark.slow  # real (tiny) models: ~15 s for the file on 2 idle cores

ARCHS = ("gpt2", "llama", "t5")
GREEDY = DecodingParams(max_new_tokens=12)
FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="session", autouse=True)
def _two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory, tiny_gpt2_dir, tiny_llama64_dir, tiny_t5_dir) -> dict[str, Path]:
    from transformers import AutoModelForSeq2SeqLM

    # A random T5 keeps repeating its decoder start token (<pad>), which decodes to "". Zero the
    # special tokens' (tied) embedding rows so that it writes visible text the tests can compare
    # (in a copy: the session's T5 stays as built).
    t5_dir = tmp_path_factory.mktemp("tiny_models") / "t5"
    shutil.copytree(tiny_t5_dir, t5_dir)
    t5 = AutoModelForSeq2SeqLM.from_pretrained(t5_dir)
    with torch.no_grad():
        t5.get_output_embeddings().weight[:4] = 0
    t5.save_pretrained(t5_dir)
    return {"gpt2": tiny_gpt2_dir, "llama": tiny_llama64_dir, "t5": t5_dir}


@pytest.fixture(scope="session")
def backends(model_dirs) -> dict[str, HFBackend]:
    return {a: HFBackend(str(d), batch_size=4) for a, d in model_dirs.items()}


@pytest.fixture(scope="session")
def prompts(data_root) -> list[str]:
    """Ten real seed instructions, some with their input: lengths vary from ~20 to ~70 tokens."""
    with open(data_root / "self_instruct" / "seed_tasks.jsonl", encoding="utf-8") as f:
        tasks = [json.loads(line) for line in f][:10]
    out = []
    for i, t in enumerate(tasks):
        inp = t["instances"][0]["input"]
        out.append(t["instruction"] + (f"\ninput: {inp}" if i % 3 == 0 and inp else ""))
    return out


@pytest.fixture(scope="session")
def greedy_batched(backends, prompts):
    return {a: b.generate(prompts, GREEDY) for a, b in backends.items()}


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_greedy_equals_one_at_a_time(arch, backends, prompts, greedy_batched):
    be = backends[arch]
    lengths = [len(x) for x in be.tokenizer(prompts)["input_ids"]]
    assert len(set(lengths)) >= 6  # real padding inside each batch of 4
    batched = greedy_batched[arch]
    single = [be.generate([p], GREEDY)[0] for p in prompts]
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.completion_tokens for g in batched] == [g.completion_tokens for g in single]
    assert sum(bool(g.text) for g in batched) >= 8  # not a comparison of empty strings
    assert len({g.text for g in batched}) >= 3  # distinct answers: the order check means something
    for g, n in zip(batched, lengths, strict=True):
        assert g.prompt_tokens == n  # padding not counted
        assert g.finish_reason == "length" and g.completion_tokens == GREEDY.max_new_tokens


def test_results_follow_input_order(backends, prompts, greedy_batched):
    be = backends["llama"]
    rev = be.generate(prompts[::-1], GREEDY)
    assert [g.text for g in rev] == [g.text for g in greedy_batched["llama"]][::-1]


def _written_stop(gens, start: int = 3) -> str:
    """Two printable ASCII characters the greedy model really wrote (random byte-level models
    also write partial UTF-8, which decodes to U+FFFD and can never match a stop string)."""
    for g in gens:
        m = re.search(r"[!-~]{2}", g.text[start:])
        if m:
            return m.group(0)
    raise AssertionError(f"no printable pair in {[g.text for g in gens]}")


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_stop_strings_end_generation_and_are_cut(arch, backends, prompts, greedy_batched):
    be = backends[arch]
    plain = greedy_batched[arch]
    stop = _written_stop(plain)
    params = DecodingParams(max_new_tokens=GREEDY.max_new_tokens, stop=(stop, "@@never@@"))
    out = be.generate(prompts, params)
    n_stopped = 0
    for p, g in zip(plain, out, strict=True):
        want, found = cut_at_stop(p.text, params.stop)
        assert g.text == want
        if found:
            n_stopped += 1
            assert g.finish_reason == "stop"
            assert g.completion_tokens < GREEDY.max_new_tokens
        else:
            assert g.finish_reason == "length"
    assert n_stopped >= 1


def test_min_new_tokens_delays_the_stop(backends, prompts, greedy_batched):
    be = backends["llama"]
    plain = greedy_batched["llama"][0].text
    stop = _written_stop(greedy_batched["llama"][:1], start=0)
    assert plain.find(stop) < 6
    early = be.generate(prompts[:1], DecodingParams(max_new_tokens=12, stop=(stop,)))[0]
    late = be.generate(
        prompts[:1], DecodingParams(max_new_tokens=12, min_new_tokens=10, stop=(stop,))
    )[0]
    assert early.finish_reason == "stop" and early.completion_tokens < 10
    assert late.completion_tokens >= 10
    assert late.text == early.text == cut_at_stop(plain, (stop,))[0]


def test_eos_ends_generation_with_stop_reason(model_dirs, prompts, greedy_batched):
    be = HFBackend(str(model_dirs["llama"]), batch_size=4)
    first = be.tokenizer(greedy_batched["llama"][0].text)["input_ids"][0]
    be.model.generation_config.eos_token_id = [be.tokenizer.eos_token_id, first]
    g = be.generate(prompts[:1], GREEDY)[0]
    assert g.finish_reason == "stop" and g.completion_tokens == 1


def test_max_new_tokens_gives_length(backends, prompts):
    out = backends["gpt2"].generate(prompts[:3], DecodingParams(max_new_tokens=3))
    assert [(g.finish_reason, g.completion_tokens) for g in out] == [("length", 3)] * 3


def test_sampling_reproducible_and_sample_index_matters(backends, prompts):
    be = backends["llama"]
    params = DecodingParams(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=10)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = be.generate(prompts[:4], params, sample_indices=[0, 0, 0, 0])
    assert torch.equal(torch.rand(1), expected_next)  # the caller's RNG stream is left alone
    b = be.generate(prompts[:4], params, sample_indices=[0, 0, 0, 0])
    c = be.generate(prompts[:4], params, sample_indices=[1, 1, 1, 1])
    d = be.generate(prompts[:4], DecodingParams(**{**params.to_dict(), "seed": 1}))
    assert [g.text for g in a] == [g.text for g in b]
    assert [g.text for g in a] != [g.text for g in c]
    assert [g.text for g in a] != [g.text for g in d]


@pytest.mark.parametrize("arch", ["gpt2", "t5"])
def test_chat_mode_renders_the_template(arch, backends, prompts):
    be = backends[arch]
    rendered = be.render(prompts[1], chat=True)
    assert rendered == f"<|user|>\n{prompts[1]}\n<|assistant|>\n"
    chat = be.generate(prompts[1:2], DecodingParams(max_new_tokens=6, chat=True))[0]
    raw = be.generate([rendered], DecodingParams(max_new_tokens=6))[0]
    assert (chat.text, chat.prompt_tokens) == (raw.text, raw.prompt_tokens)
    assert chat.prompt_tokens > len(be.tokenizer(prompts[1])["input_ids"])


def test_chat_without_template_is_a_clear_error(model_dirs):
    be = HFBackend(str(model_dirs["gpt2"]))
    be.tokenizer.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        be.generate(["hi"], DecodingParams(chat=True))


def test_describe_and_local_revision(backends, model_dirs):
    d = backends["gpt2"].describe()
    assert d["backend"] == "hf" and d["model_id"] == str(model_dirs["gpt2"])
    # "auto" picks the machine's accelerator: float32 on CPU, bfloat16 on CUDA (seen on an H200)
    device = resolve_device("auto")
    assert d["device"] == device
    assert d["dtype"] == str(resolve_dtype("auto", device)).removeprefix("torch.")
    assert device != "cpu" or d["dtype"] == "float32"
    assert d["revision"] == local_digest(model_dirs["gpt2"]).strip()
    assert d["revision"].startswith("local-")
    assert backends["t5"].describe()["encoder_decoder"] is True
    assert backends["llama"].describe()["revision"] != d["revision"]


def test_empty_prompt_rejected_for_decoder_only(backends):
    with pytest.raises(ValueError, match="prompt 1 encodes to no tokens"):
        backends["gpt2"].generate(["ok", ""], GREEDY)


def test_hub_id_loads_through_the_same_path(tmp_path, model_dirs, backends, prompts, monkeypatch):
    """A hub id resolved from a (fake, offline) hub cache: same weights, revision = the commit."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    repo = tmp_path / "hub" / "models--tiny-org--tiny-gpt2"
    snapshot = repo / "snapshots" / FAKE_COMMIT
    snapshot.mkdir(parents=True)
    for f in model_dirs["gpt2"].iterdir():
        shutil.copy(f, snapshot / f.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(FAKE_COMMIT)
    be = HFBackend("tiny-org/tiny-gpt2", cache_dir=str(tmp_path / "hub"), batch_size=4)
    assert be.revision == FAKE_COMMIT
    assert be.describe()["model_id"] == "tiny-org/tiny-gpt2"
    out = be.generate(prompts[:4], GREEDY)
    assert [g.text for g in out] == [g.text for g in backends["gpt2"].generate(prompts[:4], GREEDY)]
    pinned = HFBackend("tiny-org/tiny-gpt2", revision="main", cache_dir=str(tmp_path / "hub"))
    assert pinned.revision == FAKE_COMMIT  # a branch name is pinned to the commit it points to


def test_token_budget_batches_hand_worked():
    # sorted longest first: 3000, 1500, 1400, 1400, 1300, 100 (indices 2, 0, 3, 5, 1, 4)
    lengths = [1500, 1300, 3000, 1400, 100, 1400]
    assert token_budget_batches(lengths, 8, None) == [[2, 0, 3, 5, 1, 4]]
    # 2 rows x 3000 = 6000 fits 6000; a third row would make 9000
    assert token_budget_batches(lengths, 8, 6000) == [[2, 0], [3, 5, 1, 4]]
    # one long prompt does not set the padding of the others
    assert token_budget_batches(lengths, 8, 4500) == [[2], [0, 3, 5], [1, 4]]
    assert token_budget_batches(lengths, 2, 10**6) == [[2, 0], [3, 5], [1, 4]]
    # a prompt over the budget runs alone; every index appears exactly once
    assert token_budget_batches(lengths, 8, 1000) == [[2], [0], [3], [5], [1], [4]]
    assert token_budget_batches([], 8, 100) == []


def test_token_budget_keeps_greedy_results(model_dirs, prompts, greedy_batched):
    """A budget that splits the batches of 4 into smaller ones changes no greedy result."""
    for arch in ("llama", "t5"):
        be = HFBackend(str(model_dirs[arch]), batch_size=4, max_batch_tokens=100)
        lengths = [len(x) for x in be.tokenizer(prompts)["input_ids"]]
        batches = token_budget_batches(lengths, 4, 100)
        assert len(batches) > len(token_budget_batches(lengths, 4, None))
        assert any(len(b) > 1 for b in batches)  # still batched, with padding
        out = be.generate(prompts, GREEDY)
        assert [g.text for g in out] == [g.text for g in greedy_batched[arch]]
        assert [g.prompt_tokens for g in out] == lengths
        assert be.describe()["max_batch_tokens"] == 100


def test_bad_arguments(model_dirs):
    with pytest.raises(ValueError, match="batch_size"):
        HFBackend(str(model_dirs["gpt2"]), batch_size=0)
    with pytest.raises(ValueError, match="max_batch_tokens"):
        HFBackend(str(model_dirs["gpt2"]), max_batch_tokens=0)
    with pytest.raises(ValueError, match="dtype"):
        HFBackend(str(model_dirs["gpt2"]), dtype="float8")


def test_factory_and_cache_over_a_real_model(tmp_path, model_dirs, prompts):
    from ensemble_instruct_lib.engines import make_backend
    from ensemble_instruct_lib.engines.cache import CachedBackend

    be = make_backend({"kind": "hf", "model": str(model_dirs["llama"]), "batch_size": 2})
    assert isinstance(be, HFBackend) and be.batch_size == 2
    cached = CachedBackend(be, tmp_path / "calls.sqlite")
    first = cached.generate(prompts[:5], GREEDY)
    second = cached.generate(prompts[:5], GREEDY)
    assert [g.text for g in first] == [g.text for g in second]
    assert cached.stats() == {"hits": 5, "misses": 5} and all(g.cached for g in second)
    assert cached.revision == be.revision.strip() and cached.describe() == be.describe()


def test_prompt_longer_than_the_context_is_a_clear_error(tiny_gpt2_short_dir):
    backend = HFBackend(str(tiny_gpt2_short_dir))
    assert backend.context_length == 64
    ok = backend.generate(["a short prompt"], DecodingParams(max_new_tokens=8))
    assert len(ok) == 1
    with pytest.raises(ValueError, match="does not fit .* context of 64 tokens"):
        backend.generate(["word " * 80], DecodingParams(max_new_tokens=8))
