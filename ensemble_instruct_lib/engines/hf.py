"""In-process `transformers` backend: any hub id or local checkpoint (METHOD.md stages 1-3).

Runs decoder-only LMs (falcon, llama, gpt-neox, ...) and encoder-decoder LMs (Flan-T5, Flan-UL2)
through `generate` with the settings measured in ../shared/docs/TRANSFORMERS-NOTES.md: a pad token
(EOS when the tokenizer has none), left padding for decoder-only batches, the attention mask and
`max_new_tokens` always passed, only generated ids decoded, prompts sorted by token length and
batched under a row cap and a token budget (rows x longest prompt, padding included), so one long
prompt does not pad a whole batch to its length. Stop strings are matched with transformers' own `StopStringCriteria` (it needs the
tokenizer), wrapped in a criterion that also honours `min_new_tokens` (a stop string cannot end
generation before that many tokens, as in vLLM) and records where each sequence ended, which gives
`finish_reason` and exact completion token counts; the text is then cut before the first stop
string, since `generate` keeps it (with `keep_after_stop`, only the stop string that ended it is
removed: `base.cut_generated`).

Sampling is reproducible: before each batch, torch is seeded from `params.seed` and the batch's
sample indices (the caller's RNG state is restored afterwards). The batch a prompt lands in depends
on the other prompts of the call, so a sample is reproducible for the same call, not for the same
prompt in another mix (the call cache stores it once drawn).

A hub id is checked against the hub once before loading (one request, no retries) unless
HF_HUB_OFFLINE is set: when the hub cannot be reached, a cached model loads from the hub cache and
an uncached one is a one-line `ConfigError` naming the id and the offline ways out.

Left out: multi-GPU sharding, quantization and continuous batching (use the vLLM backend for
throughput).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    StoppingCriteria,
    StoppingCriteriaList,
    StopStringCriteria,
)

from ..errors import ConfigError
from .base import Backend, DecodingParams, Generation, candidate_token_ids, cut_generated
from .isolation import PromptTooLong
from .models import describe_model_value

_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_WEIGHT_SUFFIXES = (".json", ".safetensors", ".bin", ".model", ".txt", ".jinja", ".py")
#: Files larger than this are digested from their size and three 4 MiB windows, not read whole.
_FULL_HASH_LIMIT = 64 << 20
_WINDOW = 4 << 20


def resolve_device(device: str = "auto") -> str:
    """ "auto" -> "cuda" when available, else "mps" when available, else "cpu"."""
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    """ "auto" -> bfloat16 on CUDA when supported (else float16), float32 elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "half": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    if dtype not in names:
        raise ValueError(
            f"dtype must be 'auto', a torch.dtype or one of {sorted(names)}, got {dtype!r}"
        )
    return names[dtype]


def _file_digest(path: Path, h: Any) -> None:
    size = path.stat().st_size
    h.update(f"{path.name}\0{size}\0".encode())
    with open(path, "rb") as f:
        if size <= _FULL_HASH_LIMIT:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
            return
        for offset in (0, size // 2, size - _WINDOW):
            f.seek(offset)
            h.update(f.read(_WINDOW))


def local_digest(folder: str | Path) -> str:
    """A short digest of a local checkpoint's config, tokenizer and weight files.

    Small files are hashed whole; weight files above 64 MiB are hashed from their size and three
    4 MiB windows (start, middle, end), so a 40B checkpoint is pinned in a second, not minutes.
    """
    h = hashlib.sha256()
    files = sorted(
        p for p in Path(folder).iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES)
    )
    for p in files:
        _file_digest(p, h)
    return "local-" + h.hexdigest()[:16]


def resolve_revision(model: str, revision: str | None, cache_dir: str | None = None) -> str:
    """What pins the weights: a commit hash when the hub cache knows one, else the given revision,
    else a digest of the local files."""
    if os.path.isdir(model):
        return revision or local_digest(model)
    if revision is not None and _COMMIT_RE.match(revision):
        return revision
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(model, "config.json", cache_dir=cache_dir, revision=revision)
    except Exception:  # an id the hub helpers reject: fall back to what we were given
        hit = None
    if isinstance(hit, str):
        snapshot = Path(hit).parent.name
        if _COMMIT_RE.match(snapshot):
            return snapshot
    return revision or ""


