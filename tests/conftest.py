"""Shared test set-up: tests read the public data from ../shared/data (or $EI_DATA_DIR), and every
tiny random-weight model is one session fixture here (``tiny_*_dir``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()

if not os.environ.get("EI_DATA_DIR") and SHARED_DATA.exists():
    os.environ["EI_DATA_DIR"] = str(SHARED_DATA)


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = Path(os.environ.get("EI_DATA_DIR", SHARED_DATA))
    if not (root / "self_instruct" / "seed_tasks.jsonl").exists():
        pytest.fail(
            f"public data not found under {root}: set EI_DATA_DIR or place shared/ beside the repo"
        )
    return root


# --------------------------------------------------------------------------------------------
# tiny random-weight models (testing/tiny.py), each built once per session, on first use.
# Tests must not change these folders: copy one first (see test_backend_hf.py's T5).


def _tiny(tmp_path_factory, name: str, arch: str, seed_path: Path | None, **kw) -> Path:
    from ensemble_instruct_lib.testing.tiny import build_tiny_model

    return build_tiny_model(
        tmp_path_factory.mktemp("tiny") / name, arch, seed=0, seed_path=seed_path, **kw
    )


def _seeds(data_root: Path) -> Path:
    return data_root / "self_instruct" / "seed_tasks.jsonl"


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory, data_root) -> Path:
    """A tiny GPT-2 (hidden 64, BPE trained on the seed tasks): the HF backend, fine-tuning and
    notebook tests."""
    return _tiny(tmp_path_factory, "gpt2", "gpt2", _seeds(data_root))


@pytest.fixture(scope="session")
def tiny_gpt2_short_dir(tmp_path_factory) -> Path:
    """A tiny GPT-2 with a 64-token context, for the prompt-too-long errors."""
    return _tiny(tmp_path_factory, "gpt2-short", "gpt2", None, max_positions=64)


@pytest.fixture(scope="session")
def tiny_llama64_dir(tmp_path_factory, data_root) -> Path:
    """A tiny Llama with hidden size 64 (4 heads of 16): the HF backend tests, and a head size
    vLLM's CPU attention refuses."""
    return _tiny(tmp_path_factory, "llama64", "llama", _seeds(data_root))


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory, data_root) -> Path:
    """A tiny T5 (encoder-decoder, Flan-T5 style)."""
    return _tiny(tmp_path_factory, "t5", "t5", _seeds(data_root))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, data_root) -> Path:
    """A tiny random-weight Llama built once per session for the engine and server tests.

    Hidden size 128 with 4 heads gives head size 32, the smallest vLLM's CPU attention supports.
    """
    return _tiny(tmp_path_factory, "llama128", "llama", _seeds(data_root), hidden=128)
