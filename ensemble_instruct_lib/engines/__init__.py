"""LM backends behind one interface (`Backend.generate`), and the call cache that wraps them.

`HFBackend` (in-process transformers), `OpenAICompatBackend` (HTTP servers), `RecordedBackend`
(real recorded GPT-3-family answers), `ScriptedBackend` (canned answers for tests) and, when the
vllm extra is installed, `VLLMBackend`; `make_backend` builds any of them from a config dict.
Classes that need torch or httpx are imported on first use, so importing this package is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import Backend, DecodingParams, Generation, cut_at_stop, cut_generated
from .factory import make_backend
from .recorded import RecordedBackend
from .scripted import ScriptedBackend

_LAZY = {
    "HFBackend": "ensemble_instruct_lib.engines.hf",
    "OpenAICompatBackend": "ensemble_instruct_lib.engines.openai_compat",
    "CachedBackend": "ensemble_instruct_lib.engines.cache",
    "CallCache": "ensemble_instruct_lib.engines.cache",
    "VLLMBackend": "ensemble_instruct_lib.engines.vllm_engine",  # needs the vllm extra
    "RayDataBackend": "ensemble_instruct_lib.engines.ray_data",  # needs the vllm extra (ray)
}

__all__ = [
    "RayDataBackend",
    "Backend",
    "CachedBackend",
    "CallCache",
    "DecodingParams",
    "Generation",
    "HFBackend",
    "OpenAICompatBackend",
    "RecordedBackend",
    "ScriptedBackend",
    "cut_at_stop",
    "cut_generated",
    "make_backend",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
