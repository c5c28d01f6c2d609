"""Scale-out backend: one `generate` call runs as a Ray Data job (METHOD.md stages 1-3, many boxes).

`RayDataBackend` is a `Backend`, so the pipeline, its files, the call cache and resumability are
unchanged: each `generate(prompts, params)` builds a Ray Dataset with one row per prompt (its
index, the prompt and its per-request sampling parameters) and runs it through `ray.data.llm`:

- engine="vllm": `vLLMEngineProcessorConfig`, one vLLM engine per replica (`num_replicas`), each
  replica fed batches of `batch_size` rows. Sampling parameters are the same per-request mapping
  as `VLLMBackend` (`vllm_engine.sampling_kwargs`), so results equal the single-process engine's.
  Ray's chat-template, tokenize and detokenize stages are switched off (the engine tokenizes and
  detokenizes itself; on small CPU boxes the extra stages hung); chat prompts are rendered and
  tokenized here with the model's template, exactly as `HFBackend` does.
- engine="http": `HttpRequestProcessorConfig`, one processor per OpenAI-compatible endpoint
  (vLLM servers, `transformers serve`, ...), rows spread round-robin over the endpoints, with the
  request bodies and answer reading of engines/openai_wire.py (as `OpenAICompatBackend`).

Results are sorted back into input order. Ray's vLLM stage does not report a finish reason: it is
"length" when the engine produced `max_new_tokens` tokens, else "stop" (an EOS on exactly the last
allowed token is reported as "length").

Cluster: with `ray_address=None` and no running Ray, a local Ray instance is started with
`num_cpus=max(4, cores)` (with fewer logical CPUs than actors the job waits forever on 2 cores);
`ray_address="auto"` or "ray://head:10001" joins a cluster started with `ray start --head` /
`ray start --address=head:6379` (docs/engines.md). Usage statistics are switched off.

Cost: every `generate` starts its actors (and, for engine="vllm", its engines: ~35 s on 2 CPU
cores) and releases them at the end, so give it large batches (stages 2 and 3); for many small
calls (stage-1 rounds) use `VLLMBackend` or engine="http" against long-running servers.

Left out: Ray Serve deployments, LoRA, multi-modal rows, autoscaling replica ranges.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from .base import Backend, DecodingParams, Generation, cut_generated
from .openai_wire import MalformedResponse, endpoint, read_answer, request_body
from .vllm_engine import DEFAULT_CPU_KVCACHE_GIB, sampling_kwargs

ENGINES = ("vllm", "http")


def _vllm_row(row: dict[str, Any], *, chat: bool) -> dict[str, Any]:
    out = {"idx": row["idx"], "prompt": row["prompt"], "sampling_params": row["sampling_params"]}
    if chat:
        out["tokenized_prompt"] = row["tokenized_prompt"]
    return out


def _vllm_result(row: dict[str, Any], *, max_tokens: int) -> dict[str, Any]:
    n = int(row.get("num_generated_tokens") or 0)
    return {
        "idx": int(row["idx"]),
        "text": row.get("generated_text") or "",
        "finish_reason": "length" if n >= max_tokens else "stop",
        "prompt_tokens": int(row.get("num_input_tokens") or 0),
        "completion_tokens": n,
        "error": "",
    }


def _http_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"idx": row["idx"], "payload": row["payload"]}


def _http_result(row: dict[str, Any], *, chat: bool) -> dict[str, Any]:
    resp = row.get("http_response") or {}
    out: dict[str, Any] = {"idx": int(row["idx"]), "prompt_tokens": 0, "completion_tokens": 0}
    try:
        answer = read_answer(resp, chat)
    except MalformedResponse:
        out.update(text="", finish_reason="error", error=str(resp)[:500])
        return out
    out.update(
        text=answer.text,
        finish_reason=answer.finish_reason,
        prompt_tokens=answer.prompt_tokens,
        completion_tokens=answer.completion_tokens,
        error="",
    )
    return out


def _vllm_spec(
    spec_or_model: str | Mapping[str, Any] | Sequence[str] | None, model: str | None
) -> dict[str, Any]:
    """engine="vllm": the engine spec as a new dict with a "model" key and no "kind" key.

    Raises:
        ValueError: not a model id/folder or a mapping, a kind other than "vllm", or no model.
    """
    if spec_or_model is None:
        spec: dict[str, Any] = {"model": model} if model else {}
    elif isinstance(spec_or_model, str):
        spec = {"model": spec_or_model}
    elif isinstance(spec_or_model, Mapping):
        spec = dict(spec_or_model)
    else:
        raise ValueError(
            "engine='vllm' takes a model id/folder or a spec mapping with a 'model' key, "
            f"got {spec_or_model!r}"
        )
    if spec.pop("kind", "vllm") != "vllm":
        raise ValueError(f"spec kind must be 'vllm' for engine='vllm', got {spec!r}")
    if "model" not in spec:
        raise ValueError(f"the vLLM spec {spec!r} has no 'model'")
    return spec


def _http_urls(found: Any) -> list[str]:
    """engine="http": one base URL or a non-empty list of them, checked, without a trailing "/"."""
    urls = [found] if isinstance(found, str) else found
    if urls is None or isinstance(urls, Mapping) or not urls:
        raise ValueError("engine='http' takes one base URL or a non-empty list of them")
    for u in urls:
        if not isinstance(u, str) or not u.startswith(("http://", "https://")):
            raise ValueError(f"base URL {u!r} must start with http:// or https://")
    return [u.rstrip("/") for u in urls]


class RayDataBackend(Backend):
    """Runs each `generate` call as a Ray Data batch job over vLLM replicas or HTTP endpoints.

    Args:
        spec_or_endpoints: engine="vllm": a model id or folder, or a spec mapping
            `{"model": ..., "dtype": ..., "max_model_len": ..., <other vllm.LLM arguments>}`
            (a "kind": "vllm" key is ignored, so a VLLMBackend spec works as is).
            engine="http": one base URL or a list of them.
        engine: "vllm" (engines run inside Ray actors) or "http" (existing servers).
        model: engine="vllm": the model, when no spec is given; engine="http": the model name
            the servers expect (required).
        engine_kwargs: engine="vllm": more `vllm.LLM` arguments (merged over the spec's).
        endpoints: engine="http": the base URLs, as a keyword (for `make_backend` specs).
        num_replicas: engine="vllm": vLLM engine replicas; engine="http": request actors per
            endpoint.
        batch_size: rows per batch handed to a replica (engine="vllm") or actor (engine="http").
        ray_address: None (use the running Ray or start a local one), "auto" or "ray://host:port".
        ray_init_kwargs: extra `ray.init` arguments (e.g. num_cpus for a local instance; actor
            logs stay in Ray's log folder unless log_to_driver=True).
        placement_group_config: resources per vLLM replica (None: {"CPU": 1} per worker when
            the cluster has no GPU, else Ray's GPU default).
        runtime_env: Ray runtime environment for the vLLM actors (env_vars, pip, ...).
        api_key_env: engine="http": environment variable holding a Bearer key (unset: no header).
        chat: always use the chat template / chat endpoint (else only when `params.chat`).
        revision: what pins the weights, for the cache key (engine="vllm" and a local folder:
            a digest of its files when not given).
    """

    name = "ray-data"

    def __init__(
        self,
        spec_or_endpoints: str | Mapping[str, Any] | Sequence[str] | None = None,
        *,
        engine: str = "vllm",
        model: str | None = None,
        engine_kwargs: Mapping[str, Any] | None = None,
        endpoints: Sequence[str] | None = None,
        num_replicas: int = 1,
        batch_size: int = 16,
        ray_address: str | None = None,
        ray_init_kwargs: Mapping[str, Any] | None = None,
        placement_group_config: Mapping[str, Any] | None = None,
        runtime_env: Mapping[str, Any] | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        chat: bool = False,
        revision: str | None = None,
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        if num_replicas < 1:
            raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.engine = engine
        self.num_replicas = num_replicas
        self.batch_size = batch_size
        self.ray_address = ray_address
        self.ray_init_kwargs = dict(ray_init_kwargs or {})
        self.placement_group_config = (
            dict(placement_group_config) if placement_group_config is not None else None
        )
        self.runtime_env = dict(runtime_env or {})
        self.api_key_env = api_key_env
        self.chat = chat
        self.endpoints: list[str] = []
        self.engine_kwargs: dict[str, Any] = {}
        if engine == "vllm":
            if endpoints is not None:
                raise ValueError("endpoints= is for engine='http'")
            spec = _vllm_spec(spec_or_endpoints, model)
            self.model_id = str(spec.pop("model"))
            revision = spec.pop("revision", revision)
            spec.pop("multiprocessing", None)  # meaningless inside a Ray actor
            self.engine_kwargs = {**spec, **(engine_kwargs or {})}
            if revision is not None:
                self.engine_kwargs["revision"] = revision
            self.revision = self._pin_revision(revision)
        else:
            if engine_kwargs:
                raise ValueError("engine_kwargs= is for engine='vllm'")
            if spec_or_endpoints is not None and endpoints is not None:
                raise ValueError("give the endpoints once: positionally or as endpoints=")
            found = endpoints if endpoints is not None else spec_or_endpoints
            self.endpoints = _http_urls(found)
            if not model:
                raise ValueError("engine='http' needs model=<the name the servers serve>")
            self.model_id = model
            self.revision = revision or ""
        self._tokenizer: Any = None
        self._owns_ray = False

    def _pin_revision(self, revision: str | None) -> str:
        try:
            from .hf import resolve_revision
        except ImportError:
            return revision or ""
        return resolve_revision(self.model_id, revision)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(engine=self.engine, num_replicas=self.num_replicas, batch_size=self.batch_size)
        if self.endpoints:
            d["endpoints"] = list(self.endpoints)
        return d

    # ---- Ray ---------------------------------------------------------------------------------

    def _ensure_ray(self) -> Any:
        try:
            import ray
            import ray.data.llm  # noqa: F401  (fails early when ray[data] is incomplete)
        except ImportError as e:
            raise ImportError(
                "RayDataBackend needs ray[data] (and vLLM for engine='vllm'): "
                f"pip install -r requirements-vllm.txt; import failed with: {e}"
            ) from e
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if not ray.is_initialized():
            kw: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False}
            if self.ray_address is not None:
                kw["address"] = self.ray_address
            else:  # a new local instance (joining a cluster rejects these arguments); it listens
                # on loopback only: a one-machine instance needs no other interface
                kw.update(
                    include_dashboard=False,
                    num_cpus=max(4, os.cpu_count() or 1),
                    _node_ip_address="127.0.0.1",
                )
            kw.update(self.ray_init_kwargs)
            ray.init(**kw)
            self._owns_ray = True
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        return ray

    def _cluster_has_gpu(self, ray: Any) -> bool:
        return float(ray.cluster_resources().get("GPU", 0)) > 0

    def close(self) -> None:
        """Shut down the local Ray instance this backend started, or disconnect from the cluster
        it joined (the cluster keeps running)."""
        if self._owns_ray:
            import ray

            ray.shutdown()
            self._owns_ray = False

    # ---- generation --------------------------------------------------------------------------

    def _generate(
        self, prompts: list[str], params: DecodingParams, sample_indices: list[int]
    ) -> list[Generation]:
        ray = self._ensure_ray()
        chat = self.chat or params.chat
        if self.engine == "vllm":
            rows = self._run_vllm(ray, prompts, params, sample_indices, chat)
        else:
            rows = self._run_http(ray, prompts, params, sample_indices, chat)
        by_idx = {int(r["idx"]): r for r in rows}
        missing = [i for i in range(len(prompts)) if i not in by_idx]
        if missing:
            raise RuntimeError(
                f"the Ray Data job returned no result for {len(missing)} of {len(prompts)} "
                f"prompts (first indices {missing[:5]}); see the Ray logs"
            )
        results = []
        for i in range(len(prompts)):
            r = by_idx[i]
            text = cut_generated(str(r["text"]), params)
            extra = {"error": r["error"]} if r.get("error") else {}
            results.append(
                Generation(
                    text=text,
                    finish_reason=str(r["finish_reason"]),
                    prompt_tokens=int(r["prompt_tokens"]),
                    completion_tokens=int(r["completion_tokens"]),
                    extra=extra,
                )
            )
        return results

    def _render_chat(self, prompts: list[str]) -> tuple[list[str], list[list[int]]]:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            kw = (
                {"revision": self.engine_kwargs["revision"]}
                if "revision" in self.engine_kwargs
                else {}
            )
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_id, **kw)
        tok = self._tokenizer
        if not getattr(tok, "chat_template", None):
            raise ValueError(
                f"chat=True but the tokenizer of {self.model_id} has no chat template; "
                "use chat=False (raw prompts) or a model that ships a chat template"
            )
        texts = [
            tok.apply_chat_template(
                [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
            )
            for p in prompts
        ]
        ids = [list(x) for x in tok(texts, add_special_tokens=False)["input_ids"]]
        return texts, ids

    def vllm_config(self) -> Any:
        """The `vLLMEngineProcessorConfig` used for engine="vllm" (needs Ray initialised)."""
        import ray
        from ray.data.llm import vLLMEngineProcessorConfig

        engine_kwargs = dict(self.engine_kwargs)
        runtime_env = dict(self.runtime_env)
        pg = self.placement_group_config
        if not self._cluster_has_gpu(ray):
            pg = pg or {"bundle_per_worker": {"CPU": 1}}
            env_vars = dict(runtime_env.get("env_vars") or {})
            env_vars.setdefault(
                "VLLM_CPU_KVCACHE_SPACE",
                os.environ.get("VLLM_CPU_KVCACHE_SPACE", str(DEFAULT_CPU_KVCACHE_GIB)),
            )
            runtime_env["env_vars"] = env_vars
        kw: dict[str, Any] = {
            "model_source": self.model_id,
            "engine_kwargs": engine_kwargs,
            # (n, n): a fixed pool; a bare n lets Ray's autoscaler start fewer replicas.
            "concurrency": (self.num_replicas, self.num_replicas),
            "batch_size": self.batch_size,
            "chat_template_stage": False,
            "tokenize_stage": False,
            "detokenize_stage": False,
            "log_engine_metrics": False,
        }
        if pg is not None:
            kw["placement_group_config"] = pg
        if runtime_env:
            kw["runtime_env"] = runtime_env
        return vLLMEngineProcessorConfig(**kw)

    def _run_vllm(
        self,
        ray: Any,
        prompts: list[str],
        params: DecodingParams,
        sample_indices: list[int],
        chat: bool,
    ) -> list[dict[str, Any]]:
        from ray.data.llm import build_processor

        items: list[dict[str, Any]] = []
        if chat:
            texts, ids = self._render_chat(prompts)
        else:
            texts, ids = prompts, []
        for i, (text, s) in enumerate(zip(texts, sample_indices, strict=True)):
            item = {"idx": i, "prompt": text, "sampling_params": sampling_kwargs(params, s)}
            if chat:
                item["tokenized_prompt"] = ids[i]
            items.append(item)
        processor = build_processor(
            self.vllm_config(),
            preprocess=partial(_vllm_row, chat=chat),
            postprocess=partial(_vllm_result, max_tokens=params.max_new_tokens),
        )
        return processor(ray.data.from_items(items)).take_all()

    def _run_http(
        self,
        ray: Any,
        prompts: list[str],
        params: DecodingParams,
        sample_indices: list[int],
        chat: bool,
    ) -> list[dict[str, Any]]:
        from ray.data.llm import HttpRequestProcessorConfig, build_processor

        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        headers = {"Authorization": f"Bearer {key}"} if key else None
        shards: list[list[dict[str, Any]]] = [[] for _ in self.endpoints]
        for i, (p, s) in enumerate(zip(prompts, sample_indices, strict=True)):
            payload = request_body(self.model_id, p, params, s, chat)
            shards[i % len(self.endpoints)].append({"idx": i, "payload": payload})
        datasets = []
        for base, items in zip(self.endpoints, shards, strict=True):
            if not items:
                continue
            config = HttpRequestProcessorConfig(
                url=endpoint(base, chat),
                headers=headers,
                concurrency=self.num_replicas,
                batch_size=self.batch_size,
                max_retries=3,
            )
            processor = build_processor(
                config, preprocess=_http_row, postprocess=partial(_http_result, chat=chat)
            )
            datasets.append(processor(ray.data.from_items(items)))
        ds = datasets[0].union(*datasets[1:]) if len(datasets) > 1 else datasets[0]
        return ds.take_all()
