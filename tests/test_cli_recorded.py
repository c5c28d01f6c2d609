"""The pre-pipeline main job: consensus over recorded GPT-3-family outputs, checked independently."""

from __future__ import annotations

import json

import numpy as np
from rouge_score import rouge_scorer

from ensemble_instruct_lib.cli import main
from ensemble_instruct_lib.data.jsonl import read_jsonl


def test_ensemble_recorded_end_to_end(tmp_path, capsys, data_root):
    models = ["text-davinci-003", "davinci-superni-ft", "davinci-self-instruct"]
    rc = main(
        [
            "ensemble-recorded",
            "--models",
            *models,
            "--out",
            str(tmp_path),
            "--data-dir",
            str(data_root),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    kept = read_jsonl(tmp_path / "ensembled.jsonl")
    assert f"kept {len(kept)} of 252 examples" in out
    assert 0 < len(kept) < 252
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["kept"] == len(kept) and manifest["models"] == models

    # recompute the consensus row of the table directly with rouge-score
    preds = {}
    for m in models:
        path = data_root / "self_instruct" / "user_oriented_predictions" / f"{m}_predictions.jsonl"
        for r in read_jsonl(path):
            preds.setdefault((r["instruction"].strip(), r["input"].strip()), {})[m] = r
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    cons, member = [], {m: [] for m in models}
    for k in kept:
        rows = preds[(k["instruction"], k["input"])]
        gold = rows[models[0]]["target"]
        assert k["output"] == rows[k["chosen_model"]]["response"].strip()
        cons.append(scorer.score(target=gold, prediction=k["output"])["rougeL"].fmeasure)
        for m in models:
            member[m].append(
                scorer.score(target=gold, prediction=rows[m]["response"].strip())["rougeL"].fmeasure
            )
    import pandas as pd

    table = pd.read_csv(tmp_path / "summary.csv").set_index("system")
    assert (
        table.loc["consensus", "kept_mean"] == np.float64(np.mean(cons) * 100).round(10)
        or abs(table.loc["consensus", "kept_mean"] - np.mean(cons) * 100) < 1e-9
    )
    for m in models:
        assert abs(table.loc[m, "kept_mean"] - np.mean(member[m]) * 100) < 1e-9
    assert table.loc["oracle", "kept_mean"] >= table.loc["consensus", "kept_mean"]


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["ensemble-recorded", "--models", "davinci", "gpt-9"]) == 2
    assert "unknown recorded models ['gpt-9']" in capsys.readouterr().err
