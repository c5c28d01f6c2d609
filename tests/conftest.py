"""Shared test set-up: tests read the public data from ../shared/data (or $EI_DATA_DIR)."""

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


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, data_root) -> Path:
    """A tiny random-weight Llama built once per session for the engine and server tests.

    Hidden size 128 with 4 heads gives head size 32, the smallest vLLM's CPU attention supports.
    """
    from ensemble_instruct_lib.testing.tiny import build_tiny_model

    return build_tiny_model(
        tmp_path_factory.mktemp("tiny") / "llama128",
        "llama",
        seed=0,
        hidden=128,
        seed_path=data_root / "self_instruct" / "seed_tasks.jsonl",
    )
