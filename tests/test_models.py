"""Known models by name (engines/models.py): resolution, fetch and convert, and every bad model value
a user can write, each of which must end in one line that says what to do (never a traceback).

The real package and conversion are exercised by the slow test at the end (a session fixture that
reuses $EI_MODEL_CACHE / ~/.cache/ensemble_instruct/models across sessions); the rest uses a fake
known model whose "package" is a module written into tmp_path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import textwrap

import pytest

from ensemble_instruct_lib.cli import main
from ensemble_instruct_lib.engines import models as M
from ensemble_instruct_lib.engines.factory import make_backend
from ensemble_instruct_lib.errors import ConfigError
from ensemble_instruct_lib.runs.config import load_config
from ensemble_instruct_lib.runs.export import dataset_card
from ensemble_instruct_lib.testing.real_models import missing_real_models

PAYLOAD = b"GGUF fake weights " * 1000


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    """A known model `fake-1m` whose package `ei_fake_gguf_pkg` assembles PAYLOAD."""
    pkg = tmp_path / "site"
    pkg.mkdir()
    (pkg / "ei_fake_gguf_pkg.py").write_text(
        textwrap.dedent(
            f"""
            from pathlib import Path
            CALLS = []
            def assemble(output_path, overwrite=False):
                CALLS.append(str(output_path))
                Path(output_path).write_bytes({PAYLOAD!r})
                return Path(output_path)
            """
        )
    )
    monkeypatch.syspath_prepend(str(pkg))
    sys.modules.pop("ei_fake_gguf_pkg", None)
    km = M.KnownModel(
        name="fake-1m",
        package="ei-fake-gguf-pkg",
        module="ei_fake_gguf_pkg",
        gguf_file="fake.gguf",
        gguf_sha256=hashlib.sha256(PAYLOAD).hexdigest(),
        upstream="nobody/fake",
        licence="Fake Licence",
        summary="a fake",
    )
    monkeypatch.setitem(M.KNOWN_MODELS, "fake-1m", km)
    monkeypatch.setenv(M.MODEL_CACHE_ENV, str(tmp_path / "cache"))
    yield km
    sys.modules.pop("ei_fake_gguf_pkg", None)


def _fake_convert(gguf, out):
    (out / "config.json").write_text("{}")
    return {"dtype": "bfloat16", "transformers": "fake"}


def _one_line(err: BaseException | str) -> str:
    text = str(err)
    assert "\n" not in text.strip(), text
    assert "Traceback" not in text
    return text


# ------------------------------------------------------------------------------------------
# cache dir, fetch, convert


def test_cache_dir_from_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv(M.MODEL_CACHE_ENV, str(tmp_path / "x"))
    assert M.model_cache_dir() == tmp_path / "x"
    monkeypatch.delenv(M.MODEL_CACHE_ENV)
    assert M.model_cache_dir().parts[-3:] == (".cache", "ensemble_instruct", "models")
    assert M.model_cache_dir(tmp_path) == tmp_path


def test_gguf_is_assembled_once_and_checked(fake_model, tmp_path):
    path = M.gguf_path("fake-1m")
    assert path == tmp_path / "cache" / "fake-1m" / "gguf" / "fake.gguf"
    assert path.read_bytes() == PAYLOAD
    assert not list(path.parent.glob(".*tmp*"))  # assembled under a temporary name, renamed
    pkg = sys.modules["ei_fake_gguf_pkg"]
    assert len(pkg.CALLS) == 1
    M.gguf_path("fake-1m")
    assert len(pkg.CALLS) == 1  # reused
    path.write_bytes(b"tampered")  # a wrong digest is replaced, not trusted
    assert M.gguf_path("fake-1m").read_bytes() == PAYLOAD
    assert len(pkg.CALLS) == 2


def test_a_package_that_assembles_the_wrong_bytes_is_rejected(fake_model, monkeypatch):
    monkeypatch.setitem(
        M.KNOWN_MODELS, "fake-1m", M.KnownModel(**{**fake_model.__dict__, "gguf_sha256": "0" * 64})
    )
    with pytest.raises(ConfigError, match="not the pinned") as e:
        M.gguf_path("fake-1m")
    _one_line(e.value)
    assert not M.gguf_target("fake-1m").exists()


def test_a_given_gguf_copy_is_checked_and_used_without_the_package(
    fake_model, monkeypatch, tmp_path
):
    monkeypatch.setattr(M, "package_installed", lambda km: False)  # a machine without the registry
    good, bad = tmp_path / "copy.gguf", tmp_path / "partial.gguf"
    good.write_bytes(PAYLOAD)
    bad.write_bytes(PAYLOAD[:-1])
    with pytest.raises(ConfigError, match="not the pinned") as e:
        M.gguf_path("fake-1m", source=bad)
    assert str(bad) in _one_line(e.value)
    with pytest.raises(ConfigError, match="no such file"):
        M.gguf_path("fake-1m", source=tmp_path / "missing.gguf")
    assert not M.gguf_target("fake-1m").exists()
    path = M.gguf_path("fake-1m", source=good)
    assert path == M.gguf_target("fake-1m") and path.read_bytes() == PAYLOAD
    assert "ei_fake_gguf_pkg" not in sys.modules  # the package was never imported
    assert M.gguf_path("fake-1m", fetch=False) == path  # found afterwards like a fetched one


def test_missing_package_names_the_install_command(fake_model, monkeypatch):
    monkeypatch.setattr(M, "package_installed", lambda km: False)
    with pytest.raises(ConfigError) as e:
        M.resolve_model("hf", "fake-1m")
    msg = _one_line(e.value)
    assert "ei-fake-gguf-pkg" in msg and "ensemble-instruct[offline-model]" in msg
    assert "requirements.txt" in msg and "models fetch fake-1m" in msg


def test_conversion_is_atomic_and_reused(fake_model, monkeypatch):
    def broken(gguf, out):
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt  # interrupted half-way

    monkeypatch.setattr(M, "_convert", broken)
    with pytest.raises(KeyboardInterrupt):
        M.transformers_dir("fake-1m")
    target = M.transformers_target("fake-1m")
    assert not target.exists()
    assert not list(target.parent.glob(".transformers.tmp-*"))
    with pytest.raises(ConfigError, match="models fetch fake-1m"):
        M.transformers_dir("fake-1m", fetch=False)

    calls = []
    monkeypatch.setattr(M, "_convert", lambda g, o: calls.append(g) or _fake_convert(g, o))
    folder = M.transformers_dir("fake-1m")
    assert folder == target and (folder / "config.json").exists()
    info = json.loads((folder / M.MARKER).read_text())
    assert info["gguf_sha256"] == fake_model.gguf_sha256 and info["licence"] == "Fake Licence"
    assert M.transformers_dir("fake-1m") == folder and len(calls) == 1  # reused
    assert M.resolve_model("vllm", "fake-1m") == str(folder)
    assert M.resolve_model("llama_cpp", "fake-1m") == str(M.gguf_target("fake-1m"))


def test_a_folder_without_a_valid_marker_is_converted_again(fake_model, monkeypatch):
    target = M.transformers_target("fake-1m")
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # looks like a checkpoint, but no marker
    monkeypatch.setattr(M, "_convert", _fake_convert)
    M.transformers_dir("fake-1m")
    assert (target / M.MARKER).exists()


def _tokenizer_convert(source):
    """A `_convert` that writes `source`'s tokenizer (as a conversion writes the GGUF's)."""

    def convert(gguf, out):
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(out))
        return _fake_convert(gguf, out)

    return convert


@pytest.mark.slow
def test_a_converted_tokenizer_must_encode_the_probe_as_pinned(
    fake_model, monkeypatch, tiny_gpt2_dir
):
    from transformers import AutoTokenizer

    text = "Write a poem about the sea."
    ids = tuple(AutoTokenizer.from_pretrained(str(tiny_gpt2_dir))(text)["input_ids"])
    assert len(ids) > 3
    monkeypatch.setattr(M, "_convert", _tokenizer_convert(tiny_gpt2_dir))
    # a transformers version that builds another tokenizer (pinned ids differ): refused, and the
    # folder is not kept, so the next fetch converts again
    wrong = M.KnownModel(**{**fake_model.__dict__, "probe_text": text, "probe_ids": ids[::-1]})
    monkeypatch.setitem(M.KNOWN_MODELS, "fake-1m", wrong)
    with pytest.raises(ConfigError) as e:
        M.transformers_dir("fake-1m")
    msg = _one_line(e.value)
    assert "transformers" in msg and "models fetch fake-1m" in msg and str(list(ids[::-1])) in msg
    assert not M.transformers_target("fake-1m").exists()
    # the right ids: converted, and the marker remembers the check
    right = M.KnownModel(**{**fake_model.__dict__, "probe_text": text, "probe_ids": ids})
    monkeypatch.setitem(M.KNOWN_MODELS, "fake-1m", right)
    folder = M.transformers_dir("fake-1m")
    marker = folder / M.MARKER
    assert json.loads(marker.read_text())["tokenizer_probe"] == list(ids)
    # a folder converted before the check existed is checked once, in place, not converted again
    info = json.loads(marker.read_text())
    del info["tokenizer_probe"]
    marker.write_text(json.dumps(info))
    monkeypatch.setattr(M, "_convert", lambda g, o: pytest.fail("converted again"))
    assert M.transformers_dir("fake-1m") == folder
    assert json.loads(marker.read_text())["tokenizer_probe"] == list(ids)


# ------------------------------------------------------------------------------------------
# resolving a config's model value


def test_paths_and_hub_ids_pass_through(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    assert M.resolve_model("hf", str(folder)) == str(folder)
    assert M.resolve_model("hf", "google/flan-t5-xxl") == "google/flan-t5-xxl"
    assert M.resolve_model("hf", "gpt2") == "gpt2"
    for kind in ("openai", "recorded", "scripted"):  # served or recorded names: untouched
        assert M.resolve_model(kind, "/not/a/path") == "/not/a/path"
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x")
    assert M.resolve_model("llama_cpp", str(gguf)) == str(gguf)
    (folder / "only.gguf").write_bytes(b"x")
    assert M.resolve_model("llama_cpp", str(folder)) == str(folder / "only.gguf")


@pytest.mark.parametrize("value", ["gpt2", "google/flan-t5-xxl", "tiiuae/falcon-40b", "a.b-c_d"])
def test_plausible_hub_ids(value):
    assert M.looks_like_hub_id(value)


@pytest.mark.parametrize("value", ["a/b/c", "/abs", "x--y", "a..b", "-x", "has space", "m.gguf"])
def test_implausible_hub_ids(value):
    assert not M.looks_like_hub_id(value)


BAD = [
    ("hf", "/nonexistent/model", "not an existing file or folder"),
    ("hf", "outputs/tiny-models/gpt2", "make-tiny-models"),
    ("hf", "./relative/ckpt", "relative paths start from"),
    ("hf", "not a model!", "neither a known model name"),
    ("llama_cpp", "gemma-3-270", "did you mean 'gemma-3-270m'"),
    ("llama_cpp", "/nonexistent/model.gguf", "nor an existing GGUF file"),
    ("llama_cpp", "google/gemma-3-270m", "nor an existing GGUF file"),
]


@pytest.mark.parametrize(("kind", "value", "says"), BAD)
def test_bad_model_values_are_one_line(kind, value, says):
    with pytest.raises(ConfigError) as e:
        M.resolve_model(kind, value)
    msg = _one_line(e.value)
    assert value in msg and says in msg


def test_resolution_errors_name_the_config_file_and_field(tmp_path):
    with pytest.raises(ConfigError) as e:
        make_backend(
            {"kind": "hf", "model": "/nonexistent/model"}, where="cfg.yaml: extra_models[1].model"
        )
    assert str(e.value).startswith("cfg.yaml: extra_models[1].model: model '/nonexistent/model'")
    _one_line(e.value)
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text(
        "generator: {kind: hf, model: /nonexistent/model}\n"
        "extra_models:\n"
        "  - {kind: recorded, model: a}\n"
        "  - {kind: hf, model: /nonexistent/other, name: other}\n"
    )
    cfg = load_config(cfg_file)
    assert cfg.generator.where == f"{cfg_file}, line 1: generator.model"
    assert cfg.extra_models[1].where == f"{cfg_file}, line 4: extra_models[1].model"


def test_the_run_command_prints_one_line_for_a_missing_model(tmp_path, capsys, data_root):
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text("name: bad\ngenerator: {kind: hf, model: /nonexistent/model}\n")
    rc = main(["run", "--config", str(cfg_file), "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert f"{cfg_file}, line 2: generator.model: model '/nonexistent/model'" in err


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs the hf extra")
def test_an_unreachable_hub_id_is_one_line(monkeypatch):
    from ensemble_instruct_lib.engines.hf import HFBackend

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as e:
        HFBackend("ei-nobody/no-such-model-xyz")
    msg = _one_line(e.value)
    assert "'ei-nobody/no-such-model-xyz' could not be loaded" in msg
    assert "models list" in msg
    with pytest.raises(ConfigError) as e:
        make_backend({"kind": "hf", "model": "gemma-3-270"}, where="c.yaml: generator.model")
    msg = _one_line(e.value)
    assert msg.startswith("c.yaml: generator.model: ") and "did you mean 'gemma-3-270m'" in msg


def test_a_missing_llama_cpp_names_the_install_command(monkeypatch):
    from ensemble_instruct_lib.engines import factory

    real = importlib.util.find_spec
    monkeypatch.setattr(
        factory.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llama_cpp" else real(name, *a),
    )
    with pytest.raises(ImportError) as e:
        make_backend({"kind": "llama_cpp", "model": "gemma-3-270m"})
    msg = _one_line(e.value)
    assert "llama-cpp-python" in msg and "ensemble-instruct[llama-cpp]" in msg


# ------------------------------------------------------------------------------------------
# CLI and dataset card


def test_models_list_and_fetch_commands(fake_model, monkeypatch, capsys):
    monkeypatch.setattr(M, "_convert", _fake_convert)
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "gemma-3-270m" in out and "Gemma Terms of Use" in out and "fake-1m" in out
    assert main(["models", "fetch", "fake-1m"]) == 0
    out = capsys.readouterr().out
    assert str(M.transformers_target("fake-1m")) in out and "model: fake-1m" in out
    assert main(["models", "fetch", "no-such-model"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown model name 'no-such-model'") and "\n" not in err


def test_dataset_card_states_the_gemma_licence():
    spec = {"name": "g", "kind": "llama_cpp", "model": "gemma-3-270m", "prompt_style": "few_shot"}
    manifest = {
        "config": {
            "name": "r",
            "seed": 0,
            "task_types": ["A"],
            "num_instructions": 1,
            "generator": {**spec, "kind": "hf", "name": "gen"},
            "extra_models": [spec],
            "consensus": {"threshold": 0.01, "rule": "sum"},
            "instruction": {},
            "instance": {},
            "output": {},
        }
    }
    card = dataset_card(manifest, 1, 1)
    assert card.count("Gemma Terms of Use") == 1 and "gemma-3-270m" in card
    manifest["config"]["generator"]["model"] = "gpt2"
    manifest["config"]["extra_models"] = []
    assert "Gemma" not in dataset_card(manifest, 1, 1)


# ------------------------------------------------------------------------------------------
# the real model (slow): the converted folder through the HF backend, by name


@pytest.fixture(scope="session")
def gemma_converted():
    if reason := missing_real_models("gemma-3-270m", llama_cpp=False):
        pytest.skip(reason)
    for module in ("torch", "transformers", "gguf"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(
                f"{module} is not installed: pip install 'ensemble-instruct[hf,offline-model]'"
            )
    return M.transformers_dir("gemma-3-270m")  # converted once, reused across sessions


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_gemma_by_name_through_the_hf_backend(gemma_converted):
    from ensemble_instruct_lib.engines.base import DecodingParams

    info = json.loads((gemma_converted / M.MARKER).read_text())
    gemma = M.KNOWN_MODELS["gemma-3-270m"]
    assert info["gguf_sha256"] == gemma.gguf_sha256
    assert info["tokenizer_probe"] == list(gemma.probe_ids)
    M.check_tokenizer(gemma_converted, gemma)  # <bos> + five word pieces, not characters
    assert info["dtype"] == "bfloat16"
    be = make_backend({"kind": "hf", "model": "gemma-3-270m", "batch_size": 3})
    try:
        assert be.model_id == "gemma-3-270m" and str(be.dtype) == "torch.float32"
        tok = be.tokenizer
        assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<bos>", "<eos>", "<pad>")
        assert tok.padding_side == "left" and not getattr(tok, "chat_template", None)
        prompts = ["The capital of France is", "List three colors:\n1.", "The capital of Italy is"]
        outs = be.generate(prompts, DecodingParams(max_new_tokens=8, stop=("\n",)))
    finally:
        be.close()
    assert outs[1].text.strip() and "\n" not in outs[1].text
    if importlib.util.find_spec("llama_cpp") is None:
        return
    from ensemble_instruct_lib.engines.llama_cpp import LlamaCppBackend

    ll = LlamaCppBackend("gemma-3-270m", n_ctx=512, n_threads=2)
    try:
        ref = ll.generate(prompts, DecodingParams(max_new_tokens=8, stop=("\n",)))
    finally:
        ll.close()
    # The bf16 folder (run in fp32) and the Q4_K_M GGUF are the same weights up to rounding:
    # greedy text agrees at the start (a broken conversion writes unrelated text).
    agree = sum(a.text.split()[:3] == b.text.split()[:3] for a, b in zip(outs, ref, strict=True))
    assert agree >= 2, [(a.text, b.text) for a, b in zip(outs, ref, strict=True)]


def test_missing_real_models_names_the_first_missing_package_and_its_install(monkeypatch):
    smol = M.KNOWN_MODELS["smollm2-135m-instruct"]
    monkeypatch.setattr(M, "package_installed", lambda km: km.name != smol.name)
    reason = missing_real_models("gemma-3-270m", smol.name, llama_cpp=False)
    assert reason == f"the {smol.package} package is not installed: {smol.install_command}"
    assert missing_real_models("gemma-3-270m", llama_cpp=False) is None
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert "llama-cpp-python is not installed" in missing_real_models("gemma-3-270m")
