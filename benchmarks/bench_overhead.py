"""Overhead of the kit around an engine (issue: performance, item 4): everything a run does
besides generating -- prompt building, the call cache, parsing, filters, consensus, JSONL and
manifest writing -- as a fraction of the time spent inside the engines.

Each backend of the run is wrapped in a `TimedBackend`, which sits *under* the call cache (the
pipeline wraps whatever `run(backends=...)` gets in its `CachedBackend`) and adds up the seconds
spent in the wrapped backend's `generate`. Then

    overhead = wall time of `pipeline.run` - engine time,   reported as overhead / engine time.

Works with any backend kind: `--config` builds every model of the config with `make_backend`
(hf, vllm, openai, recorded, ...) before the clock starts, so model loading is not counted.
Without a real model, `--fake` uses the scripted fake LMs of `testing.fake` with a fixed
latency per prompt (`--latency`), which shows the kit's own cost per prompt. The overhead includes
the run's fixed set-up (seeds, cache file, manifest), so small runs overstate the fraction.

Run:
  python benchmarks/bench_overhead.py                       # fake LMs, 50 ms per prompt
  python benchmarks/bench_overhead.py --config configs/quickstart.yaml --stages 1 2 3 4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ensemble_instruct_lib.engines.base import Backend, DecodingParams, Generation
from ensemble_instruct_lib.runs.config import RunConfig, load_config
from ensemble_instruct_lib.runs.pipeline import run

REPO = Path(__file__).resolve().parents[1]


class TimedBackend(Backend):
    """A backend that times (and optionally slows down) another backend's `generate`.

    Args:
        inner: the backend to time.
        latency_s: extra seconds slept per prompt, inside the timed span (a stand-in engine
            cost for scripted backends).
    """

    def __init__(self, inner: Backend, latency_s: float = 0.0) -> None:
        self.inner = inner
        self.latency_s = latency_s
        self.name = inner.name
        self.model_id = inner.model_id
        self.revision = inner.revision
        self.engine_s = 0.0
        self.calls = 0
        self.prompts = 0

    def _generate(
        self, prompts: list[str], params: DecodingParams, sample_indices: list[int]
    ) -> list[Generation]:
        t = time.perf_counter()
        if self.latency_s:
            time.sleep(self.latency_s * len(prompts))
        out = self.inner.generate(prompts, params, sample_indices)
        self.engine_s += time.perf_counter() - t
        self.calls += 1
        self.prompts += len(prompts)
        return out

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def close(self) -> None:
        self.inner.close()


def measure_overhead(
    config: RunConfig,
    backends: dict[str, Backend],
    out_dir: str | Path,
    *,
    latency_s: float = 0.0,
    stages: Sequence[int] = (1, 2, 3, 4),
) -> dict[str, float]:
    """Run `config` with every backend timed; returns wall, engine and overhead seconds.

    Args:
        config: the run configuration.
        backends: ready backends by model name (built before the clock starts).
        out_dir: a fresh run dir (a reused one would answer from its call cache).
        latency_s: seconds added per prompt generated (scripted backends).
        stages: the pipeline stages to run.
    """
    timed = {name: TimedBackend(b, latency_s) for name, b in backends.items()}
    t = time.perf_counter()
    run(config, out_dir, backends=timed, progress=False, stages=stages, export=False)
    wall = time.perf_counter() - t
    engine = sum(b.engine_s for b in timed.values())
    calls = sum(b.calls for b in timed.values())
    prompts = sum(b.prompts for b in timed.values())
    return {
        "wall_s": wall,
        "engine_s": engine,
        "overhead_s": wall - engine,
        "overhead_fraction": (wall - engine) / engine if engine > 0 else float("inf"),
        "calls": calls,
        "prompts": prompts,
        "overhead_ms_per_call": 1000 * (wall - engine) / max(calls, 1),
        "overhead_ms_per_prompt": 1000 * (wall - engine) / max(prompts, 1),
    }


def _backends_for(config: RunConfig, fake: bool) -> dict[str, Backend]:
    if fake:
        from ensemble_instruct_lib.testing.fake import fake_backends

        return dict(fake_backends(config))
    from ensemble_instruct_lib.engines.factory import make_backend

    specs = [config.generator, *config.extra_models]
    return {s.name: make_backend(s.backend_spec()) for s in specs}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", default=None, help="run config (default: quickstart, fake LMs)")
    ap.add_argument("--fake", action="store_true", help="scripted fake LMs (default w/o --config)")
    ap.add_argument("--latency", type=float, default=0.05, help="s per prompt (--fake only)")
    ap.add_argument("--num-instructions", type=int, default=None, help="override the config's")
    ap.add_argument("--stages", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--out", default=None, help="run dir (default: a fresh temporary one)")
    args = ap.parse_args()
    fake = args.fake or args.config is None
    path = args.config or REPO / "configs" / "quickstart.yaml"
    config = load_config(path, num_instructions=args.num_instructions)
    backends = _backends_for(config, fake)
    latency = args.latency if fake else 0.0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "run"
        r = measure_overhead(config, backends, out, latency_s=latency, stages=args.stages)
    kind = f"fake LMs, {latency * 1000:.0f} ms per prompt" if fake else "the config's backends"
    print(f"\n## kit overhead around the engine ({config.name}, {kind}, stages {args.stages})")
    print(
        f"{'wall s':>9}{'engine s':>10}{'overhead s':>12}{'calls':>7}{'prompts':>9}"
        f"{'ms/prompt':>11}{'overhead / engine':>19}"
    )
    print(
        f"{r['wall_s']:>9.2f}{r['engine_s']:>10.2f}{r['overhead_s']:>12.2f}{r['calls']:>7}"
        f"{r['prompts']:>9}{r['overhead_ms_per_prompt']:>11.2f}{r['overhead_fraction']:>18.2%}"
    )


if __name__ == "__main__":
    main()
