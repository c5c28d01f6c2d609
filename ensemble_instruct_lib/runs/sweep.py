"""Parameter sweeps: run a notebook, a pipeline config or a function once per grid point.

For the ablations (issue 5): `run_sweep` expands a grid (the product of its value lists, times
the random seeds), runs every point into its own folder ``<out_dir>/<slug>/`` (the slug is the
point's parameters, readable, plus a short hash), in worker processes when asked, and gathers one
tidy table: a row per point (or per row a function returns) with the point's parameters, its
status, its error if it failed, and its metrics. The table is saved as ``sweep.csv`` and
``sweep.parquet`` beside ``sweep.json`` (what was swept).

- kind="notebook": `notebooks.run_notebook(target, point_dir, parameters)`; metrics are the
  ``metrics.json`` the notebook wrote into its ``out_dir`` (`write_metrics`), if any.
- kind="pipeline": `config.load_config(target)` with the point's parameters as overrides (dotted
  keys reach nested fields: ``instruction.num_generated_demos.A``), `pipeline.run` into the
  point's folder (with `backends=`, a function config -> ready backends by model name, called
  per point: tests and demos pass fake LMs); metrics are `metrics.run_metrics`.
- kind="function": a callable or ``"module:function"`` called with the point's parameters (and
  ``out_dir=`` when it takes one); it returns a mapping (one row), a DataFrame (its rows) or None
  (then its ``metrics.json`` is read).

Resumable: a point is done when its ``point.json`` (written atomically after success, holding
its parameters and metric rows) exists with the same parameters; done points are not run again.
A failing point is not fatal: it becomes a row with ``status="failed"`` and the error, its
traceback goes to ``<slug>/error.txt``, and the next sweep runs it again.

The command line is ``python -m ensemble_instruct_lib sweep KIND TARGET --out DIR --grid K='[..]'``
(``cli.py``). Not here: deciding what to sweep (`analysis/run_grids.py` builds the grids) and plotting.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import itertools
import json
import math
import multiprocessing
import os
import re
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from ..data.jsonl import write_json

KINDS = ("notebook", "pipeline", "function")
POINT = "point.json"
METRICS = "metrics.json"
ERROR = "error.txt"
LOG = "log.txt"
CSV, PARQUET, SPEC = "sweep.csv", "sweep.parquet", "sweep.json"


def write_metrics(out_dir: str | Path, metrics: Mapping[str, Any] | Sequence[Mapping]) -> Path:
    """Write a run's metrics as ``<out_dir>/metrics.json`` (atomically), for a sweep to collect.

    Args:
        metrics: one mapping (one row) or a list of mappings (several rows); values should be
            JSON scalars (nested mappings are flattened with dotted keys by the sweep).
    """
    path = Path(out_dir) / METRICS
    write_json(path, metrics if isinstance(metrics, Mapping) else list(metrics))
    return path


def grid_points(
    grid: Mapping[str, Sequence[Any]], seeds: Sequence[int] | None = None, seed_param: str = "seed"
) -> list[dict[str, Any]]:
    """The points of a grid: the product of its value lists in key order, times `seeds`.

    Raises:
        ValueError: a grid value that is not a non-empty list, or `seed_param` also in the grid.
    """
    for key, values in grid.items():
        if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"grid[{key!r}] must be a non-empty list of values, got {values!r}")
    if seeds is not None and seed_param in grid:
        raise ValueError(f"{seed_param!r} is both a grid key and swept by `seeds`: use one")
    keys = list(grid)
    points = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]
    if seeds is not None:
        points = [{**p, seed_param: s} for p in points for s in seeds]
    return points


def point_slug(params: Mapping[str, Any], max_len: int = 80) -> str:
    """A folder name for a point: ``key-value__key-value`` (sanitized, cut) and an 8-hex hash."""
    text = json.dumps(params, sort_keys=True, default=str)
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    parts = []
    for k, v in params.items():
        if isinstance(v, Mapping):
            value = ",".join(f"{a}={b}" for a, b in v.items())
        elif isinstance(v, str | int | float | bool) or v is None:
            value = v
        else:
            value = json.dumps(v)
        parts.append(f"{k.split('.')[-1] if len(k) > 24 else k}-{value}")
    readable = re.sub(r"[^A-Za-z0-9._=-]+", "_", "__".join(parts)).strip("_")[:max_len]
    return f"{readable}-{digest}" if readable else digest


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data["a"]["b"]["c"] = value`` for key "a.b.c", creating mappings on the way."""
    parts = key.split(".")
    node = data
    for p in parts[:-1]:
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        elif not isinstance(child, dict):
            raise ValueError(f"cannot set {key!r}: {p!r} holds {child!r}, not a mapping")
        node = child
    node[parts[-1]] = value


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings to one level with dotted keys; other values unchanged."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


