"""Notebook 05 (fine-tune and evaluate), executed (slow): two tiny datasets, a few training steps
of the session's tiny GPT-2 each, scored on six user-oriented tasks beside the recorded models."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from notebook_checks import assert_png, executed, outputs_of_type

from ensemble_instruct_lib.runs import notebooks


@pytest.mark.slow
def test_notebook_05_finetune_eval(tmp_path, tiny_gpt2_dir):
    words = ["apple", "river", "stone", "cloud", "maple", "tiger", "piano", "candle"]
    datasets = {}
    for name, upper in (("ensembled", True), ("single_output", False)):
        path = tmp_path / f"{name}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for i in range(24):
                w = words[i % len(words)]
                rec = {"instruction": "Repeat the word in capital letters.", "input": w,
                       "output": w.upper() if upper else w}  # fmt: skip
                f.write(json.dumps(rec) + "\n")
        datasets[name] = str(path)
    out = tmp_path / "05"
    overrides = {
        "max_steps": 4, "batch_size": 4, "logging_steps": 1, "eval_steps": 2, "save_steps": 100,
        "learning_rate": 3e-3, "lr_scheduler": "constant", "warmup_ratio": 0.0,
        "val_fraction": 0.125, "device": "cpu", "precision": "fp32", "progress": False,
        "max_seq_len": 256,
    }  # fmt: skip
    path = notebooks.run_notebook(
        "05_finetune_eval",
        out,
        {
            "base_model": str(tiny_gpt2_dir),
            "datasets": datasets,
            "finetune_config": None,
            "finetune_overrides": overrides,
            "max_items": 6,
            "max_new_tokens": 8,
            "backend_options": {"device": "cpu"},
        },
    )
    nb = executed(path)
    assert outputs_of_type(nb, "image/png") >= 3
    scores = pd.read_csv(out / "scores.csv")
    tuned = scores[scores["kind"] == "tuned"]
    assert tuned["system"].tolist() == ["ensembled", "single_output"]
    assert (scores["n"] == 6).all() and (scores["benchmark"] == "user_oriented").all()
    assert len(scores[scores["kind"] == "recorded"]) == 8
    assert scores["rougeL"].between(0, 100).all()
    recorded = scores.set_index("system").loc["text-davinci-003", "rougeL"]
    assert recorded > 20  # real answers on six real tasks
    cats = pd.read_csv(out / "scores_per_category.csv")
    assert set(cats["system"]) >= {"ensembled", "single_output"}
    assert cats.groupby("system")["n"].sum().eq(6).all()
    losses = pd.read_csv(out / "loss_curves.csv")
    assert set(losses["system"]) == {"ensembled", "single_output"}
    assert losses.dropna(subset=["loss"]).groupby("system")["step"].max().eq(4).all()
    assert losses["eval_loss"].notna().any()
    for name in ("ensembled", "single_output"):
        assert (out / "finetune" / name / "model" / "config.json").exists()
        assert (out / "eval" / name / "user_oriented" / "predictions.jsonl").exists()
    for name in ("loss_curves", "scores", "scores_per_category"):
        assert_png(out / f"{name}.png")
