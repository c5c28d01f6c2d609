"""The command line: `python -m ensemble_instruct_lib <command>` (also installed as `ensemble-instruct`).

Commands:
  fetch-data          download (or copy with --from) the pinned public data and verify sha256
  verify-data         check the data folder against the pinned digests
  ensemble-recorded   stage 4 over recorded GPT-3-family outputs, scored against gold
  run                 the Ensemble-Instruct pipeline (stages 1-4 and export), resumable
  ensemble            re-run stage 4 on a run dir (e.g. with another threshold or rule)
  make-tiny-models    build tiny random-weight models locally (for configs/offline-tiny.yaml)
  sweep               run a notebook, config or function once per grid point (see --help)
  models              list known models, or fetch one (e.g. `models fetch gemma-3-270m`)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import ConfigError, DataError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable:
    def deco(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = fn
        return fn

    return deco


@command("fetch-data")
def _fetch_data(args: argparse.Namespace) -> int:
    from .data.public import data_dir, fetch_data

    dest = data_dir(args.dest)
    result = fetch_data(args.dest, source=getattr(args, "from"), force=args.force)
    for name, how in result.items():
        print(f"{how:>10}  {name}")
    print(f"data ready in {dest} (set EI_DATA_DIR={dest} if it is not the default)")
    return 0


@command("verify-data")
def _verify_data(args: argparse.Namespace) -> int:
    from .data.public import data_dir, verify_data

    status = verify_data(args.data_dir)
    for name, st in status.items():
        print(f"{st:>16}  {name}")
    bad = [n for n, s in status.items() if s != "ok"]
    if bad:
        print(
            f"{len(bad)} file(s) not ok under {data_dir(args.data_dir)}: run fetch-data",
            file=sys.stderr,
        )
        return 1
    return 0


@command("ensemble-recorded")
def _ensemble_recorded(args: argparse.Namespace) -> int:
    from .analysis.recorded_ensemble import ensemble_recorded
    from .data.jsonl import write_json, write_jsonl

    res = ensemble_recorded(
        args.models,
        threshold=args.threshold,
        rule=args.rule,
        stop=args.stop,
        seed=args.seed,
        data_root=args.data_dir,
    )
    out = Path(args.out)
    n = write_jsonl(out / "ensembled.jsonl", res.kept_records())
    res.summary.to_csv(out / "summary.csv", index=False)
    write_json(
        out / "manifest.json",
        {
            "command": "ensemble-recorded",
            "models": res.models,
            "threshold": args.threshold,
            "rule": args.rule,
            "stop": args.stop,
            "examples": len(res.examples),
            "kept": res.kept,
        },
    )
    reasons = res.examples["reason"].value_counts().to_dict()
    print(f"models (first = instance generator): {', '.join(res.models)}")
    print(
        f"kept {res.kept} of {len(res.examples)} examples ({res.kept / len(res.examples):.1%}); "
        f"reasons: {json.dumps(reasons)}"
    )
    print("mean Rouge-L (stemmed) against gold, x100:")
    print(
        res.summary[["system", "kept_mean", "all_mean"]].to_string(
            index=False, float_format="%.2f", na_rep="-"
        )
    )
    print(
        f"wrote {n} kept examples to {out / 'ensembled.jsonl'} and the table to {out / 'summary.csv'}"
    )
    return 0


@command("run")
def _run(args: argparse.Namespace) -> int:
    from .runs.config import load_config
    from .runs.pipeline import run

    cfg = load_config(args.config, num_instructions=args.num_instructions, seed=args.seed)
    out = Path(args.out) if args.out else Path("outputs") / cfg.name
    stages = [int(s) for s in args.stages.split(",")]
    run(cfg, out, progress=not args.no_progress, stages=stages)
    return 0


@command("ensemble")
def _ensemble(args: argparse.Namespace) -> int:
    from .runs.pipeline import run_stage4

    counts = run_stage4(args.run_dir, threshold=args.threshold, rule=args.rule)
    print(f"kept {counts['kept']} of {counts['instances']} examples: {json.dumps(counts)}")
    return 0


@command("make-tiny-models")
def _make_tiny(args: argparse.Namespace) -> int:
    from .data.public import data_dir
    from .testing.tiny import ARCHS, build_tiny_model

    seeds = data_dir(args.data_dir) / "self_instruct" / "seed_tasks.jsonl"
    for arch in ARCHS:
        path = build_tiny_model(
            Path(args.out) / arch, arch, seed_path=seeds if seeds.exists() else None
        )
        print(f"built {arch} in {path}")
    return 0


@command("sweep")
def _sweep(args: argparse.Namespace) -> int:
    from .runs.sweep import main as sweep_main

    return sweep_main(args.sweep_args)


@command("models")
def _models(args: argparse.Namespace) -> int:
    from .engines.models import KNOWN_MODELS, fetch_model, model_status

    if args.models_command == "list":
        for name in KNOWN_MODELS:
            st = model_status(name, args.cache_dir)
            print(f"{name}: {st['summary']}")
            for key in ("package", "gguf", "transformers", "licence"):
                print(f"  {key:<12} {st[key]}")
        return 0
    paths = fetch_model(args.name, args.cache_dir, convert=not args.gguf_only)
    for kind, path in paths.items():
        print(f"{kind:>12}  {path}")
    print(f"use it in a config as `model: {args.name}` (kinds hf, vllm, ray, llama_cpp)")
    return 0


def _add_models_parser(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("models", help="list known models, or fetch and convert one")
    msub = m.add_subparsers(dest="models_command", required=True)
    lst = msub.add_parser("list", help="known models and what is installed of each")
    fet = msub.add_parser("fetch", help="assemble the GGUF, check it, convert it (once)")
    fet.add_argument("name", help="a known model name (see `models list`)")
    fet.add_argument("--gguf-only", action="store_true", help="skip the transformers conversion")
    for q in (lst, fet):
        q.add_argument(
            "--cache-dir", help="default: $EI_MODEL_CACHE or ~/.cache/ensemble_instruct/models"
        )


def build_parser() -> argparse.ArgumentParser:
    from .analysis.recorded_ensemble import DEFAULT_MODELS, STOP_MODES

    p = argparse.ArgumentParser(
        prog="python -m ensemble_instruct_lib",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fetch-data", help="download or copy the pinned public data")
    f.add_argument("--dest", help="target folder (default: $EI_DATA_DIR or seeds/data)")
    f.add_argument("--from", help="copy from a local folder laid out like shared/data")
    f.add_argument("--force", action="store_true", help="fetch again even if present")

    v = sub.add_parser("verify-data", help="check the data folder's sha256 digests")
    v.add_argument("--data-dir")

    e = sub.add_parser("ensemble-recorded", help="consensus over recorded GPT-3-family outputs")
    e.add_argument(
        "--models",
        nargs="+",
        default=list(DEFAULT_MODELS),
        help="two or more recorded models; the first plays the instance generator",
    )
    e.add_argument("--threshold", type=float, default=0.01)
    e.add_argument("--rule", choices=["sum", "best_pair"], default="sum")
    e.add_argument(
        "--stop",
        choices=STOP_MODES,
        default="none",
        help="'method' cuts responses at stage-3 stop markers first",
    )
    e.add_argument("--seed", type=int, default=0, help="seed of the random-member baseline")
    e.add_argument("--data-dir")
    e.add_argument("--out", default="outputs/recorded-ensemble")

    r = sub.add_parser("run", help="run or resume the pipeline from a YAML config")
    r.add_argument("--config", required=True, help="a YAML file (see configs/)")
    r.add_argument("--out", help="run dir (default: outputs/<config name>)")
    r.add_argument("--num-instructions", type=int, help="accepted instructions per task type")
    r.add_argument("--seed", type=int, help="override the config's random seed")
    r.add_argument("--stages", default="1,2,3,4", help="comma-separated stages to run")
    r.add_argument("--no-progress", action="store_true", help="hide progress bars")

    s = sub.add_parser("ensemble", help="re-run stage 4 (consensus) on a run dir")
    s.add_argument("run_dir")
    s.add_argument("--threshold", type=float)
    s.add_argument("--rule", choices=["sum", "best_pair"])

    t = sub.add_parser("make-tiny-models", help="build tiny random-weight models locally")
    t.add_argument("--out", default="outputs/tiny-models")
    t.add_argument("--data-dir")

    w = sub.add_parser(
        "sweep", help="run a notebook/config/function once per grid point", add_help=False
    )
    w.add_argument("sweep_args", nargs=argparse.REMAINDER)
    _add_models_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (DataError, ConfigError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: finished work is on disk; run the same command again to resume",
            file=sys.stderr,
        )
        return 130
