"""Backend for any OpenAI-compatible HTTP server (vLLM, TGI, `transformers serve`, hosted APIs).

Serves METHOD.md stages 1-3 when the LMs run behind a server. The endpoint, request body and
answer are the wire format of engines/openai_wire.py (shared with `RayDataBackend`'s engine="http"):
base models get `/v1/completions`, chat models `/v1/chat/completions`; pass
`extra_body={"top_k": None}` to drop a field the server rejects.

Requests run on a thread pool bounded by `max_concurrency`, spread round-robin over one or more
base URLs. 429, 408, 5xx, timeouts, dropped connections and malformed JSON are retried with
exponential backoff and full jitter (a server's Retry-After of up to 60 s is honoured instead); a
retry goes to the next URL. Other 4xx answers fail at once (a 400 saying the prompt is too long for
the model is reported with reason `prompt_too_long`). A request that fails for good does not stop
the others of its batch: they all finish, `generate_streaming` hands each answer to a callback as it
arrives (the call cache stores it at once), and the batch then raises `PartialFailure` carrying the
answers and the per-request errors (engines/isolation.py turns them into failure markers). The API key is read from an environment
variable, sent as a Bearer header and never written to `describe()`, `repr()`, logs or errors.

Left out: streaming, logprobs, n > 1 per request, tool calls.
"""

from __future__ import annotations

import email.utils
import itertools
import os
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from .base import Backend, DecodingParams, Generation, cut_generated
from .isolation import CallFailed, PartialFailure, PromptTooLong
from .openai_wire import Answer, MalformedResponse, endpoint, read_answer, request_body

#: How servers say a prompt does not fit (vLLM, OpenAI, TGI, llama.cpp, transformers serve).
TOO_LONG_RE = re.compile(
    r"too long|maximum context length|context length|context window|context size"
    r"|must be <= ?\d+|exceeds? (?:the )?(?:model'?s? )?(?:max|maximum|context)",
    re.IGNORECASE,
)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
#: A Retry-After longer than this is treated as absent (our own backoff applies).
MAX_RETRY_AFTER = 60.0


class _Retryable(Exception):
    """One failed attempt that may succeed when tried again."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def _redact_url(url: str) -> str:
    """The URL without any user:password part."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


