"""The one interface every LM backend implements (METHOD.md stages 1-3 call LMs only through it).

A backend takes a batch of prompts and one set of decoding parameters and returns, per prompt, the
generated text (cut before the first stop string by `cut_generated`, or, when `keep_after_stop`
asks for it, only the stop string that ended generation removed), why generation finished and
token counts. It
knows nothing about the method: prompts come from `prompts.py`, responses go to `parsing.py`, and
every call is routed through the persistent cache (`cache.py`) by `CachedBackend`.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..method.parsing import cut_at_stop  # noqa: F401 - re-exported: every engine cuts at stops


@dataclass(frozen=True)
class DecodingParams:
    """Decoding parameters shared by every backend.

    Attributes:
        do_sample: False for greedy decoding, True for sampling.
        temperature: sampling temperature (ignored when greedy).
        top_k: keep the k most likely tokens (0 = off; ignored when greedy).
        top_p: nucleus sampling mass (1.0 = off; ignored when greedy).
        max_new_tokens: hard cap on generated tokens (always passed to the engine).
        min_new_tokens: force at least this many tokens before a stop may end generation.
        stop: stop strings; the text returned ends before the first one found.
        seed: base random seed for sampling; the cache key also carries the sample index.
        chat: send prompts through the model's chat template / chat endpoint.
        keep_after_stop: return the text up to the stop string that ended generation (after
            `min_new_tokens`), keeping earlier stop strings and what follows them, as the
            reference code's parser saw it; False cuts before the first stop string.
    """

    do_sample: bool = False
    temperature: float = 0.7
    top_k: int = 50
    top_p: float = 1.0
    max_new_tokens: int = 256
    min_new_tokens: int = 0
    stop: tuple[str, ...] = ()
    seed: int = 0
    chat: bool = False
    keep_after_stop: bool = False

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.min_new_tokens < 0 or self.min_new_tokens > self.max_new_tokens:
            raise ValueError(
                f"min_new_tokens must be in [0, max_new_tokens={self.max_new_tokens}], "
                f"got {self.min_new_tokens}"
            )
        if self.do_sample and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"stop must be a sequence of non-empty strings, got {self.stop!r}")
        object.__setattr__(self, "stop", tuple(self.stop))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["stop"] = list(self.stop)
        if not self.keep_after_stop:  # absent when off: cache keys made before it stay valid
            del d["keep_after_stop"]
        return d


def cut_generated(text: str, params: DecodingParams) -> str:
    """The text a backend returns for `params`.

    Cut before the first stop string; with `params.keep_after_stop`, only a stop string that ends
    the text (the one that ended generation, when the engine keeps it) is removed.
    """
    if not params.keep_after_stop:
        return cut_at_stop(text, params.stop)[0]
    for s in params.stop:
        if text.endswith(s):
            return text[: -len(s)]
    return text


@dataclass
class Generation:
    """One prompt's result.

    Attributes:
        text: generated text, without the prompt and cut before the first stop string.
        finish_reason: "stop" (a stop string or EOS ended it), "length" (max_new_tokens hit),
            or "error".
        prompt_tokens: tokens in the prompt (0 when the backend cannot tell).
        completion_tokens: tokens generated (0 when the backend cannot tell).
        cached: True when the result came from the call cache rather than the model.
    """

    text: str
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Backend(ABC):
    """A language model behind the kit's one interface.

    Subclasses set `name` (the backend kind, e.g. "hf") and `model_id`, and implement `_generate`.
    `revision` is whatever pins the weights (a commit hash, a file digest, a server-reported
    version); it is part of the cache key.
    """

    name: str = "base"
    model_id: str = ""
    revision: str = ""

    def generate(
        self,
        prompts: Sequence[str],
        params: DecodingParams,
        sample_indices: Sequence[int] | None = None,
    ) -> list[Generation]:
        """Generate one completion per prompt.

        Args:
            prompts: the prompts, in any order.
            params: decoding parameters for the whole batch.
            sample_indices: per prompt, which sample this is (sampling only): with the seed it makes
                each call reproducible and distinct in the cache. Defaults to all zeros.

        Returns:
            One `Generation` per prompt, in the order of `prompts`.
        """
        if not prompts:
            return []
        if sample_indices is None:
            sample_indices = [0] * len(prompts)
        if len(sample_indices) != len(prompts):
            raise ValueError("sample_indices must have one entry per prompt")
        out = self._generate(list(prompts), params, list(sample_indices))
        if len(out) != len(prompts):
            raise RuntimeError(
                f"backend {self.name}:{self.model_id} returned {len(out)} results "
                f"for {len(prompts)} prompts"
            )
        return out

    @abstractmethod
    def _generate(
        self, prompts: list[str], params: DecodingParams, sample_indices: list[int]
    ) -> list[Generation]: ...

    def next_token_logprobs(
        self, prompts: Sequence[str], candidates: Sequence[str], chat: bool = False
    ) -> list[dict[str, float]]:
        """Optional: per prompt, the log-probability that the next token spells each candidate.

        A candidate's log-probability is that of the set of vocabulary tokens whose text,
        whitespace stripped, equals it (log-sum-exp over them: "7", " 7", a byte token for "7");
        a candidate no single token spells is absent from the dict. Engines that expose logits
        implement it (`hf`, `llama_cpp`); the others raise `NotImplementedError`.
        """
        raise NotImplementedError(
            f"the {self.name} backend ({self.model_id}) gives no next-token log-probabilities"
        )

    def chat_template(self) -> str | None:
        """The chat template `chat=True` renders prompts with (None: the model has none).

        Engines that render chat prompts themselves implement it (`hf`, `llama_cpp`, `vllm`);
        for a server the template lives on the server and this raises `NotImplementedError`.
        The call cache keys chat calls on it, so a changed template never reuses old answers.
        """
        raise NotImplementedError(
            f"the {self.name} backend ({self.model_id}) cannot tell its chat template"
        )

    def describe(self) -> dict[str, Any]:
        """What identifies this model in manifests and cache keys."""
        return {"backend": self.name, "model_id": self.model_id, "revision": self.revision}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release engines, sessions or servers held by the backend."""