def _context_length(config: Any) -> int | None:
    """The model's maximum sequence length from its config (None when it has no fixed one)."""
    if getattr(config, "is_encoder_decoder", False):
        return None  # T5-style relative positions: no hard limit
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _sampling_seed(seed: int, sample_indices: Sequence[int]) -> int:
    key = f"{seed}:{','.join(map(str, sample_indices))}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & ((1 << 63) - 1)


#: Exception classes (by name, anywhere in the chain) that mean the hub could not be reached.
_UNREACHABLE = frozenset(
    {
        "LocalEntryNotFoundError",  # huggingface_hub: not cached, and the hub not asked/answering
        "OfflineModeIsEnabled",
        "ConnectError",  # httpx
        "ConnectTimeout",
        "TimeoutException",
        "NetworkError",
        "ConnectionError",  # requests, and the builtin
    }
)


def _chain(e: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = e
    while cur is not None and cur not in out:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def hub_unreachable(e: BaseException) -> bool:
    """Whether a load failure came from a hub that could not be reached (offline mode included),
    as opposed to a missing, private or broken model."""
    for x in _chain(e):
        if any(c.__name__ in _UNREACHABLE for c in type(x).__mro__):
            return True
        if "couldn't connect to" in str(x):
            return True
    return False


def _offline_mode() -> bool:
    try:
        from huggingface_hub.constants import is_offline_mode
    except ImportError:  # an older huggingface_hub
        return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    return bool(is_offline_mode())


def _short_reason(e: BaseException) -> str:
    """The innermost system reason of a failed connection (``Name or service not known``), else
    the first line of the innermost error."""
    chain = _chain(e)
    for x in reversed(chain):
        if isinstance(x, OSError) and x.strerror:
            return str(x.strerror)[:160]
    text = str(chain[-1]).strip()
    return (text.splitlines()[0] if text else type(chain[-1]).__name__)[:160]


def _unreachable_reason(e: BaseException) -> str:
    """Why the hub could not be reached: offline mode, or the innermost reason."""
    if _offline_mode():
        return "HF_HUB_OFFLINE is set, so the hub is not asked"
    return _short_reason(e)


def hub_probe(timeout: float = 5.0) -> BaseException | None:
    """One request to the hub (no retries, the hub client's own proxies): None when it answers
    (any status), else the error that says it cannot be reached."""
    try:
        from huggingface_hub.constants import ENDPOINT
        from huggingface_hub.utils import get_session
    except ImportError:
        return None
    try:
        get_session().head(ENDPOINT, timeout=timeout, follow_redirects=False)
    except Exception as e:
        return e if hub_unreachable(e) else None
    return None


def _offline_load_options(
    model: str, revision: str | None, cache_dir: str | None
) -> dict[str, Any]:
    """Extra `from_pretrained` options for a hub id when the hub cannot be reached.

    Without this, huggingface_hub retries each file for about 25 s (a warning per try) before
    transformers falls back to the cache or fails. One quick probe instead: a cached model loads
    from the cache (``local_files_only``); an uncached one is the one-line `ConfigError`.
    """
    if os.path.isdir(model) or _offline_mode():
        return {}
    error = hub_probe()
    if error is None:
        return {}
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(model, "config.json", cache_dir=cache_dir, revision=revision)
    except Exception:  # an id the hub helpers reject: let from_pretrained say what is wrong
        return {}
    if isinstance(hit, str):
        return {"local_files_only": True}
    raise _unreachable_error(model, error)


def _hub_endpoint() -> str:
    try:
        from huggingface_hub.constants import ENDPOINT
    except ImportError:
        return "https://huggingface.co"
    return ENDPOINT


def _unreachable_error(model: str, e: BaseException) -> ConfigError:
    from .models import KNOWN_MODELS

    return ConfigError(
        f"model {model!r} could not be loaded{describe_model_value(model)}: it is not a local "
        "folder, a known name or in the local hub cache, and the Hugging Face hub "
        f"({_hub_endpoint()}) could not be reached to download it ({_unreachable_reason(e)}); "
        f"use a local checkpoint folder, a known model name ({', '.join(sorted(KNOWN_MODELS))}: "
        "python -m ensemble_instruct_lib models list), or fill the hub cache on a machine with "
        "internet and run with HF_HUB_OFFLINE=1"
    )


@contextlib.contextmanager
def _load_errors(model: str) -> Iterator[None]:
    """Turn transformers' / huggingface_hub's load failures into one-line `ConfigError`s: an
    unreachable hub (offline) names the model id and the offline ways out."""
    try:
        yield
    except Exception as e:
        if not os.path.isdir(model) and hub_unreachable(e):
            raise _unreachable_error(model, e) from None
        if isinstance(e, OSError):  # missing files, an unknown or private hub repo
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            where = (
                "the local folder has no loadable checkpoint"
                if os.path.isdir(model)
                else "it is not a local folder, and as a hub id it is neither in the local hub "
                "cache nor reachable (offline?)"
            )
            raise ConfigError(
                f"model {model!r} could not be loaded{describe_model_value(model)}: {where} "
                f"({first[:200]}); give a local checkpoint folder, a hub id you can reach, or a "
                "known name (python -m ensemble_instruct_lib models list)"
            ) from None
        if type(e).__name__ == "HFValidationError":
            raise ConfigError(
                f"model {model!r} is neither an existing folder nor a valid hub id ({e}); "
                "check the path, or see python -m ensemble_instruct_lib models list"
            ) from None
        raise


#: `_load_errors` for the other places that load a model or tokenizer with transformers
#: (fine-tuning, reward and embedding models): the same one-line errors
load_errors = _load_errors

#: Default cap on prompt tokens per `generate` call: rows x the longest prompt (padding included).
DEFAULT_MAX_BATCH_TOKENS = 16384


def token_budget_batches(
    lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None
) -> list[list[int]]:
    """Group prompt indices into batches, longest prompts first.

    Prompts are sorted by token length (longest first, ties in input order) and cut into runs of
    at most `batch_size`; with `max_batch_tokens`, a run also ends before rows x its first (longest)
    length would exceed the budget. A prompt longer than the budget gets a batch of its own.

    Args:
        lengths: token count of each prompt.
        batch_size: most rows per batch.
        max_batch_tokens: most padded prompt tokens per batch (None: no token cap).

    Returns:
        Lists of indices into `lengths`, in the order they run.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        b = batches[-1] if batches else None
        if (
            b is None
            or len(b) >= batch_size
            or (max_batch_tokens is not None and (len(b) + 1) * lengths[b[0]] > max_batch_tokens)
        ):
            batches.append([i])
        else:
            b.append(i)
    return batches


class HFBackend(Backend):
    """A `transformers` model loaded in this process.

    Args:
        model: a hub id ("google/flan-t5-xxl") or a local checkpoint folder; both go through the
            same `from_pretrained` calls.
        revision: a branch, tag or commit of the hub repo (None: the default branch).
        device: "auto" (cuda, else mps, else cpu) or a torch device string.
        dtype: "auto" (bfloat16 on CUDA when supported, float32 on CPU), a name or a torch.dtype.
        batch_size: most prompts per `generate` call; prompts are sorted by length before batching.
        max_batch_tokens: most prompt tokens per `generate` call, counted as rows x the longest
            prompt of the batch (padding included); None: only `batch_size` limits a batch. A
            prompt longer than this runs alone. Greedy results do not depend on it.
        trust_remote_code: passed to `from_pretrained` (needed by some older hub models).
        cache_dir: the hub cache to read and download to (None: the default one).
    """

    name = "hf"

    def __init__(
        self,
        model: str,
        *,
        revision: str | None = None,
        device: str = "auto",
        dtype: str | torch.dtype = "auto",
        batch_size: int = 8,
        max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS,
        trust_remote_code: bool = False,
        cache_dir: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be >= 1 or None, got {max_batch_tokens}")
        self.model_id = str(model)
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        load = {
            "revision": revision,
            "trust_remote_code": trust_remote_code,
            "cache_dir": cache_dir,
        }
        load.update(_offline_load_options(self.model_id, revision, cache_dir))
        # transformers 5.25 looks for a PEFT adapter with `adapter_kwargs` only: without
        # local_files_only there, that lookup asks the hub (and retries for ~25 s offline)
        offline = {"local_files_only": True, "cache_dir": cache_dir}
        adapter = {"adapter_kwargs": offline} if load.get("local_files_only") else {}
        with _load_errors(self.model_id):
            config = AutoConfig.from_pretrained(self.model_id, **load)
            self.is_encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
            auto_cls = AutoModelForSeq2SeqLM if self.is_encoder_decoder else AutoModelForCausalLM
            self.model = auto_cls.from_pretrained(
                self.model_id, config=config, dtype=self.dtype, **load, **adapter
            )
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_id, **load)
        self.model.to(self.device)
        self.model.eval()
        tok = self.tokenizer
        if tok.pad_token is None:
            if tok.eos_token is None:
                raise ValueError(
                    f"the tokenizer of {self.model_id} has neither a pad nor an EOS token; "
                    "batched generation needs one: set tokenizer.pad_token on a local copy"
                )
            tok.pad_token = tok.eos_token
        if not self.is_encoder_decoder:
            tok.padding_side = "left"
        self.revision = resolve_revision(self.model_id, revision, cache_dir)
        self.context_length = _context_length(config)
        self._stop_criteria: dict[tuple[str, ...], Any] = {}
        self._candidate_ids: dict[tuple[str, ...], dict[str, list[int]]] = {}

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            device=self.device,
            dtype=str(self.dtype).removeprefix("torch."),
            encoder_decoder=self.is_encoder_decoder,
            batch_size=self.batch_size,
            max_batch_tokens=self.max_batch_tokens,
        )
        return d

    def check_prompts(self, prompts: Sequence[str], params: DecodingParams) -> list[str | None]:
        """Per prompt, why it cannot fit the model's context (one line), or None when it fits.

        The limit is the config's context length, else (decoder-only) the tokenizer's
        `model_max_length` when it is a real number; the prompt's tokens plus `max_new_tokens`
        must fit it (encoder-decoder: the prompt alone). Used before a call by
        `engines.isolation.generate_isolated`, so an over-long prompt is never sent.
        """
        limit = self.context_length
        if limit is None and not self.is_encoder_decoder:
            n = getattr(self.tokenizer, "model_max_length", None)
            limit = n if isinstance(n, int) and 0 < n < 1_000_000 else None
        if not limit:
            return [None] * len(prompts)
        texts = [self.render(p, params.chat) for p in prompts]
        ids = self.tokenizer(texts, add_special_tokens=not params.chat)["input_ids"]
        extra = 0 if self.is_encoder_decoder else params.max_new_tokens
        return [
            None
            if len(t) + extra <= limit
            else (
                f"prompt_too_long: the prompt has {len(t)} tokens"
                + (f" + max_new_tokens={extra}" if extra else "")
                + f", over {self.model_id}'s context of {limit} tokens (use fewer "
                "demonstrations, a smaller max_new_tokens, or a model with a longer context)"
            )
            for t in ids
        ]

    # ----------------------------------------------------------------------------------------

    def chat_template(self) -> str | None:
        """The tokenizer's chat template, or None."""
        return getattr(self.tokenizer, "chat_template", None) or None

    def render(self, prompt: str, chat: bool) -> str:
        """The text actually tokenized: the prompt, or its chat-template rendering when `chat`."""
        if not chat:
            return prompt
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(
                f"chat=True but the tokenizer of {self.model_id} has no chat template; "
                "use chat=False (raw prompts) or a model that ships a chat template"
            )
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )

    def _generate(
        self, prompts: list[str], params: DecodingParams, sample_indices: list[int]
    ) -> list[Generation]:
        texts = [self.render(p, params.chat) for p in prompts]
        # A chat template already carries the special tokens the model expects.
        add_special = not params.chat
        lengths = [
            len(ids) for ids in self.tokenizer(texts, add_special_tokens=add_special)["input_ids"]
        ]
        if not self.is_encoder_decoder:
            for i, n in enumerate(lengths):
                if n == 0:
                    raise ValueError(
                        f"prompt {i} encodes to no tokens; a decoder-only model needs a "
                        "non-empty prompt"
                    )
        if self.context_length:
            budget = self.context_length - (0 if self.is_encoder_decoder else params.max_new_tokens)
            longest = max(lengths)
            if longest > budget:
                raise PromptTooLong(
                    f"a prompt of {longest} tokens does not fit {self.model_id}'s context of "
                    f"{self.context_length} tokens"
                    + (
                        ""
                        if self.is_encoder_decoder
                        else f" with max_new_tokens={params.max_new_tokens}"
                    )
                    + ": use fewer demonstrations (instruction.num_seed_demos, instance.num_demos), "
                    "a smaller max_new_tokens, or a model with a longer context"
                )
        results: list[Generation | None] = [None] * len(texts)
        for idx in token_budget_batches(lengths, self.batch_size, self.max_batch_tokens):
            batch = self._generate_batch(
                [texts[i] for i in idx], params, [sample_indices[i] for i in idx], add_special
            )
            for i, g in zip(idx, batch, strict=True):
                results[i] = g
        return [g for g in results if g is not None]

    def _stop_criterion(self, stop: tuple[str, ...]) -> Any:
        if stop not in self._stop_criteria:
            self._stop_criteria[stop] = StopStringCriteria(self.tokenizer, list(stop))
        return self._stop_criteria[stop]

    def _eos_ids(self, gen_config: Any) -> torch.Tensor:
        """The ids that end a sequence: the generation config's EOS ids and the tokenizer's."""
        eos = gen_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos])
        ids.add(self.tokenizer.eos_token_id)
        return torch.tensor(sorted(i for i in ids if i is not None), dtype=torch.long)

    def _generation_config(self, params: DecodingParams) -> Any:
        gc = copy.deepcopy(self.model.generation_config)
        gc.max_new_tokens = params.max_new_tokens
        gc.min_new_tokens = params.min_new_tokens or None
        gc.pad_token_id = self.tokenizer.pad_token_id
        gc.num_beams = 1
        gc.num_return_sequences = 1
        gc.do_sample = params.do_sample
        if params.do_sample:
            gc.temperature = params.temperature
            gc.top_k = params.top_k
            gc.top_p = params.top_p
        else:
            gc.temperature = gc.top_k = gc.top_p = None
        return gc

    def _generate_batch(
        self,
        texts: list[str],
        params: DecodingParams,
        sample_indices: list[int],
        add_special: bool,
    ) -> list[Generation]:
        enc = self.tokenizer(
            texts, return_tensors="pt", padding=True, add_special_tokens=add_special
        ).to(self.device)
        start_len = 1 if self.is_encoder_decoder else enc["input_ids"].shape[1]
        gen_config = self._generation_config(params)
        tracker = _FinishTracker(
            start_len=start_len,
            min_new_tokens=params.min_new_tokens,
            stop=self._stop_criterion(params.stop) if params.stop else None,
            eos=self._eos_ids(gen_config).to(self.device),
            batch=len(texts),
        )
        kwargs = {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "generation_config": gen_config,
            "stopping_criteria": StoppingCriteriaList([tracker]),
        }
        if params.do_sample:
            cuda = [torch.device(self.device)] if self.device.startswith("cuda") else []
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(_sampling_seed(params.seed, sample_indices))
                out = self.model.generate(**kwargs)
        else:
            out = self.model.generate(**kwargs)
        generated = out[:, start_len:].cpu()
        prompt_tokens = enc["attention_mask"].sum(dim=1).tolist()
        results = []
        for i in range(len(texts)):
            n = tracker.done_at[i] if tracker.done_at[i] is not None else generated.shape[1]
            text = self.tokenizer.decode(generated[i, :n], skip_special_tokens=True)
            text = cut_generated(text, params)
            results.append(
                Generation(
                    text=text,
                    finish_reason="stop" if tracker.done_at[i] is not None else "length",
                    prompt_tokens=int(prompt_tokens[i]),
                    completion_tokens=int(n),
                )
            )
        return results

    def next_token_logprobs(
        self, prompts: Sequence[str], candidates: Sequence[str], chat: bool = False
    ) -> list[dict[str, float]]:
        """Per prompt, the log-probability that the next token spells each candidate (see
        `Backend.next_token_logprobs`): one forward pass over the prompt (batched as `generate`
        batches, left padding with position ids from the attention mask), log-softmax of the
        last position's logits (an encoder-decoder's first decoder step), log-sum-exp over the
        candidate's tokens."""
        key = tuple(candidates)
        if key not in self._candidate_ids:
            texts = self.tokenizer.batch_decode(
                [[i] for i in range(len(self.tokenizer))], skip_special_tokens=True
            )
            self._candidate_ids[key] = candidate_token_ids(texts, key)
        ids = self._candidate_ids[key]
        texts = [self.render(p, chat) for p in prompts]
        add_special = not chat
        lengths = [
            len(t) for t in self.tokenizer(texts, add_special_tokens=add_special)["input_ids"]
        ]
        results: list[dict[str, float]] = [{} for _ in texts]
        for idx in token_budget_batches(lengths, self.batch_size, self.max_batch_tokens):
            enc = self.tokenizer(
                [texts[i] for i in idx],
                return_tensors="pt",
                padding=True,
                add_special_tokens=add_special,
            ).to(self.device)
            kwargs: dict[str, Any] = {"attention_mask": enc["attention_mask"]}
            if self.is_encoder_decoder:
                start = self.model.generation_config.decoder_start_token_id
                if start is None:
                    start = self.model.config.decoder_start_token_id
                kwargs["decoder_input_ids"] = torch.full(
                    (len(idx), 1), int(start), dtype=torch.long, device=self.device
                )
            else:
                mask = enc["attention_mask"]
                kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.no_grad():
                logits = self.model(input_ids=enc["input_ids"], **kwargs).logits[:, -1]
            logp = logits.float().log_softmax(-1).cpu()
            for row, i in enumerate(idx):
                results[i] = {
                    c: float(torch.logsumexp(logp[row, tok], dim=0)) for c, tok in ids.items()
                }
        return results

    def close(self) -> None:
        self.model = None
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()


class _FinishTracker(StoppingCriteria):
    """Ends a sequence at EOS or (after `min_new_tokens`) a stop string; records the step.

    `done_at[i]` is the number of new tokens sequence i had when it ended (EOS or stop-string
    tokens included), or None if it ran to the length limit.
    """

    def __init__(
        self, *, start_len: int, min_new_tokens: int, stop: Any, eos: Any, batch: int
    ) -> None:
        self.start_len = start_len
        self.min_new_tokens = min_new_tokens
        self.stop = stop
        self.eos = eos
        self.done_at: list[int | None] = [None] * batch

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        n_new = input_ids.shape[1] - self.start_len
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if self.eos.numel():
            done |= torch.isin(input_ids[:, -1], self.eos)
        if self.stop is not None and n_new >= max(self.min_new_tokens, 1):
            done |= self.stop(input_ids, scores).to(done.device)
        for i in done.nonzero().flatten().tolist():
            if self.done_at[i] is None:
                self.done_at[i] = n_new
        return done
