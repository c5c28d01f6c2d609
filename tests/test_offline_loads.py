"""With no reachable model hub, every other place that loads a hub model (fine-tuning, the reward
and embedding models of stage-4 selectors) stops with one line naming the model id and the way
out, not a traceback (HF_HUB_OFFLINE makes transformers fail at once, as a machine with no network
does after its retries)."""

from __future__ import annotations

import json

import pytest

from ensemble_instruct_lib.cli import main
from ensemble_instruct_lib.errors import ConfigError

HUB_ID = "acme/no-such-model-offline"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _one_line(text: str) -> None:
    assert HUB_ID in text and "could not be reached" in text and "known model name" in text
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1


def test_reward_and_embedding_models(monkeypatch):
    from ensemble_instruct_lib.runs.selector_models import RewardModel, hf_embedder

    for load in (lambda: RewardModel(HUB_ID), lambda: hf_embedder(HUB_ID)):
        with pytest.raises(ConfigError) as e:
            load()
        _one_line(str(e.value))


def test_finetune_command(tmp_path, capsys):
    data = tmp_path / "alpaca.jsonl"
    row = {"instruction": "Say hi.", "input": "", "output": "Hi."}
    data.write_text("\n".join(json.dumps(row) for _ in range(4)) + "\n")
    cfg = tmp_path / "ft.yaml"
    cfg.write_text(f"model: {HUB_ID}\ndata: {data}\nrun_dir: {tmp_path / 'ft'}\nmax_steps: 1\n")
    assert main(["finetune", str(cfg)]) == 2
    _one_line(capsys.readouterr().err)
