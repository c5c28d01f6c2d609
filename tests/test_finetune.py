"""Fine-tuning: config validation, the prompt-masked labels, and real Trainer runs on a tiny GPT-2.

The training tests take the session's random-weight GPT-2 (conftest, built locally, no download)
and train it for a few dozen steps on CPU: the loss must fall, LoRA must touch only adapter weights, an interrupted run must
resume from its checkpoint to the same weights as an uninterrupted one, and the result must load
in `HFBackend` and be scored by the evaluation harness.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from ensemble_instruct_lib.cli import main as cli_main
from ensemble_instruct_lib.data.jsonl import read_jsonl
from ensemble_instruct_lib.errors import ConfigError, DataError
from ensemble_instruct_lib.train.finetune import (
    IGNORE_INDEX,
    FinetuneConfig,
    SFTCollator,
    finetune,
    load_sft_records,
    split_records,
    tokenize_example,
)
from ensemble_instruct_lib.train.formats import build_prompt

REPO = Path(__file__).resolve().parents[1]
WORDS = ["apple", "river", "stone", "cloud", "maple", "tiger", "piano", "candle"]

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def tokenizer(tiny_gpt2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_gpt2_dir)


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(32):
            w = WORDS[i % len(WORDS)]
            rec = {"instruction": "Repeat the word in capital letters.", "input": w}
            if i % 4 == 3:  # some type-B records: no input
                rec = {"instruction": f"Name the word number {i % 8}.", "input": ""}
            rec["output"] = w.upper()
            f.write(json.dumps(rec) + "\n")
    return path


def _cfg(model: Path, data: Path, run_dir: Path, **kw) -> FinetuneConfig:
    base = dict(
        model=str(model),
        data=str(data),
        run_dir=str(run_dir),
        learning_rate=3e-3,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        batch_size=4,
        logging_steps=1,
        save_steps=100,
        val_fraction=0.125,
        progress=False,
    )
    base.update(kw)
    return FinetuneConfig(**base)


# ---------------------------------------------------------------------------------------------
# config


def test_config_defaults_and_validation():
    cfg = FinetuneConfig(model="m", data="d.jsonl", run_dir="r")
    assert cfg.mode == "full" and cfg.learning_rate == 2e-5 and cfg.max_seq_len == 512
    bad = [
        {"mode": "qlora"},
        {"learning_rate": 0},
        {"learning_rate": "fast"},
        {"batch_size": 0},
        {"batch_size": 2.5},
        {"val_fraction": 1.0},
        {"max_steps": 0},
        {"precision": "int8"},
        {"lr_scheduler": "sometimes"},
        {"lora_target_modules": "c_attn"},
        {"resume": "yes"},
        {"model": ""},
    ]
    for kw in bad:
        with pytest.raises(ValueError):
            FinetuneConfig(**{"model": "m", "data": "d", "run_dir": "r", **kw})


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="learning_rte"):
        FinetuneConfig.from_dict({"model": "m", "data": "d", "run_dir": "r", "learning_rte": 1})
    with pytest.raises(ConfigError, match="run_dir"):
        FinetuneConfig.from_dict({"model": "m", "data": "d"})


def test_config_yaml_reads_exponent_without_dot(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model: m\ndata: d.jsonl\nrun_dir: r\nlearning_rate: 2e-5\nepochs: 3\n")
    cfg = FinetuneConfig.from_yaml(p, max_steps=7)
    assert cfg.learning_rate == 2e-5 and cfg.epochs == 3.0 and cfg.max_steps == 7
    p.write_text("model: m\ndata: d.jsonl\nrun_dir: r\nbogus: 1\n")
    with pytest.raises(ConfigError, match=str(p)):
        FinetuneConfig.from_yaml(p)


def test_cli_reports_config_errors(tmp_path, capsys):
    p = tmp_path / "c.yaml"
    p.write_text("model: m\ndata: d.jsonl\nrun_dir: r\n")
    assert cli_main(["finetune", str(p), "--set", "learning_rate=-1"]) == 2
    assert "learning_rate" in capsys.readouterr().err
    assert cli_main(["finetune", str(p), "--set", "learning_rate"]) == 2
    assert "--set 'learning_rate': expected KEY=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["finetune-tiny.yaml", "finetune-pythia-1.4b.yaml"])
def test_shipped_configs_validate(name):
    cfg = FinetuneConfig.from_yaml(REPO / "configs" / name)
    assert cfg.max_seq_len >= 128


# ---------------------------------------------------------------------------------------------
# data


def test_load_sft_records_names_record_and_field(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": ""}\n')
    with pytest.raises(DataError) as e:
        load_sft_records(p)
    assert "record 2" in str(e.value) and e.value.field == "output" and str(p) in str(e.value)
    p.write_text('{"instruction": "a", "input": null, "output": "b"}\n')
    assert load_sft_records(p) == [{"instruction": "a", "input": "", "output": "b"}]
    j = tmp_path / "d.json"
    j.write_text(json.dumps([{"instruction": "a", "input": "x", "output": "b", "id": 3}]))
    assert load_sft_records(j) == [{"instruction": "a", "input": "x", "output": "b"}]


def test_split_is_deterministic_and_disjoint():
    recs = [{"instruction": str(i), "input": "", "output": "o"} for i in range(40)]
    tr, va = split_records(recs, 0.1, seed=3)
    assert len(va) == 4 and len(tr) == 36
    assert {r["instruction"] for r in tr} | {r["instruction"] for r in va} == {
        str(i) for i in range(40)
    }
    assert not {r["instruction"] for r in tr} & {r["instruction"] for r in va}
    assert split_records(recs, 0.1, seed=3) == (tr, va)
    assert split_records(recs, 0.1, seed=4)[1] != va
    assert split_records(recs[:5], 0.01, seed=0)[1] != []  # a positive fraction keeps >= 1
    assert split_records(recs, 0.0, seed=0) == (recs, [])


def test_labels_mask_the_prompt(tokenizer):
    ex = tokenize_example(tokenizer, "Repeat the word.", "apple", "APPLE", max_seq_len=512)
    prompt_ids = tokenizer(build_prompt("Repeat the word.", "apple"))["input_ids"]
    n = len(prompt_ids)
    assert ex["input_ids"][:n] == prompt_ids
    assert ex["labels"][:n] == [IGNORE_INDEX] * n
    assert ex["labels"][n:] == ex["input_ids"][n:]
    assert ex["labels"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ex["labels"][n:-1]) == "APPLE"
    assert ex["attention_mask"] == [1] * len(ex["input_ids"])


def test_truncation_keeps_the_prompt_and_drops_hopeless_examples(tokenizer):
    n = len(tokenizer(build_prompt("Repeat.", "x"))["input_ids"])
    ex = tokenize_example(tokenizer, "Repeat.", "x", "a long answer " * 20, max_seq_len=n + 3)
    assert len(ex["input_ids"]) == n + 3 and ex["labels"].count(IGNORE_INDEX) == n
    assert tokenize_example(tokenizer, "Repeat.", "x", "y", max_seq_len=n) is None


def test_collator_pads_right_with_ignored_labels():
    batch = SFTCollator(pad_token_id=0)(
        [
            {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [-100, 6, 7]},
            {"input_ids": [5], "attention_mask": [1], "labels": [5]},
        ]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [5, -100, -100]]


# ---------------------------------------------------------------------------------------------
# training runs


@pytest.mark.slow
def test_full_finetune_lowers_loss_and_evaluates(tiny_gpt2_dir, sft_data, tmp_path):
    from ensemble_instruct_lib.engines.hf import HFBackend
    from ensemble_instruct_lib.train.evaluate import EvalItem, evaluate_backend

    res = finetune(_cfg(tiny_gpt2_dir, sft_data, tmp_path / "run", max_steps=30, eval_steps=10))
    losses = res.loss_log["loss"].dropna().tolist()
    assert len(losses) == 30
    evals = res.loss_log.dropna(subset=["eval_loss"])
    assert evals["step"].tolist() == [10, 20, 30, 30]  # every 10 steps, then the final one
    assert evals["eval_loss"].iloc[-1] < evals["eval_loss"].iloc[0]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    assert res.metrics["n_train"] == 28 and res.metrics["n_val"] == 4
    assert res.metrics["eval_loss"] is not None and res.metrics["global_step"] == 30
    for name in ("loss_log.csv", "loss_log.json", "metrics.json", "val.jsonl", "model"):
        assert (res.run_dir / name).exists(), name
    assert (res.run_dir / "checkpoints").is_dir()

    val = read_jsonl(res.run_dir / "val.jsonl")
    items = [
        EvalItem(f"v{i}", r["instruction"], r["input"], (r["output"],)) for i, r in enumerate(val)
    ]
    backend = HFBackend(str(res.model_dir), device="cpu", batch_size=4)
    result = evaluate_backend(backend, items, max_new_tokens=6, run_dir=tmp_path / "eval")
    assert result.n == len(items) and result.n_missing == 0
    assert 0.0 <= result.rougeL <= 100.0
    assert (tmp_path / "eval" / "predictions.jsonl").exists()


@pytest.mark.slow
def test_lora_trains_only_adapters(tiny_gpt2_dir, sft_data, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    res = finetune(
        _cfg(
            tiny_gpt2_dir,
            sft_data,
            tmp_path / "lora",
            mode="lora",
            max_steps=12,
            learning_rate=1e-2,
        )
    )
    names = res.metrics["trainable_names"]
    assert names and all("lora_" in n for n in names)
    assert res.metrics["trainable_parameters"] < res.metrics["total_parameters"] / 5
    adapter = load_file(res.adapter_dir / "adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)

    base = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir).state_dict()
    merged = AutoModelForCausalLM.from_pretrained(res.model_dir).state_dict()
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed, "the merged adapter changed nothing"
    assert all("c_attn" in k for k in changed), changed  # peft's default GPT-2 target
    losses = res.loss_log["loss"].dropna().tolist()
    assert sum(losses[-3:]) < sum(losses[:3])


class _StopAt(TrainerCallback):
    """Kills training at a given step, like a crash."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step:
            raise KeyboardInterrupt("simulated crash")


