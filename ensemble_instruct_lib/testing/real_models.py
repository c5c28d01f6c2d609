"""Why a test cannot use the packaged real models here (None: it can).

The real-model tests skip with the command that would install what is missing, so a newcomer's
``pytest -ra`` says what to do instead of failing on an import.
"""

from __future__ import annotations

import importlib.util

from ..engines import models as M


def missing_real_models(*names: str, llama_cpp: bool = True) -> str | None:
    """The first missing requirement of `names` (registry names such as "gemma-3-270m"), or None.

    `llama_cpp`: the test also needs llama-cpp-python (the engine the GGUF files run on).
    """
    if llama_cpp and importlib.util.find_spec("llama_cpp") is None:
        return f"llama-cpp-python is not installed: {M.LLAMA_CPP_INSTALL}"
    for name in names:
        km = M.KNOWN_MODELS[name]
        if not M.package_installed(km):
            return f"the {km.package} package is not installed: {km.install_command}"
    return None