# ------------------------------------------------------------------------------------------
# running one point (in this process or a worker)


def _resolve_function(target: Callable | str) -> Callable:
    if callable(target):
        return target
    module, sep, name = str(target).partition(":")
    if not sep:
        raise ValueError(f"a function target is a callable or 'module:function', got {target!r}")
    return getattr(importlib.import_module(module), name)


def _pipeline_config(target: str | Mapping[str, Any], params: Mapping[str, Any]):
    import yaml

    from ..errors import ConfigError
    from .config import load_config

    if isinstance(target, Mapping):
        data = json.loads(json.dumps(target))
    else:
        path = Path(target)
        if not path.exists():
            raise ConfigError(f"pipeline sweep: config file not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
    for key, value in params.items():
        set_dotted(data, key, value)
    return load_config(data)


def _read_metrics(point_dir: Path) -> list[dict[str, Any]]:
    path = point_dir / METRICS
    if not path.exists():
        return [{}]
    data = json.loads(path.read_text())
    return [data] if isinstance(data, dict) else list(data)


def _execute(spec: dict[str, Any]) -> list[dict[str, Any]]:
    kind, target, params = spec["kind"], spec["target"], spec["params"]
    point_dir = Path(spec["point_dir"])
    if kind == "notebook":
        from .notebooks import run_notebook

        run_notebook(target, point_dir, parameters=params, **spec.get("notebook_options", {}))
        return _read_metrics(point_dir)
    if kind == "pipeline":
        from .metrics import run_metrics
        from .pipeline import run

        cfg = _pipeline_config(target, params)
        backends = _resolve_function(spec["backends"])(cfg) if spec.get("backends") else None
        run(cfg, point_dir, backends=backends, progress=False, stages=tuple(spec["stages"]))
        metrics = run_metrics(point_dir)
        write_metrics(point_dir, metrics)
        return [metrics]
    fn = _resolve_function(target)
    kwargs = dict(params)
    if "out_dir" in inspect.signature(fn).parameters:
        kwargs["out_dir"] = str(point_dir)
    result = fn(**kwargs)
    if result is None:
        return _read_metrics(point_dir)
    if isinstance(result, pd.DataFrame):
        rows = result.to_dict("records")
    elif isinstance(result, Mapping):
        rows = [dict(result)]
    else:
        raise TypeError(
            f"a sweep function returns a mapping, a DataFrame or None, got {type(result).__name__}"
        )
    write_metrics(point_dir, rows)
    return rows


def run_point(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one grid point; never raises (a failure is returned with its error).

    Returns:
        {"status": "done"|"failed", "rows": [metrics...], "error": str|None, "duration_s"}.
    """
    point_dir = Path(spec["point_dir"])
    point_dir.mkdir(parents=True, exist_ok=True)
    (point_dir / ERROR).unlink(missing_ok=True)
    t0 = time.perf_counter()
    try:
        with (
            open(point_dir / LOG, "a", encoding="utf-8") as log,
            contextlib.redirect_stdout(log),
            contextlib.redirect_stderr(log),
        ):
            rows = _execute(spec)
    except BaseException as e:  # a point's failure, KeyboardInterrupt in a worker included
        if isinstance(e, KeyboardInterrupt) and spec.get("in_process"):
            raise
        (point_dir / ERROR).write_text(traceback.format_exc())
        return {
            "status": "failed",
            "rows": [{}],
            "error": f"{type(e).__name__}: {e}".strip(),
            "duration_s": round(time.perf_counter() - t0, 3),
        }
    duration = round(time.perf_counter() - t0, 3)
    write_json(
        point_dir / POINT,
        {
            "status": "done",
            "params": spec["params"],
            "rows": rows,
            "duration_s": duration,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    return {"status": "done", "rows": rows, "error": None, "duration_s": duration}


def _done(point_dir: Path, params: Mapping[str, Any]) -> dict[str, Any] | None:
    path = point_dir / POINT
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    same = json.dumps(data.get("params"), sort_keys=True, default=str) == json.dumps(
        dict(params), sort_keys=True, default=str
    )
    return data if same and data.get("status") == "done" else None


# ------------------------------------------------------------------------------------------
# the sweep


def _storable(df: pd.DataFrame) -> pd.DataFrame:
    """Make object columns Parquet- and CSV-safe: non-string values of mixed columns -> JSON."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype != object:
            continue
        vals = [
            v for v in out[col] if v is not None and not (isinstance(v, float) and math.isnan(v))
        ]
        kinds = {type(v) for v in vals}
        if kinds <= {str} or kinds <= {bool}:
            continue
        if kinds <= {int, float} and bool not in kinds:
            out[col] = pd.to_numeric(out[col])
            continue
        out[col] = [
            None
            if v is None or (isinstance(v, float) and math.isnan(v))
            else v
            if isinstance(v, str)
            else json.dumps(v, default=str)
            for v in out[col]
        ]
    return out


def _workers(workers: int | None, todo: int) -> int:
    cores = os.cpu_count() or 1
    n = cores if workers is None or workers < 1 else workers
    return max(1, min(n, todo))


def run_sweep(
    target: Callable | str | Path | Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]],
    out_dir: str | Path,
    *,
    kind: str = "notebook",
    base_params: Mapping[str, Any] | None = None,
    workers: int | None = 1,
    seeds: Sequence[int] | None = None,
    seed_param: str = "seed",
    backends: Callable | str | None = None,
    stages: Sequence[int] = (1, 2, 3, 4),
    notebook_options: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run `target` once per grid point (resumably, in parallel) and gather one tidy table.

    Args:
        target: a notebook name or path (kind="notebook"), a config YAML path or dict
            (kind="pipeline"), or a callable / ``"module:function"`` (kind="function"; with
            workers > 1 it must be importable, i.e. defined at a module's top level).
        grid: parameter -> list of values; points are the product, in key order.
        out_dir: the sweep folder: one sub-folder per point, and the tables.
        kind: "notebook", "pipeline" or "function".
        base_params: parameters every point gets (a grid value wins over them).
        workers: processes running points at once (1: in this process; None or < 1: all cores).
            Workers are started with "spawn" (safe in notebooks and threaded programs): a
            script calling `run_sweep` with workers > 1 needs the ``if __name__ == "__main__":``
            guard, as every multiprocessing program does.
        seeds: run every point once per seed, passed as `seed_param`.
        backends: pipeline only: a function (or its ``"module:function"``) from a point's
            `RunConfig` to ready backends by model name, used instead of building the config's
            models (tests and demos pass `testing.fake.fake_backends`); with workers > 1 it
            must be importable.
        stages: pipeline only: the stages to run.
        notebook_options: notebook only: keyword arguments for `run_notebook` (e.g. timeout).
        progress: print a line per finished point.

    Returns:
        One row per point (or per row its function returned): point, status ("done" or
        "failed"), error, resumed (True when loaded from a finished point.json), duration_s,
        out_dir, then the parameters (dict values flattened to dotted columns), then the
        metrics. Saved as ``sweep.csv`` and ``sweep.parquet`` in `out_dir`.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    points = grid_points(grid, seeds, seed_param)
    base = dict(base_params or {})
    if kind != "function" and not isinstance(target, Mapping):
        target = str(target)
    options = {
        "backends": _qualname(backends) if callable(backends) else backends,
        "stages": list(stages),
        "notebook_options": dict(notebook_options or {}),
    }
    specs = _point_specs(kind, target, points, base, out, options)
    spec = {
        "kind": kind,
        "target": target if isinstance(target, str | Mapping) else _qualname(target),
        "grid": {k: list(v) for k, v in grid.items()},
        "base_params": base,
        "seeds": list(seeds) if seeds is not None else None,
        "seed_param": seed_param,
        "points": [s["point"] for s in specs],
    }
    write_json(out / SPEC, spec)
    results, todo = _resumed(specs)

    def report(s: dict[str, Any], r: dict[str, Any]) -> None:
        results[s["point"]] = {**r, "resumed": False}
        if progress:
            what = r["status"] if r["status"] == "done" else f"FAILED ({r['error'][:120]})"
            took = "" if r["duration_s"] is None else f" in {r['duration_s']}s"
            print(f"[{len(results)}/{len(specs)}] {s['point']}: {what}{took}")

    _run_points(todo, _workers(workers, len(todo)), report)
    table = _table(specs, results)
    table.to_csv(out / CSV, index=False)
    table.to_parquet(out / PARQUET, index=False)
    if progress:
        _print_summary(table, len(specs), len(specs) - len(todo), out)
    return table


def _print_summary(table: pd.DataFrame, n_points: int, n_resumed: int, out: Path) -> None:
    failed = int((table["status"] == "failed").sum()) if len(table) else 0
    print(f"sweep: {n_points} points ({n_resumed} already done, {failed} failed)")
    print(f"  tables: {out / CSV}, {out / PARQUET}")


def _point_specs(
    kind: str,
    target: Callable | str | Mapping[str, Any],
    points: list[dict[str, Any]],
    base: dict[str, Any],
    out: Path,
    options: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """One spec per point for `run_point`: the point's parameters over `base`, its slug and
    folder, and the run options (backends, stages, notebook_options)."""
    specs = []
    for p in points:
        slug = point_slug(p)
        specs.append(
            {
                "kind": kind,
                "target": target,
                "params": {**base, **p},
                "grid_params": p,
                "point": slug,
                "point_dir": str(out / slug),
                **options,
            }
        )
    return specs


def _resumed(
    specs: list[dict[str, Any]],
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """(results of the points already done, keyed by slug; the specs still to run)."""
    results: dict[str, dict[str, Any]] = {}
    todo = []
    for s in specs:
        prev = _done(Path(s["point_dir"]), s["params"])
        if prev is None:
            todo.append(s)
        else:
            results[s["point"]] = {**prev, "error": None, "resumed": True}
    return results, todo


def _run_points(
    todo: list[dict[str, Any]],
    workers: int,
    report: Callable[[dict[str, Any], dict[str, Any]], None],
) -> None:
    """Run the specs in this process (workers == 1) or in spawned worker processes, calling
    `report(spec, result)` for each in order; a worker that dies is a failed point."""
    if todo and workers == 1:
        for s in todo:
            report(s, run_point({**s, "in_process": True}))
    elif todo:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = [(s, pool.submit(run_point, s)) for s in todo]
            for s, f in futures:
                try:
                    r = f.result()
                except Exception as e:  # the worker process died (killed, out of memory)
                    r = {"status": "failed", "rows": [{}], "error": repr(e), "duration_s": None}
                report(s, r)


def _qualname(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


def _table(specs: list[dict[str, Any]], results: dict[str, dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for s in specs:
        r = results[s["point"]]
        params = flatten(s["params"])
        for metrics in r.get("rows") or [{}]:
            row = {
                "point": s["point"],
                "status": r["status"],
                "error": r.get("error"),
                "resumed": bool(r.get("resumed")),
                "duration_s": r.get("duration_s"),
                "out_dir": s["point_dir"],
                **params,
            }
            for k, v in flatten(metrics).items():
                if k in row and row[k] == v:
                    continue  # a metric repeating a parameter (e.g. the method)
                row[k if k not in row else f"metric.{k}"] = v
            rows.append(row)
    return _storable(pd.DataFrame(rows, columns=None))


__all__ = [
    "KINDS",
    "flatten",
    "grid_points",
    "point_slug",
    "run_point",
    "run_sweep",
    "set_dotted",
    "write_metrics",
]