class _CountSteps(TrainerCallback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_step_end(self, args, state, control, **kw):
        self.steps.append(state.global_step)


@pytest.mark.slow
def test_interrupted_run_resumes_from_checkpoint(tiny_gpt2_dir, sft_data, tmp_path):
    from safetensors.torch import load_file

    whole = finetune(_cfg(tiny_gpt2_dir, sft_data, tmp_path / "whole", max_steps=12, save_steps=5))
    cfg = _cfg(tiny_gpt2_dir, sft_data, tmp_path / "cut", max_steps=12, save_steps=5)
    with pytest.raises(KeyboardInterrupt):
        finetune(cfg, callbacks=[_StopAt(7)])
    assert (tmp_path / "cut" / "checkpoints" / "checkpoint-5").is_dir()
    assert not (tmp_path / "cut" / "model").exists()

    counter = _CountSteps()
    resumed = finetune(cfg, callbacks=[counter])
    assert resumed.resumed_from is not None and resumed.resumed_from.endswith("checkpoint-5")
    assert counter.steps == [6, 7, 8, 9, 10, 11, 12]  # only the missing steps ran
    assert resumed.metrics["global_step"] == 12
    steps = resumed.loss_log.dropna(subset=["loss"])["step"].tolist()
    assert steps == list(range(1, 13))
    a = load_file(whole.model_dir / "model.safetensors")
    b = load_file(resumed.model_dir / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)

    with pytest.raises(ConfigError, match="learning_rate"):
        finetune(_cfg(tiny_gpt2_dir, sft_data, tmp_path / "cut", max_steps=12, learning_rate=1e-3))
    with pytest.raises(ConfigError, match="resume"):
        finetune(_cfg(tiny_gpt2_dir, sft_data, tmp_path / "cut", max_steps=12, resume=False))


def test_resume_skips_and_removes_checkpoints_a_kill_left_half_written(tmp_path):
    from ensemble_instruct_lib.train.finetune import last_complete_checkpoint

    ckpts = tmp_path / "checkpoints"
    for step, state in [(1, '{"global_step": 1}'), (2, None), (10, '{"global_st')]:
        (ckpts / f"checkpoint-{step}").mkdir(parents=True)
        if state is not None:
            (ckpts / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    assert last_complete_checkpoint(ckpts) == str(ckpts / "checkpoint-1")
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-1"]
    assert last_complete_checkpoint(tmp_path / "none") is None
