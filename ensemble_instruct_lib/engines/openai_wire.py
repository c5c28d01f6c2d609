"""The OpenAI-compatible wire format, written once: endpoint URL, request body, answer.

Serves METHOD.md stages 1-3 behind a server. Two backends speak it: `OpenAICompatBackend` (its own
HTTP client, retries, thread pool) and `RayDataBackend` with engine="http" (Ray's HTTP processor),
so both send the same body for the same prompt and read an answer the same way.

Base models get `/v1/completions` with the raw prompt; chat models get `/v1/chat/completions` with
the prompt as one user message. Greedy is temperature 0; sampling sends temperature and top_p,
plus vLLM's `top_k` and `min_tokens` as extra fields (the OpenAI API has neither); the seed of
sample i is `params.seed + i`.

Left out: the transport (each backend has its own), streaming, logprobs, n > 1, tool calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .base import DecodingParams


def endpoint(base: str, chat: bool) -> str:
    """The full URL of the completions or chat endpoint under one base URL (with or without /v1)."""
    path = "chat/completions" if chat else "completions"
    return f"{base}/{path}" if base.endswith("/v1") else f"{base}/v1/{path}"


def request_body(
    model: str,
    prompt: str,
    params: DecodingParams,
    sample_index: int,
    chat: bool,
    extra_body: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body sent for one prompt.

    Args:
        model: the model name the server expects in the `model` field.
        sample_index: which sample of the prompt this is (sampling seeds `params.seed + i`).
        chat: the chat endpoint's body (`messages`) instead of the completions one (`prompt`).
        extra_body: fields merged in last; a None value removes a field.
    """
    body: dict[str, Any] = {"model": model, "max_tokens": params.max_new_tokens}
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if params.do_sample:
        body["temperature"] = params.temperature
        body["top_p"] = params.top_p
        if params.top_k > 0:
            body["top_k"] = params.top_k
        body["seed"] = params.seed + sample_index
    else:
        body["temperature"] = 0.0
        body["seed"] = params.seed
    if params.min_new_tokens:
        body["min_tokens"] = params.min_new_tokens
    if params.stop:
        body["stop"] = list(params.stop)
    for k, v in (extra_body or {}).items():
        if v is None:
            body.pop(k, None)
        else:
            body[k] = v
    return body


class MalformedResponse(ValueError):
    """A 200 answer whose body is not an OpenAI completion (no choices, no text, ...)."""


@dataclass(frozen=True)
class Answer:
    """What one response says: the text, the server's finish reason and the token counts."""

    text: str
    raw_finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int

    @property
    def finish_reason(self) -> str:
        """ "length" when the server stopped at max_tokens, else "stop"."""
        return "length" if self.raw_finish_reason == "length" else "stop"


def read_answer(data: Any, chat: bool) -> Answer:
    """The first choice of a parsed JSON response.

    The text is `choices[0].message.content` (chat; null reads as "") or `choices[0].text`; a
    `usage` that is not an object counts as no usage.

    Raises:
        MalformedResponse: no first choice, or its text is missing or not a string.
    """
    try:
        choice = data["choices"][0]
        text = (choice["message"].get("content") or "") if chat else choice["text"]
        if not isinstance(text, str):
            raise TypeError(f"text is {type(text).__name__}")
        raw_reason = choice.get("finish_reason")
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise MalformedResponse(f"{type(e).__name__}: {e}") from None
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return Answer(
        text=text,
        raw_finish_reason=raw_reason,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
    )
