"""Training and evaluation on generated data: the SFT prompt format, fine-tuning, scoring.

`formats` is the one prompt format used both to fine-tune and to evaluate; `finetune` trains a base
LM on an Alpaca-style JSONL (full or LoRA, loss on response tokens only, resumable); `evaluate`
generates answers to the user-oriented and SuperNI tasks and scores them with Rouge-L and exact
match, as the paper's evaluation does.
"""