def require_chat_template(backend: Backend, where: str = "") -> None:
    """Refuse, before any call, a `chat: true` model whose engine knows it has no chat template.

    Raises:
        ConfigError: one line naming `where` and the model (engines that cannot tell pass).
    """
    from ..errors import ConfigError

    try:
        template = backend.chat_template()
    except NotImplementedError:
        return
    if not template:
        at = f"{where}: " if where else ""
        raise ConfigError(
            f"{at}chat: true but model {backend.model_id!r} ({backend.name}) has no chat "
            "template: set chat: false (raw prompts; prompt_style few_shot suits a base model) "
            "or use a model that ships a chat template"
        )


def candidate_token_ids(
    token_texts: Sequence[str], candidates: Sequence[str]
) -> dict[str, list[int]]:
    """For `Backend.next_token_logprobs`: per candidate, the ids of the tokens whose text
    (``token_texts[id]``), whitespace stripped, equals it; candidates no token spells are left
    out."""
    wanted = {c: [] for c in candidates}
    for i, text in enumerate(token_texts):
        hit = wanted.get(text.strip())
        if hit is not None:
            hit.append(i)
    return {c: ids for c, ids in wanted.items() if ids}


def sampling_params(
    stage: Any,
    stop: Sequence[str],
    seed: int,
    max_new_tokens: int | None = None,
) -> DecodingParams:
    """The sampling `DecodingParams` of stage 1 or 2 (METHOD.md: temperature 0.7, top_k 50),
    from a stage config (`temperature`, `top_k`, `top_p`, `max_new_tokens`, optionally
    `min_new_tokens`), with the given stop strings and an optional lower token cap. A forced
    minimum length also keeps the text after early stop strings (`keep_after_stop`): otherwise
    the run-on text it makes the LM write would be cut away unseen."""
    cap = (
        stage.max_new_tokens
        if max_new_tokens is None
        else min(max_new_tokens, stage.max_new_tokens)
    )
    min_new = min(getattr(stage, "min_new_tokens", 0), cap)
    return DecodingParams(
        do_sample=True,
        temperature=stage.temperature,
        top_k=stage.top_k,
        top_p=stage.top_p,
        max_new_tokens=cap,
        min_new_tokens=min_new,
        stop=tuple(stop),
        seed=seed,
        keep_after_stop=min_new > 0,
    )


def greedy_params(stage: Any, seed: int, chat: bool = False) -> DecodingParams:
    """The greedy `DecodingParams` of stage 3 (METHOD.md: greedy, `max_new_tokens`, the output
    stop strings), from a stage config with `max_new_tokens` and `stop`; `chat` renders the prompt
    through the model's chat template."""
    return DecodingParams(
        do_sample=False,
        max_new_tokens=stage.max_new_tokens,
        stop=tuple(stage.stop),
        seed=seed,
        chat=bool(chat),
    )
