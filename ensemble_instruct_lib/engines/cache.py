"""The persistent LM call cache: every stage's calls (METHOD.md stages 1-3) are made at most once.

`CallCache` is a SQLite file (WAL mode: one writer, any number of concurrent readers) mapping a
call key to its result. The key is the sha256 of a canonical JSON of what determines the answer:
backend kind, model id, revision, every decoding parameter (seed included), the prompt and, only
when sampling, the sample index (greedy answers do not depend on it). `CachedBackend` wraps any
backend: it looks every prompt up, sends only the misses to the model in one batch (or in chunks),
stores their results and commits, so an interrupted run resumes where it stopped and a re-run with
the same settings costs no model call.

Results whose `finish_reason` is "error" or "failed" (a failure marker, engines/isolation.py) are
returned but never stored, so a later run asks again. A backend with `generate_streaming` (the HTTP
one) hands each answer over as it arrives and it is committed at once, so a chunk that fails part-way
(or a killed process) loses no finished call; when some calls of a chunk fail for good
(`PartialFailure`) the answered ones are stored, the next chunks still run, and `PartialFailure` is
raised at the end over the whole batch (cache hits included). Left out: eviction and
sharing one file between several writing processes (SQLite serialises them, slowly).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .base import Backend, DecodingParams, Generation
from .isolation import FAILED, PartialFailure, reason_of
from .ledger import Call, CallLedger

#: finish reasons that are never stored
UNSTORED = frozenset({"error", FAILED})

KEY_VERSION = 1
_SQL_CHUNK = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model_id TEXT NOT NULL,
    revision TEXT NOT NULL,
    params TEXT NOT NULL,
    sample_index INTEGER,
    prompt TEXT NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    extra TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def _canonical_params(params: DecodingParams) -> dict[str, Any]:
    d = params.to_dict()
    for k in ("temperature", "top_p"):  # 1 and 1.0 must give the same key
        d[k] = float(d[k])
    if not params.do_sample:  # greedy output does not depend on the sampling settings
        for k in ("temperature", "top_k", "top_p", "seed"):
            d.pop(k)
    return d


def cache_key(
    backend: str,
    model_id: str,
    revision: str,
    params: DecodingParams,
    prompt: str,
    sample_index: int = 0,
    chat_template: str | None = None,
) -> str:
    """The sha256 (hex) identifying one call; the sample index counts only when sampling.

    A chat call (`params.chat`) also keys on the template that renders its prompt (its sha256;
    absent for engines that cannot tell, e.g. a server), so editing a template asks again.
    Calls without chat keep the keys they always had."""
    payload = {
        "v": KEY_VERSION,
        "backend": backend,
        "model_id": model_id,
        "revision": revision,
        "params": _canonical_params(params),
        "prompt": prompt,
        "sample_index": int(sample_index) if params.do_sample else None,
    }
    if params.chat and chat_template:
        payload["chat_template"] = hashlib.sha256(chat_template.encode("utf-8")).hexdigest()
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _call(key: str, g: Generation) -> Call:
    return Call(key, g.prompt_tokens, g.completion_tokens)


def _json_extra(extra: dict[str, Any]) -> str:
    try:
        return json.dumps(extra, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError):
        return json.dumps({k: repr(v) for k, v in extra.items()}, sort_keys=True)


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """One call to store: its key, what it was, and its result."""

    key: str
    backend: str
    model_id: str
    revision: str
    params: DecodingParams
    sample_index: int | None
    prompt: str
    result: Generation


_OPEN_TIMEOUT = 30.0  # seconds to wait for another process that is creating the same cache


def _open_cache_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=_OPEN_TIMEOUT, check_same_thread=False)
    try:
        # WAL is stored in the file: switch only once, as that step needs the file to itself
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(_SCHEMA)
        conn.commit()
    except BaseException:
        conn.close()
        raise
    return conn


def _is_lock_error(e: sqlite3.OperationalError) -> bool:
    text = str(e).lower()
    return "locked" in text or "busy" in text


def _open_error(path: Path, e: Exception) -> RuntimeError:
    return RuntimeError(
        f"cannot open the call cache {path}: {e}. If the file is not a cache database (or is "
        "corrupt), move it away or choose another cache path; if another process holds it "
        "locked, wait for that process or give this run its own cache."
    )


class CallCache:
    """A SQLite file of call results, created on first use.

    Safe to share between threads of one process (one connection behind a lock) and to read from
    other processes while this one writes.

    Args:
        path: the database file; parent folders are created.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"CallCache({str(self.path)!r})"

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            deadline = time.monotonic() + _OPEN_TIMEOUT
            while True:
                try:
                    self._conn = _open_cache_db(self.path)
                    break
                except sqlite3.OperationalError as e:
                    # SQLite answers "database is locked" without waiting on its busy timeout
                    # while another connection creates the file or switches it to WAL: that
                    # is brief, so wait and try again rather than fail a run.
                    if not _is_lock_error(e) or time.monotonic() > deadline:
                        raise _open_error(self.path, e) from e
                    time.sleep(0.05)
                except sqlite3.DatabaseError as e:
                    raise _open_error(self.path, e) from e
        return self._conn

    def get_many(self, keys: Iterable[str]) -> dict[str, Generation]:
        """The stored results among `keys` (missing keys are simply absent)."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, Generation] = {}
        with self._lock:
            db = self._db()
            for start in range(0, len(wanted), _SQL_CHUNK):
                chunk = wanted[start : start + _SQL_CHUNK]
                rows = db.execute(
                    "SELECT key, text, finish_reason, prompt_tokens, completion_tokens, extra "
                    f"FROM calls WHERE key IN ({','.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
                for key, text, reason, p_tok, c_tok, extra in rows:
                    found[key] = Generation(
                        text=text,
                        finish_reason=reason,
                        prompt_tokens=p_tok,
                        completion_tokens=c_tok,
                        cached=True,
                        extra=json.loads(extra),
                    )
        return found

    def get(self, key: str) -> Generation | None:
        return self.get_many([key]).get(key)

    def put_many(self, entries: Sequence[CacheEntry]) -> int:
        """Store results (replacing any with the same key) and commit once.

        Returns:
            How many were stored ("error" and "failed" results are skipped).
        """
        rows = [
            (
                e.key,
                e.backend,
                e.model_id,
                e.revision,
                json.dumps(_canonical_params(e.params), sort_keys=True),
                e.sample_index,
                e.prompt,
                e.result.text,
                e.result.finish_reason,
                int(e.result.prompt_tokens),
                int(e.result.completion_tokens),
                _json_extra(e.result.extra),
                time.time(),
            )
            for e in entries
            if e.result.finish_reason not in UNSTORED
        ]
        if not rows:
            return 0
        with self._lock:
            db = self._db()
            with db:  # one transaction, committed on exit
                db.executemany(
                    "INSERT OR REPLACE INTO calls VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows
                )
        return len(rows)

    def __len__(self) -> int:
        with self._lock:
            return self._db().execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> CallCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CachedBackend(Backend):
    """A backend whose calls go through a `CallCache`.

    Same `name`, `model_id`, `revision` and `describe()` as the wrapped backend. Results served
    from the cache have `cached=True`; so do in-batch duplicates of a miss (same key), which the
    model answers once.

    Args:
        backend: the backend that answers misses.
        cache: a `CallCache` or the path of its file.
        chunk_size: send misses to the model in chunks of this many prompts, committing after
            each (None: all misses in one batch). Smaller chunks lose less work on a crash.
        ledger: the run dir's token ledger (`engines.ledger`), told of every hit, miss and
            failure, under `ledger_name` (default: the model id).

    Attributes:
        hits: prompts answered without the model, over this object's lifetime.
        misses: prompts sent to the model, over this object's lifetime.
    """

    def __init__(
        self,
        backend: Backend,
        cache: CallCache | str | Path,
        *,
        chunk_size: int | None = None,
        ledger: CallLedger | None = None,
        ledger_name: str | None = None,
    ) -> None:
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
        self.inner = backend
        self.cache = cache if isinstance(cache, CallCache) else CallCache(cache)
        self.chunk_size = chunk_size
        self.hits = 0
        self.misses = 0
        self.ledger = ledger
        self.ledger_name = ledger_name

    @property  # type: ignore[override]
    def name(self) -> str:
        return self.inner.name

    @property  # type: ignore[override]
    def model_id(self) -> str:
        return self.inner.model_id

    @property  # type: ignore[override]
    def revision(self) -> str:
        return self.inner.revision

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def chat_template(self) -> str | None:
        return self.inner.chat_template()

    def _template_for(self, params: DecodingParams) -> str | None:
        if not params.chat:
            return None
        try:
            return self.inner.chat_template()
        except NotImplementedError:
            return None

    def check_prompts(self, prompts: Sequence[str], params: DecodingParams) -> list[str | None]:
        """The wrapped engine's pre-call check (over-long prompts), if it has one."""
        check = getattr(self.inner, "check_prompts", None)
        return list(check(prompts, params)) if check else [None] * len(prompts)

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses}

    def next_token_logprobs(
        self, prompts: Sequence[str], candidates: Sequence[str], chat: bool = False
    ) -> list[dict[str, float]]:
        """The wrapped engine's `next_token_logprobs`, through the cache: keyed like a greedy
        one-token call on the prompt marked with the candidates, the result stored as JSON."""
        name, model_id, revision = self.name, self.model_id, self.revision
        params = DecodingParams(max_new_tokens=1, chat=chat)
        marked = [f"[next_token_logprobs {json.dumps(list(candidates))}]\n{p}" for p in prompts]
        template = self._template_for(params)
        keys = [cache_key(name, model_id, revision, params, m, 0, template) for m in marked]
        found = {k: json.loads(g.text) for k, g in self.cache.get_many(keys).items()}
        todo = list({k: p for p, k in enumerate(keys) if k not in found}.values())
        ledger, who = self.ledger, self.ledger_name or model_id
        if ledger is not None:
            ledger.served(who, [Call(k) for k in dict.fromkeys(keys) if k in found])
        if todo:
            if ledger is not None:
                ledger.asking(who, [keys[p] for p in todo])
                t0 = ledger.clock()
            fresh = self.inner.next_token_logprobs([prompts[p] for p in todo], candidates, chat)
            self.cache.put_many(
                [
                    CacheEntry(
                        key=keys[p],
                        backend=name,
                        model_id=model_id,
                        revision=revision,
                        params=params,
                        sample_index=None,
                        prompt=marked[p],
                        result=Generation(text=json.dumps(d)),
                    )
                    for p, d in zip(todo, fresh, strict=True)
                ]
            )
            found.update({keys[p]: d for p, d in zip(todo, fresh, strict=True)})
            if ledger is not None:
                ledger.answered(who, [Call(keys[p]) for p in todo], ledger.clock() - t0)
        self.misses += len(todo)
        self.hits += len(prompts) - len(todo)
        return [dict(found[k]) for k in keys]

    @staticmethod
    def _to_ledger(
        ledger: CallLedger,
        who: str,
        chunk: list[str],
        fresh: dict[str, Generation],
        errors: dict[str, BaseException],
        t0: float,
    ) -> None:
        """A chunk's answered calls (its wall time split over all its calls) and failures (an
        answer with an unstored finish reason, "error", is a failure: it will be asked again)."""
        wall = ledger.clock() - t0
        done = [k for k in chunk if k in fresh and fresh[k].finish_reason not in UNSTORED]
        ledger.answered(who, [_call(k, fresh[k]) for k in done], wall * len(done) / len(chunk))
        bad = [k for k in chunk if k not in done]
        why = [reason_of(errors[k]) if k in errors else fresh[k].finish_reason for k in bad]
        ledger.failed(who, bad, why)

    def close(self) -> None:
        """Close the wrapped backend (the cache may be shared: close it yourself)."""
        self.inner.close()

    def __repr__(self) -> str:
        return f"CachedBackend({self.inner!r}, {self.cache!r})"

    def _generate(
        self, prompts: list[str], params: DecodingParams, sample_indices: list[int]
    ) -> list[Generation]:
        name, model_id, revision = self.name, self.model_id, self.revision
        template = self._template_for(params)
        keys = [
            cache_key(name, model_id, revision, params, p, i, template)
            for p, i in zip(prompts, sample_indices, strict=True)
        ]
        found = self.cache.get_many(keys)
        ledger, who = self.ledger, self.ledger_name or model_id
        if ledger is not None and found:
            ledger.served(who, [_call(k, found[k]) for k in dict.fromkeys(keys) if k in found])
        todo: dict[str, int] = {}  # key -> first position needing the model
        for pos, key in enumerate(keys):
            if key not in found and key not in todo:
                todo[key] = pos
        fresh: dict[str, Generation] = {}
        errors: dict[str, BaseException] = {}
        positions = list(todo.values())
        step = self.chunk_size or max(1, len(positions))
        stream: Callable[..., list[Generation]] | None = getattr(
            self.inner, "generate_streaming", None
        )

        def entry(p: int, g: Generation) -> CacheEntry:
            return CacheEntry(
                key=keys[p],
                backend=name,
                model_id=model_id,
                revision=revision,
                params=params,
                sample_index=sample_indices[p] if params.do_sample else None,
                prompt=prompts[p],
                result=g,
            )

        for start in range(0, len(positions), step):
            chunk = positions[start : start + step]
            args = ([prompts[p] for p in chunk], params, [sample_indices[p] for p in chunk])
            stored: set[int] = set()
            if ledger is not None:
                ledger.asking(who, [keys[p] for p in chunk])
                t0 = ledger.clock()

            def on_result(j: int, g: Generation, chunk: list[int] = chunk, stored=stored) -> None:
                fresh[keys[chunk[j]]] = g
                self.cache.put_many([entry(chunk[j], g)])
                stored.add(j)

            try:
                results: list[Generation | None] = (
                    stream(*args, on_result=on_result) if stream else self.inner.generate(*args)
                )
                failed: list[BaseException | None] = [None] * len(chunk)
            except PartialFailure as e:
                results, failed = e.results, e.errors
            except BaseException as e:
                self.misses += start + len(chunk)  # asked, whether answered or not
                if ledger is not None and len(chunk) == 1 and isinstance(e, Exception):
                    ledger.failed(who, [keys[chunk[0]]], [reason_of(e)])
                raise
            for p, g, err in zip(chunk, results, failed, strict=True):
                if err is not None or g is None:
                    errors[keys[p]] = err or RuntimeError("no answer")
                else:
                    fresh[keys[p]] = g
            self.cache.put_many(
                [
                    entry(p, fresh[keys[p]])
                    for j, p in enumerate(chunk)
                    if keys[p] in fresh and j not in stored
                ]
            )
            if ledger is not None:
                self._to_ledger(ledger, who, [keys[p] for p in chunk], fresh, errors, t0)
        out: list[Generation | None] = []
        for pos, key in enumerate(keys):
            if key in found:
                out.append(dataclasses.replace(found[key], extra=dict(found[key].extra)))
            elif key in errors:
                out.append(None)
            elif todo[key] == pos:
                out.append(fresh[key])
            else:
                g = fresh[key]
                out.append(dataclasses.replace(g, cached=True, extra=dict(g.extra)))
        self.misses += len(todo)
        self.hits += len(prompts) - len(todo)
        if errors:
            raise PartialFailure(out, [errors.get(k) for k in keys])
        return [g for g in out if g is not None]
