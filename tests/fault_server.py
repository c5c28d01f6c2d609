"""A real OpenAI-compatible HTTP server on 127.0.0.1 that can misbehave on request (test helper).

It answers `/v1/completions` ("ECHO " + the prompt) and `/v1/chat/completions` ("CHAT " + the last
user message) deterministically, truncated to `max_tokens` words (then finish_reason "length").
Faults are queued with `inject(kind, count)` and consumed one per request, in order (with
`match="..."` a fault waits for a request whose prompt contains that text, which keeps tests of
concurrent requests deterministic):

- "429": Too Many Requests with a Retry-After header;
- "500": Internal Server Error;
- "slow": sleep `seconds` (longer than the client's timeout) before answering;
- "drop": close the connection without any response;
- "malformed": HTTP 200 with a body that is not JSON.

Beyond the queue: `poison(substring)` makes every request whose prompt contains the substring fail
for good (HTTP 400 with a "too long" message by default, as vLLM answers an over-long prompt) until
`cure()`; `stop()` then `start()` brings the server back on the same port (a server that dies and
comes back).

Every request is recorded (path, headers, JSON body, the fault served) and the largest number of
requests in flight at once is tracked, so tests can check headers, bodies, round-robin and the
concurrency bound.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = ("429", "500", "slow", "drop", "malformed")


@dataclass
class Fault:
    kind: str
    retry_after: str | None = "0"
    seconds: float = 1.0
    match: str | None = None  # served only to a request whose prompt contains this


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    fault: str | None


class FaultServer:
    """Start with `with FaultServer() as srv:`; `srv.url` is the base URL.

    Args:
        delay: seconds every answer waits (makes concurrent requests overlap).
    """

    def __init__(self, *, delay: float = 0.0) -> None:
        self.delay = delay
        self.requests: list[RecordedRequest] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self._poison: dict[str, tuple[int, str]] = {}

    # -- control ---------------------------------------------------------------------------

    def inject(self, kind: str, count: int = 1, **opts: Any) -> None:
        """Queue `count` faults of one kind (see the module docstring)."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; choose from {FAULTS}")
        with self._lock:
            self._faults.extend(Fault(kind, **opts) for _ in range(count))

    def poison(
        self,
        substring: str,
        status: int = 400,
        message: str = "This model's maximum context length is 2048 tokens; the prompt is too long",
    ) -> None:
        """Answer every request whose prompt contains `substring` with `status` and `message`."""
        with self._lock:
            self._poison[substring] = (status, message)

    def cure(self) -> None:
        """Forget every poisoned substring."""
        with self._lock:
            self._poison.clear()

    def _poisoned(self, body: dict[str, Any] | None) -> tuple[int, str] | None:
        if not body:
            return None
        text = _request_text(body)
        with self._lock:
            for sub, answer in self._poison.items():
                if sub in text:
                    return answer
        return None

    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultServer:
        owner = self

        class Handler(_Handler):
            server_owner = owner

        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._port = self._server.server_address[1]
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- called by the handler -------------------------------------------------------------

    def _begin(self, req: RecordedRequest) -> Fault | None:
        with self._lock:
            text = _request_text(req.body)
            at = next(
                (i for i, f in enumerate(self._faults) if f.match is None or f.match in text), None
            )
            fault = self._faults.pop(at) if at is not None else None
            req.fault = fault.kind if fault else None
            self.requests.append(req)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            return fault

    def _end(self) -> None:
        with self._lock:
            self._in_flight -= 1


def _request_text(body: dict[str, Any] | None) -> str:
    if not body:
        return ""
    return str(body.get("prompt", "")) + json.dumps(body.get("messages", []))


def _fake_completion(path: str, body: dict[str, Any]) -> dict[str, Any]:
    if path.endswith("/chat/completions"):
        user = [m["content"] for m in body.get("messages", []) if m.get("role") == "user"]
        text = "CHAT " + (user[-1] if user else "")
    else:
        text = "ECHO " + str(body.get("prompt", ""))
    words = text.split(" ")
    max_tokens = int(body.get("max_tokens", 16))
    reason = "stop"
    if len(words) > max_tokens:
        text, reason = " ".join(words[:max_tokens]), "length"
    choice: dict[str, Any] = {"index": 0, "finish_reason": reason}
    if path.endswith("/chat/completions"):
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    prompt = body.get("prompt") or json.dumps(body.get("messages", []))
    return {
        "id": "fake",
        "object": "text_completion",
        "model": body.get("model", ""),
        "choices": [choice],
        "usage": {
            "prompt_tokens": len(str(prompt).split()),
            "completion_tokens": len(text.split()),
            "total_tokens": len(str(prompt).split()) + len(text.split()),
        },
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_owner: FaultServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the log
        pass

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        owner = self.server_owner
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        req = RecordedRequest(
            self.path, {k.lower(): v for k, v in self.headers.items()}, body, None
        )
        fault = owner._begin(req)
        try:
            if owner.delay:
                time.sleep(owner.delay)
            if self.path not in ("/v1/completions", "/v1/chat/completions"):
                self._send(404, json.dumps({"error": f"no route {self.path}"}).encode())
                return
            poisoned = owner._poisoned(body)
            if poisoned is not None:
                status, message = poisoned
                self._send(status, json.dumps({"error": {"message": message}}).encode())
            elif fault is None:
                self._send(200, json.dumps(_fake_completion(self.path, body or {})).encode())
            elif fault.kind == "429":
                headers = (
                    {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                )
                self._send(429, b'{"error": "rate limited"}', headers)
            elif fault.kind == "500":
                self._send(500, b'{"error": "internal error"}')
            elif fault.kind == "slow":
                time.sleep(fault.seconds)
                self._send(200, json.dumps(_fake_completion(self.path, body or {})).encode())
            elif fault.kind == "drop":
                self.close_connection = True
            elif fault.kind == "malformed":
                self._send(200, b'{"choices": [{"text": "unterminated')
        finally:
            owner._end()
