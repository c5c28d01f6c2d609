"""Tiny random-weight models built locally, for machines with no model hub (tests, CI, offline runs).

Not part of the method: this only makes real `transformers` checkpoints (config, weights and a
trained byte-level BPE tokenizer) in a folder, so the kit's loaders are exercised by exactly the
`from_pretrained(path_or_hub_id)` code a user runs with a hub model. Architectures: GPT-2 and Llama
(decoder-only) and T5 (encoder-decoder, Flan-T5 style). Their text is gibberish by design.
"""

from __future__ import annotations

import json
from pathlib import Path

ARCHS = ("gpt2", "llama", "t5")

#: A minimal chat template so chat-mode code paths run on tiny models.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _corpus(seed_path: str | Path | None) -> list[str]:
    texts: list[str] = []
    if seed_path is not None and Path(seed_path).exists():
        with open(seed_path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    task = json.loads(line)
                    texts.append(task.get("instruction", ""))
                    for inst in task.get("instances", []):
                        texts.append(
                            f"input: {inst.get('input', '')}\noutput: {inst.get('output', '')}"
                        )
    texts += [
        "instruction: input: output: |EoS| Come up with a series of tasks:",
        "The quick brown fox jumps over the lazy dog. 0123456789 ,.;:!?'\"()[]{}<>-_/\\|@#$%^&*+=~`",
    ]
    return texts


def build_tokenizer(seed_path: str | Path | None = None, vocab_size: int = 512):
    """Train a byte-level BPE tokenizer (any text encodes) and wrap it for `transformers`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>", "<s>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed_path), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        bos_token="<s>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(
    out_dir: str | Path,
    arch: str = "gpt2",
    *,
    seed: int = 0,
    seed_path: str | Path | None = None,
    hidden: int = 64,
    layers: int = 2,
    max_positions: int = 8192,
) -> Path:
    """Write a tiny random-weight checkpoint to `out_dir` and return the folder.

    Args:
        out_dir: target folder (created).
        arch: "gpt2", "llama" or "t5".
        seed: torch seed for the random weights (same seed, same weights).
        seed_path: a seed-task JSONL whose text trains the tokenizer (optional).
        hidden, layers: model width and depth.
        max_positions: context length of the decoder-only models (24-shot prompts are long).
    """
    import torch
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        T5Config,
        T5ForConditionalGeneration,
    )

    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(seed_path)
    ids = {
        k: tok.convert_tokens_to_ids(v)
        for k, v in {"pad": "<pad>", "eos": "</s>", "bos": "<s>"}.items()
    }
    common = {"vocab_size": len(tok), "pad_token_id": ids["pad"], "eos_token_id": ids["eos"]}
    torch.manual_seed(seed)
    if arch == "gpt2":
        cfg = GPT2Config(
            n_embd=hidden,
            n_layer=layers,
            n_head=2,
            n_positions=max_positions,
            bos_token_id=ids["bos"],
            **common,
        )
        model = GPT2LMHeadModel(cfg)
    elif arch == "llama":
        cfg = LlamaConfig(
            hidden_size=hidden,
            intermediate_size=hidden * 2,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=max_positions,
            bos_token_id=ids["bos"],
            tie_word_embeddings=False,
            **common,
        )
        model = LlamaForCausalLM(cfg)
    else:
        cfg = T5Config(
            d_model=hidden,
            d_ff=hidden * 2,
            d_kv=hidden // 2,
            num_layers=layers,
            num_heads=2,
            decoder_start_token_id=ids["pad"],
            feed_forward_proj="gated-gelu",
            **common,
        )
        model = T5ForConditionalGeneration(cfg)
    model.generation_config.pad_token_id = ids["pad"]
    model.generation_config.eos_token_id = ids["eos"]
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
