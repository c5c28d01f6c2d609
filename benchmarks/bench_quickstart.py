"""The quickstart's run against the raw engine time of the same calls, measured in one run.

Issue 22 item 5: after setup, the main command's run (`configs/offline.yaml`, 5 instructions per
type) should take <= 60 s on 2 idle cores and <= 1.1x the raw engine time of its calls.

1. The kit: `python -m ensemble_instruct_lib run --config CONFIG --out TMP` in a subprocess, with a
   fresh run dir and call cache (every call reaches an engine), timed from start to exit: Python
   start-up, imports, model loads, stages 1-4 and the export included. The manifest's per-stage
   timings are printed beside it.
2. Raw: every call the run made, read back from its call cache in the order it was made, replayed
   on `llama_cpp.Llama` directly (one `Llama` per GGUF, loaded once, load time counted): the same
   token ids (a chat call rendered through the GGUF's template with llama-cpp-python's own
   `Jinja2ChatFormatter`), the same sampler settings, and exactly as many new tokens as the call
   generated, with no stop-string checks, no cache, no parsing, no files.

3. The reference (`--reference`, default `configs/offline-one-model.yaml`, the quickstart's config
   before issue 22): the same `run` command on it, fresh, in the same session, so "<= 60 s against
   the 92 s the old default took" can be read as a ratio measured on the same machine state
   (60 / 92 = 0.65x). `--reference none` skips it.

Printed: the kit's and the raw times and their ratio (target <= 1.1x), what the raw time is made of
per model, and the kit's time against the reference's (target <= 0.65x). Only llama_cpp models can
be replayed; a config with other kinds is refused (the reference is only timed, never replayed).

Run:
  python benchmarks/bench_quickstart.py                    # configs/offline.yaml, 5 per type
  python benchmarks/bench_quickstart.py --quick            # 1 per type (the tests run this)
  python benchmarks/bench_quickstart.py --config configs/offline-one-model.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ensemble_instruct_lib.engines.models import KNOWN_MODELS, gguf_path  # noqa: E402
from ensemble_instruct_lib.runs.config import load_config  # noqa: E402


def run_kit(config: Path, out: Path, num: int | None) -> float:
    """Seconds for the whole `run` command in a fresh subprocess."""
    cmd = [sys.executable, "-m", "ensemble_instruct_lib", "run", "--config", str(config)]
    cmd += ["--out", str(out), "--no-progress"]
    if num is not None:
        cmd += ["--num-instructions", str(num)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def recorded_calls(cache: Path) -> list[dict[str, Any]]:
    """Every call of the run, in the order the cache stored them."""
    db = sqlite3.connect(cache)
    rows = db.execute(
        "SELECT backend, model_id, revision, params, prompt, sample_index, completion_tokens "
        "FROM calls ORDER BY created, rowid"
    ).fetchall()
    db.close()
    names = ("backend", "model_id", "revision", "params", "prompt", "sample_index", "tokens")
    calls = [dict(zip(names, r, strict=True)) for r in rows]
    for c in calls:
        c["params"] = json.loads(c["params"])
    return calls


def _gguf_for(revision: str) -> Path:
    digest = revision.removeprefix("sha256:")
    for km in KNOWN_MODELS.values():
        if km.gguf_sha256 == digest:
            return gguf_path(km.name)
    raise SystemExit(f"no known GGUF has {revision}: this benchmark replays known models only")


def replay_raw(calls: list[dict[str, Any]], n_ctx: int = 4096) -> dict[str, float]:
    """Seconds per model to load it and generate the calls' tokens on `llama_cpp.Llama`."""
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    seconds: dict[str, float] = {}
    for revision in dict.fromkeys(c["revision"] for c in calls):
        mine = [c for c in calls if c["revision"] == revision]
        t0 = time.perf_counter()
        llm = llama_cpp.Llama(
            model_path=str(_gguf_for(revision)),
            n_ctx=n_ctx,
            n_threads=os.cpu_count() or 1,
            n_threads_batch=os.cpu_count() or 1,
            verbose=False,
        )
        template = llm.metadata.get("tokenizer.chat_template")
        formatter = None
        if template:
            m = llm._model
            formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=m.token_get_text(m.token_eos()),
                bos_token=m.token_get_text(m.token_bos()) if m.token_bos() != -1 else "",
            )
        for c in mine:
            p = c["params"]
            if p.get("chat"):
                text = formatter(messages=[{"role": "user", "content": c["prompt"]}]).prompt
                ids = llm.tokenize(text.encode(), add_bos=False, special=True)
            else:
                ids = llm.tokenize(c["prompt"].encode(), add_bos=True, special=True)
            if p.get("do_sample"):
                llm.set_seed((p["seed"] + (c["sample_index"] or 0)) & 0xFFFFFFFF)
                sampling = {"temp": p["temperature"], "top_k": p["top_k"], "top_p": p["top_p"]}
            else:
                sampling = {"temp": 0.0, "top_k": 1, "top_p": 1.0}
            n = 0
            if c["tokens"]:
                for _ in llm.generate(
                    ids, min_p=0.0, typical_p=1.0, repeat_penalty=1.0, **sampling
                ):
                    n += 1
                    if n >= c["tokens"]:
                        break
        llm.close()
        seconds[mine[0]["model_id"]] = seconds.get(mine[0]["model_id"], 0.0) + (
            time.perf_counter() - t0
        )
    return seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/offline.yaml")
    ap.add_argument("--num-instructions", type=int, help="per task type (default: the config's)")
    ap.add_argument("--quick", action="store_true", help="1 instruction per type")
    ap.add_argument(
        "--reference",
        default="configs/offline-one-model.yaml",
        help="a config timed the same way for a same-session ratio ('none': skip)",
    )
    args = ap.parse_args(argv)
    config = (REPO / args.config).resolve()
    cfg = load_config(config)
    kinds = {cfg.generator.kind, *(m.kind for m in cfg.extra_models)}
    if kinds != {"llama_cpp"}:
        raise SystemExit(f"only llama_cpp models can be replayed raw; {config} uses {kinds}")
    num = 1 if args.quick else args.num_instructions
    with tempfile.TemporaryDirectory(prefix="bench-quickstart-") as tmp:
        out = Path(tmp) / "run"
        kit = run_kit(config, out, num)
        manifest = json.loads((out / "manifest.json").read_text())
        calls = recorded_calls(out / "cache.sqlite")
        raw = replay_raw(calls)
        ref = None
        if args.reference != "none":
            ref = run_kit((REPO / args.reference).resolve(), Path(tmp) / "reference", num)
    total_raw = sum(raw.values())
    tokens = sum(c["tokens"] for c in calls)
    print(f"config {args.config}, {num or cfg.num_instructions} instructions per type")
    print(f"  calls: {len(calls)} ({tokens} generated tokens)")
    timings = manifest.get("timings_s", {})
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in timings.items() if isinstance(v, int | float))
    print(f"  kit, the whole `run` command: {kit:.1f} s ({stages})")
    for model, s in raw.items():
        print(f"  raw llama.cpp, {model}: {s:.1f} s (load + the same tokens)")
    print(f"  raw engine time of the same calls: {total_raw:.1f} s")
    print(f"  kit / raw: {kit / total_raw:.3f}x (target <= 1.1x); kit <= 60 s: {kit <= 60}")
    if ref is not None:
        print(f"  reference {args.reference}, the whole `run` command: {ref:.1f} s")
        print(f"  kit / reference: {kit / ref:.3f}x (target <= 0.65x: 60 s against its 92 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
