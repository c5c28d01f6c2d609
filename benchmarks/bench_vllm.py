"""Generated tokens per second: VLLMBackend against HFBackend, same prompts, same model, same run.

A tiny random-weight Llama is built locally (no download); both backends decode the same prompts
greedily with the same `max_new_tokens`. HFBackend batches prompts sorted by length
(`--hf-batch-size`, 8 by default: the best setting measured in TRANSFORMERS-NOTES.md); VLLMBackend
gets every prompt in one call (continuous batching). Each backend is warmed up with one short call
first, then timed `--repeats` times (best kept: the 2-core machine is shared); the vLLM engine
start is timed and reported separately from generation. The completion
token counts of both backends are checked equal (greedy decoding gives the same token ids).

Prompts: `--shots 0` (default) gives short stage-2 style prompts ("instruction: ...\\noutput:"),
`--shots 24` gives long 24-shot stage-1 style prompts (numbered seed instructions).

Run (needs the vllm extra; `if __name__ == "__main__"` guard below is what vLLM's spawn needs):
    python benchmarks/bench_vllm.py [--prompts 64] [--max-new-tokens 128] [--shots 0]
        [--vllm-mode spawn|inprocess] [--compile] [--hidden 128] [--layers 2]
        [--servers [--concurrency 16] [--vllm-python .venv-vllm/bin/python]]

With --servers, the same prompts also go through OpenAICompatBackend to `transformers serve`
(with and without --continuous-batching) and to vLLM's api_server, each started on 127.0.0.1 by
`ensemble_instruct_lib.testing.servers` (start time in the last column) and stopped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

DATA = Path(os.environ.get("EI_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def build_prompts(n: int, shots: int, seed: int = 0) -> list[str]:
    """n prompts from the public seed tasks: short (shots=0) or `shots`-shot numbered lists."""
    path = DATA / "self_instruct" / "seed_tasks.jsonl"
    tasks = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    rng = random.Random(seed)
    prompts = []
    for i in range(n):
        t = tasks[i % len(tasks)]
        if shots == 0:
            inp = t["instances"][0]["input"]
            prompts.append(f"instruction: {t['instruction']}\ninput: {inp}\noutput:")
        else:
            demos = rng.sample(tasks, shots)
            lines = [f"{k + 1}. {d['instruction']} |EoS|" for k, d in enumerate(demos)]
            prompts.append(
                "Come up with a series of tasks:\n" + "\n".join(lines) + f"\n{shots + 1}."
            )
    return prompts


def timed_generate(backend, prompts, params, repeats=1):
    """The outputs and the best wall time of `repeats` identical calls (the machine is shared)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = backend.generate(prompts, params)
        best = min(best, time.perf_counter() - t0)
    return out, best