class OpenAICompatBackend(Backend):
    """Talks to OpenAI-compatible servers over HTTP.

    Args:
        model: the model name the server expects in the `model` field.
        base_urls: one base URL or several ("http://host:8000" or "http://host:8000/v1");
            requests are spread round-robin over them.
        api_key_env: name of the environment variable holding the API key (no key: no header).
        chat: always use the chat endpoint (else only when `params.chat` is set).
        max_concurrency: requests in flight at once, over all URLs.
        max_retries: retries after the first attempt of each request.
        timeout: seconds allowed for connecting, sending and for each read.
        backoff_base: the first retry waits up to this many seconds; doubles per retry.
        backoff_max: cap of the backoff window in seconds.
        extra_body: fields merged into every request body (a None value removes a field).
        revision: what pins the served weights, for the cache key (the server cannot tell us).
    """

    name = "openai"

    def __init__(
        self,
        model: str,
        base_urls: str | Sequence[str],
        *,
        api_key_env: str = "OPENAI_API_KEY",
        chat: bool = False,
        max_concurrency: int = 8,
        max_retries: int = 5,
        timeout: float = 60.0,
        backoff_base: float = 0.5,
        backoff_max: float = 20.0,
        extra_body: dict[str, Any] | None = None,
        revision: str = "",
    ) -> None:
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not urls:
            raise ValueError("base_urls is empty: give at least one server URL")
        for u in urls:
            if not isinstance(u, str) or not u.startswith(("http://", "https://")):
                raise ValueError(
                    f"base URL {_redact_url(str(u))!r} must start with http:// or https://"
                )
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if timeout <= 0 or backoff_base < 0 or backoff_max < 0:
            raise ValueError("timeout must be > 0 and backoff_base, backoff_max >= 0")
        self.model_id = model
        self.revision = revision
        self.base_urls = [u.rstrip("/") for u in urls]
        self.api_key_env = api_key_env
        self.chat = chat
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.extra_body = dict(extra_body or {})
        key = os.environ.get(api_key_env) if api_key_env else None
        self.__key = key or None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(
                max_connections=max_concurrency, max_keepalive_connections=max_concurrency
            ),
        )
        self._pool: ThreadPoolExecutor | None = None
        self._rr = itertools.count()
        self._rr_lock = threading.Lock()

    def __repr__(self) -> str:
        urls = [_redact_url(u) for u in self.base_urls]
        return f"OpenAICompatBackend(model={self.model_id!r}, base_urls={urls!r}, chat={self.chat})"

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(base_urls=[_redact_url(u) for u in self.base_urls], chat=self.chat)
        return d

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._client.close()

    # ----------------------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return text.replace(self.__key, "***") if self.__key else text

    def endpoint(self, base: str, chat: bool) -> str:
        """The full URL of the completions or chat endpoint under one base URL."""
        return endpoint(base, chat)

    def request_body(
        self, prompt: str, params: DecodingParams, sample_index: int, chat: bool
    ) -> dict[str, Any]:
        """The JSON body sent for one prompt."""
        return request_body(self.model_id, prompt, params, sample_index, chat, self.extra_body)

    def _next_start(self) -> int:
        with self._rr_lock:
            return next(self._rr)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None and retry_after <= MAX_RETRY_AFTER:
            return retry_after
        window = min(self.backoff_max, self.backoff_base * (2**attempt))
        return random.uniform(0.0, window)

    def _attempt(self, url: str, body: dict[str, Any], chat: bool) -> Answer:
        try:
            resp = self._client.post(url, json=body)
        except httpx.TimeoutException as e:
            raise _Retryable(f"timed out after {self.timeout} s ({type(e).__name__})") from None
        except httpx.TransportError as e:
            raise _Retryable(f"connection error: {type(e).__name__}: {e}") from None
        if resp.status_code != 200:
            snippet = resp.text[:300].strip()
            message = f"HTTP {resp.status_code}: {snippet}"
            if resp.status_code in RETRY_STATUS or resp.status_code >= 500:
                raise _Retryable(
                    message, resp.status_code, _parse_retry_after(resp.headers.get("retry-after"))
                )
            too_long = resp.status_code in (400, 413, 422) and bool(TOO_LONG_RE.search(snippet))
            hint = {
                401: "check the API key in $" + self.api_key_env,
                403: "check the API key's permissions",
                404: f"check the base URL and that the server serves model {self.model_id!r}",
            }.get(resp.status_code, "check the request parameters against the server's docs")
            if too_long:
                hint = "shorten the prompt (fewer demonstrations) or lower max_new_tokens"
            text = self._redact(
                f"request to {_redact_url(url)} was rejected with {message} ({hint}; not retried)"
            )
            raise PromptTooLong(text) if too_long else CallFailed(text, "rejected")
        try:
            data = resp.json()
        except ValueError as e:
            raise _Retryable(
                f"HTTP 200 with a malformed body ({type(e).__name__}: {e}): {resp.text[:200]!r}",
                200,
            ) from None
        try:
            return read_answer(data, chat)
        except MalformedResponse as e:
            raise _Retryable(
                f"HTTP 200 with a malformed body ({e}): {resp.text[:200]!r}", 200
            ) from None

    def _one(self, prompt: str, params: DecodingParams, sample_index: int) -> Generation:
        chat = self.chat or params.chat
        body = self.request_body(prompt, params, sample_index, chat)
        start = self._next_start()
        last: _Retryable | None = None
        url = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self._backoff(attempt - 1, last.retry_after if last else None))
            url = self.endpoint(self.base_urls[(start + attempt) % len(self.base_urls)], chat)
            try:
                answer = self._attempt(url, body, chat)
            except _Retryable as e:
                last = e
                continue
            raw_reason = answer.raw_finish_reason
            return Generation(
                text=cut_generated(answer.text, params),
                finish_reason=answer.finish_reason,
                prompt_tokens=answer.prompt_tokens,
                completion_tokens=answer.completion_tokens,
                extra={}
                if raw_reason in ("stop", "length", None)
                else {"finish_reason": raw_reason},
            )
        status = last.status if last and last.status is not None else "none (no HTTP response)"
        urls = ", ".join(_redact_url(u) for u in self.base_urls)
        raise CallFailed(
            self._redact(
                f"request for model {self.model_id!r} failed after {self.max_retries + 1} attempts; "
                f"last URL {_redact_url(url)}, last status {status}, last error: {last}. "
                f"Check that the server(s) at {urls} are up and not overloaded, or raise "
                "max_retries / timeout."
            ),
            "retries_exhausted",
        )

    def _generate(
        self, prompts: list[str], params: DecodingParams, sample_indices: list[int]
    ) -> list[Generation]:
        return self._run(prompts, params, sample_indices, None)

    def generate_streaming(
        self,
        prompts: Sequence[str],
        params: DecodingParams,
        sample_indices: Sequence[int] | None = None,
        on_result: Callable[[int, Generation], None] | None = None,
    ) -> list[Generation]:
        """`generate`, calling `on_result(position, generation)` in this thread as each answer
        arrives (before the batch ends), so a caller can persist finished calls at once.

        Raises:
            PartialFailure: some requests failed for good (the others were all answered and
                handed to `on_result`); with one prompt, that prompt's `CallFailed` instead.
        """
        if not prompts:
            return []
        indices = [0] * len(prompts) if sample_indices is None else list(sample_indices)
        if len(indices) != len(prompts):
            raise ValueError("sample_indices must have one entry per prompt")
        return self._run(list(prompts), params, indices, on_result)

    def _run(
        self,
        prompts: list[str],
        params: DecodingParams,
        sample_indices: list[int],
        on_result: Callable[[int, Generation], None] | None,
    ) -> list[Generation]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=self.max_concurrency, thread_name_prefix="openai-compat"
            )
        futures: dict[Future[Generation], int] = {
            self._pool.submit(self._one, p, params, i): pos
            for pos, (p, i) in enumerate(zip(prompts, sample_indices, strict=True))
        }
        results: list[Generation | None] = [None] * len(prompts)
        errors: list[BaseException | None] = [None] * len(prompts)
        try:
            for f in as_completed(futures):
                pos = futures[f]
                err = f.exception()
                if err is not None:
                    errors[pos] = err
                    continue
                results[pos] = f.result()
                if on_result is not None:
                    on_result(pos, results[pos])  # type: ignore[arg-type]
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        failed = [e for e in errors if e is not None]
        if failed:
            if len(prompts) == 1:
                raise failed[0]
            raise PartialFailure(results, errors)
        return [g for g in results if g is not None]
