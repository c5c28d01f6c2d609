"""In-process llama.cpp backend: a GGUF model through `llama_cpp.Llama` (METHOD.md stages 1-3).

One `Llama` per backend. llama.cpp keeps the KV cache of the previous prompt and reuses its longest
common prefix with the next one, so the prompts of a call are run in lexicographic order (which
puts prompts sharing a prefix, e.g. one few-shot template, next to each other) and the results are
returned in the caller's order. Prefill of long few-shot prompts dominates on CPU, so this matters
(../shared/docs/REAL-MODEL-NOTES.md: 8.9 prompts/min with sampled demos, 17.8 with a shared one).

Decoding: greedy is llama.cpp's greedy sampler; sampling applies top_k (0 = off), top_p and the
temperature (llama.cpp's min_p and typical_p are switched off, so the distribution is the one HF
and vLLM sample from) with the seed `params.seed + sample_index`, as the vLLM and HTTP backends do.
The generation loop is the kit's own, over `Llama.generate`: it ends at an end-of-generation token
or `max_new_tokens`, or when a stop string appears in the decoded text once `min_new_tokens`
tokens exist (end-of-generation tokens are masked until then); the text is cut before the first
stop string with `cut_at_stop`, and `finish_reason` is "stop" or "length".

Identity: `model_id` is the known model's name (`gemma-3-270m`) or the GGUF's file name, and
`revision` is "sha256:<digest of the GGUF>", so the call cache keys on the exact weights.

Determinism: with the same prompts in the same order a fresh backend repeats its outputs exactly.
A prompt's logits can differ in the last bits when a different previous prompt left a different
reusable prefix (the prefill is then split differently), so, as with `HFBackend`'s batches, an
output is reproducible for the same call, and the call cache stores it once made.

Chat: with `params.chat` a prompt becomes one user message rendered through the chat template
stored in the GGUF (`tokenizer.chat_template`), with llama-cpp-python's own `Jinja2ChatFormatter`
(the renderer its `create_chat_completion` uses for a GGUF template), and is tokenized without an
extra BOS (the template writes its special tokens). The generation loop is the same as for raw
prompts. A GGUF with no template and `chat=True` is a `ConfigError` naming the model. The call
cache keys chat calls on the template (`chat_template()`).

Left out: GPU offload options beyond `n_gpu_layers`, system messages and multi-turn chats,
llama-cpp-python's built-in chat formats (only the GGUF's own template is used), speculative
decoding, grammars.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .base import Backend, DecodingParams, Generation, candidate_token_ids, cut_at_stop
from .models import KNOWN_MODELS, LLAMA_CPP_INSTALL, file_sha256, resolve_model


def _import_llama() -> Any:
    if importlib.util.find_spec("llama_cpp") is None:
        raise ImportError(
            f"the llama_cpp backend needs llama-cpp-python, which is not installed: "
            f"{LLAMA_CPP_INSTALL}"
        )
    import llama_cpp

    return llama_cpp


class LlamaCppBackend(Backend):
    """A GGUF model run in this process by llama.cpp.

    Args:
        model: a known model name (`gemma-3-270m`, fetched on first use) or a GGUF file path.
        n_ctx: context window in tokens (prompt plus generated tokens).
        n_threads: CPU threads (None: all of `os.cpu_count()`).
        n_batch: prompt tokens evaluated per step.
        n_gpu_layers: layers offloaded to a GPU (0: CPU only; needs a GPU build).
        verbose: let llama.cpp print its load and timing logs.
    """

    name = "llama_cpp"

    def __init__(
        self,
        model: str,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        n_gpu_layers: int = 0,
        verbose: bool = False,
    ) -> None:
        if n_ctx < 16:
            raise ValueError(f"n_ctx must be >= 16, got {n_ctx}")
        if n_threads is not None and n_threads < 1:
            raise ValueError(f"n_threads must be >= 1 or None, got {n_threads}")
        if n_batch < 1:
            raise ValueError(f"n_batch must be >= 1, got {n_batch}")
        llama_cpp = _import_llama()
        self.path = resolve_model("llama_cpp", str(model))
        self.model_id = str(model) if model in KNOWN_MODELS else Path(self.path).name
        self.revision = "sha256:" + file_sha256(self.path)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1
        self.n_batch = n_batch
        self.n_gpu_layers = n_gpu_layers
        try:
            self.llm = llama_cpp.Llama(
                model_path=self.path,
                n_ctx=n_ctx,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                n_batch=n_batch,
                n_gpu_layers=n_gpu_layers,
                verbose=verbose,
            )
        except ValueError as e:  # llama-cpp-python's "Failed to load model from file"
            raise ConfigError(
                f"llama.cpp cannot load model {model!r} ({self.path}): {e}; is it a GGUF file "
                "this llama-cpp-python version supports?"
            ) from None
        is_eog = llama_cpp.llama_vocab_is_eog
        self._eog = [t for t in range(self.llm.n_vocab()) if is_eog(self._vocab, t)]
        self._eog_set = frozenset(self._eog)
        self._candidate_ids: dict[tuple[str, ...], dict[str, list[int]]] = {}
        self._template = self.llm.metadata.get("tokenizer.chat_template") or None
        self._formatter: Any = None

    def chat_template(self) -> str | None:
        """The chat template stored in the GGUF, or None."""
        return self._template

    def render(self, prompt: str, chat: bool) -> str:
        """The text actually tokenized: the prompt, or its rendering as one user message through
        the GGUF's chat template when `chat`."""
        if not chat:
            return prompt
        if self._template is None:
            raise ConfigError(
                f"chat: true but the GGUF of model {self.model_id!r} ({self.path}) has no chat "
                "template: use chat: false (raw prompts) or a model that ships one"
            )
        if self._formatter is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            model = self.llm._model
            bos, eos = model.token_bos(), model.token_eos()
            self._formatter = Jinja2ChatFormatter(
                template=self._template,
                eos_token=model.token_get_text(eos) if eos != -1 else "",
                bos_token=model.token_get_text(bos) if bos != -1 else "",
            )
        return self._formatter(messages=[{"role": "user", "content": prompt}]).prompt

    def _encode(self, prompt: str, chat: bool) -> list[int]:
        if chat:  # the template already wrote the special tokens the model expects
            text = self.render(prompt, True)
            return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        return self.tokenize(prompt)

    @property
    def _vocab(self) -> Any:
        return self.llm._model.vocab

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            path=self.path,
            n_ctx=self.n_ctx,
            n_threads=self.n_threads,
            n_batch=self.n_batch,
            n_gpu_layers=self.n_gpu_layers,
        )
        return d

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.close()

    # ----------------------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """The prompt's token ids as llama.cpp evaluates them: BOS when the model wants one, and
        special tokens written in the text parsed as such (as `llama_cpp.server` and HF do)."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def _generate(
        self, prompts: list[str], params: DecodingParams, sample_indices: list[int]
    ) -> list[Generation]:
        if self.llm is None:
            raise RuntimeError("this LlamaCppBackend was closed")
        encoded = [self._encode(p, params.chat) for p in prompts]
        for i, ids in enumerate(encoded):
            if len(ids) + params.max_new_tokens > self.n_ctx:
                raise ValueError(
                    f"a prompt of {len(ids)} tokens (prompt {i} of this call) does not fit the "
                    f"context of {self.n_ctx} tokens with max_new_tokens={params.max_new_tokens}: "
                    "raise n_ctx (the model's own limit permitting), use fewer demonstrations or "
                    "a smaller max_new_tokens"
                )
        order = sorted(range(len(prompts)), key=lambda i: (prompts[i], sample_indices[i]))
        results: list[Generation | None] = [None] * len(prompts)
        for i in order:
            results[i] = self._one(encoded[i], params, sample_indices[i])
        return [g for g in results if g is not None]

    def _one(self, prompt_ids: list[int], params: DecodingParams, sample_index: int) -> Generation:
        llm = self.llm
        if params.do_sample:
            llm.set_seed((params.seed + sample_index) & 0xFFFFFFFF)
            sampling = {"temp": params.temperature, "top_k": params.top_k, "top_p": params.top_p}
        else:
            sampling = {"temp": 0.0, "top_k": 1, "top_p": 1.0}
        processors = None
        if params.min_new_tokens and self._eog:
            processors = [_BanTokens(self._eog, len(prompt_ids), params.min_new_tokens)]
        out: list[int] = []
        finish = "length"
        text = ""
        stops = [s.encode("utf-8") for s in params.stop]
        for token in llm.generate(
            prompt_ids,
            min_p=0.0,
            typical_p=1.0,
            repeat_penalty=1.0,
            logits_processor=processors,
            **sampling,
        ):
            if token in self._eog_set:
                finish = "stop"
                break
            out.append(token)
            if stops and len(out) >= max(params.min_new_tokens, 1):
                raw = llm.detokenize(out, prev_tokens=prompt_ids)
                if any(s in raw for s in stops):
                    finish = "stop"
                    break
            if len(out) >= params.max_new_tokens:
                break
        text = llm.detokenize(out, prev_tokens=prompt_ids).decode("utf-8", errors="replace")
        text, _ = cut_at_stop(text, params.stop)
        return Generation(
            text=text,
            finish_reason=finish,
            prompt_tokens=len(prompt_ids),
            completion_tokens=len(out),
        )

    def next_token_logprobs(
        self, prompts: Sequence[str], candidates: Sequence[str], chat: bool = False
    ) -> list[dict[str, float]]:
        """Per prompt, the log-probability that the next token spells each candidate (see
        `Backend.next_token_logprobs`): the prompt is evaluated from scratch (no KV-cache
        prefix reuse, so a score does not depend on the prompt before it), and the last
        position's logits are log-softmaxed; log-sum-exp over the candidate's tokens."""
        import numpy as np

        if self.llm is None:
            raise RuntimeError("this LlamaCppBackend was closed")
        llm = self.llm
        key = tuple(candidates)
        if key not in self._candidate_ids:
            texts = [
                llm.detokenize([t]).decode("utf-8", errors="ignore") for t in range(llm.n_vocab())
            ]
            self._candidate_ids[key] = candidate_token_ids(texts, key)
        ids = self._candidate_ids[key]
        results: list[dict[str, float]] = [{} for _ in prompts]
        for i in range(len(prompts)):
            tokens = self._encode(prompts[i], chat)
            if len(tokens) >= self.n_ctx:
                raise ValueError(
                    f"a prompt of {len(tokens)} tokens does not fit the context of {self.n_ctx}"
                )
            llm.reset()  # a fresh prefill: the logits do not depend on the previous prompt
            llm.eval(tokens)
            logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
            logits = logits.astype(np.float64)
            top = logits.max()
            logp = logits - top - np.log(np.exp(logits - top).sum())
            results[i] = {c: float(np.logaddexp.reduce(logp[tok])) for c, tok in ids.items()}
        return results


class _BanTokens:
    """A llama-cpp-python logits processor that masks `tokens` for the first `n` new tokens."""

    def __init__(self, tokens: list[int], prompt_len: int, n: int) -> None:
        self.tokens = tokens
        self.prompt_len = prompt_len
        self.n = n

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if len(input_ids) - self.prompt_len < self.n:
            scores[self.tokens] = -float("inf")
        return scores