def bench_servers(model, prompts, params, warm, *, vllm_python, concurrency, repeats):
    """Rows for OpenAICompatBackend against each local server kind that can start here."""
    from ensemble_instruct_lib.engines.openai_compat import OpenAICompatBackend
    from ensemble_instruct_lib.testing.servers import LocalServer, missing_requirement

    configs = [
        ("transformers serve", "transformers", {}),
        ("transformers serve --continuous-batching", "transformers", {"continuous_batching": True}),
        (
            "vLLM api_server (eager)",
            "vllm",
            {"python": vllm_python, "extra_args": ["--enforce-eager", "--max-model-len", "4096"]},
        ),
    ]
    rows = []
    for label, engine, kw in configs:
        reason = missing_requirement(engine, kw.get("python"))
        if reason:
            print(f"skipped {label}: {reason}")
            continue
        with LocalServer(model, engine, dtype="float32", **kw) as srv:
            be = OpenAICompatBackend(
                srv.model,
                srv.base_url,
                max_concurrency=concurrency,
                timeout=900,
                api_key_env="EI_BENCH_NO_KEY",
            )
            be.generate(prompts[:2], warm)
            out, sec = timed_generate(be, prompts, params, repeats)
            be.close()
        label = f"{label} ({concurrency} concurrent)"
        rows.append((label, out, sec, f"{srv.startup_s:.1f}"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--shots", type=int, default=0)
    ap.add_argument("--hf-batch-size", type=int, default=8)
    ap.add_argument("--vllm-mode", choices=("spawn", "inprocess"), default="spawn")
    ap.add_argument("--hidden", type=int, default=128, help="model width (head size = hidden/4)")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--model", default=None, help="use this checkpoint instead of a tiny one")
    ap.add_argument("--compile", action="store_true", help="let vLLM compile (no enforce_eager)")
    ap.add_argument(
        "--servers",
        action="store_true",
        help="also time OpenAICompatBackend against local transformers/vLLM servers",
    )
    ap.add_argument("--concurrency", type=int, default=16, help="client requests in flight")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per backend; best is kept")
    ap.add_argument(
        "--vllm-python",
        default=os.environ.get("EI_VLLM_PYTHON"),
        help="interpreter with vllm for the vLLM server (default: this one)",
    )
    args = ap.parse_args()

    from ensemble_instruct_lib.engines.base import DecodingParams
    from ensemble_instruct_lib.engines.hf import HFBackend
    from ensemble_instruct_lib.engines.vllm_engine import VLLMBackend, vllm_version

    workdir = tempfile.TemporaryDirectory(prefix="bench_vllm_")
    if args.model is None:
        from ensemble_instruct_lib.testing.tiny import build_tiny_model

        model = str(
            build_tiny_model(
                Path(workdir.name) / "tiny_llama",
                "llama",
                seed=0,
                hidden=args.hidden,
                layers=args.layers,
                seed_path=DATA / "self_instruct" / "seed_tasks.jsonl",
            )
        )
    else:
        model = args.model
    prompts = build_prompts(args.prompts, args.shots)
    params = DecodingParams(max_new_tokens=args.max_new_tokens)
    warm = DecodingParams(max_new_tokens=4)

    hf = HFBackend(model, dtype="float32", batch_size=args.hf_batch_size)
    prompt_tokens = sum(len(hf.tokenizer(p)["input_ids"]) for p in prompts)
    hf.generate(prompts[:2], warm)
    hf_out, hf_s = timed_generate(hf, prompts, params, args.repeats)
    hf.close()

    vl = VLLMBackend(
        model,
        dtype="float32",
        max_model_len=4096,
        multiprocessing=args.vllm_mode == "spawn",
        enforce_eager=not args.compile,
    )
    t0 = time.perf_counter()
    _ = vl.llm
    start_s = time.perf_counter() - t0
    vl.generate(prompts[:2], warm)
    vl_out, vl_s = timed_generate(vl, prompts, params, args.repeats)
    vl.close()

    server_rows = []
    if args.servers:
        server_rows = bench_servers(
            model,
            prompts,
            params,
            warm,
            vllm_python=args.vllm_python,
            concurrency=args.concurrency,
            repeats=args.repeats,
        )

    hf_tok = sum(g.completion_tokens for g in hf_out)
    vl_tok = sum(g.completion_tokens for g in vl_out)
    same_counts = [g.completion_tokens for g in hf_out] == [g.completion_tokens for g in vl_out]
    same_text = sum(
        a.text.rstrip("\ufffd") == b.text.rstrip("\ufffd")
        for a, b in zip(hf_out, vl_out, strict=True)
    )
    rows = [
        (f"HFBackend (batch {args.hf_batch_size}, sorted)", hf_tok, hf_s, "-"),
        (
            f"VLLMBackend ({args.vllm_mode}{', compiled' if args.compile else ''}, one call)",
            vl_tok,
            vl_s,
            f"{start_s:.1f}",
        ),
    ]
    what = f"tiny llama hidden={args.hidden} layers={args.layers}" if args.model is None else model
    print(
        f"\nmodel: {what} | {args.prompts} prompts, {args.shots}-shot, {prompt_tokens / len(prompts):.0f} prompt "
        f"tokens on average | greedy, max_new_tokens={args.max_new_tokens} | {vllm_version()} | "
        f"cpus={os.cpu_count()}"
    )
    rows += [(n, sum(g.completion_tokens for g in o), sec, st) for n, o, sec, st in server_rows]
    width = max(len(r[0]) for r in rows)
    print(f"{'backend':<{width}} {'gen tokens':>10} {'seconds':>8} {'tok/s':>8} {'start s':>8}")
    for name, tok, sec, start in rows:
        print(f"{name:<{width}} {tok:>10} {sec:>8.2f} {tok / sec:>8.0f} {start:>8}")
    print(f"vLLM / HF generated tok/s: {(vl_tok / vl_s) / (hf_tok / hf_s):.2f}x")
    print(
        f"greedy agreement: completion token counts {'identical' if same_counts else 'DIFFER'}; "
        f"texts equal (up to a trailing U+FFFD) for {same_text}/{len(prompts)}"
    )
    workdir.cleanup()


if __name__ == "__main__":
    main()
