"""How close `run --estimate` comes to the run it estimates, per stage (issue 23 item 4).

For each size (``--nums``: accepted instructions per type), the estimate of the config at that
size (one calibration, shared by every size: the prompt shapes do not depend on it), then the real
run into a fresh run dir (or an existing finished one named with ``--runs N=DIR``), then per stage
and model: expected vs actual calls, prompt tokens, completion tokens and call seconds (the
ledger's ``wall_s``). Written to ``--json``; printed as a Markdown table (docs/estimate.md).

Run:
  python benchmarks/bench_estimate.py --config configs/offline.yaml --nums 5 20 --json est.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from ensemble_instruct_lib.runs.config import load_config
from ensemble_instruct_lib.runs.estimate import compare, estimate
from ensemble_instruct_lib.runs.pipeline import run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/offline.yaml")
    ap.add_argument("--nums", type=int, nargs="+", default=[5, 20])
    ap.add_argument("--runs", nargs="*", default=[], help="N=DIR: a run dir for size N")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    given = {int(k): Path(v) for k, v in (r.split("=", 1) for r in args.runs)}
    tmp = Path(tempfile.mkdtemp(prefix="bench-estimate-"))
    results, rates = [], None
    for n in args.nums:
        cfg = load_config(args.config, num_instructions=n)
        t0 = time.perf_counter()
        est = estimate(cfg, rates=rates)
        est_s = time.perf_counter() - t0
        rates = rates or est.rates
        print(est.to_text())
        out = given.get(n, tmp / f"n{n}")
        t0 = time.perf_counter()
        res = run(cfg, out, progress=False)
        run_s = time.perf_counter() - t0
        rows = compare(est, res.manifest["ledger"])
        results.append(
            {
                "num_instructions": n,
                "run_dir": str(out),
                "estimate_s": round(est_s, 1),
                "run_s": round(run_s, 1),
                "expected_total_s": round(est.total_seconds(), 1),
                "timings_s": res.manifest["timings_s"],
                "rows": rows,
            }
        )
    print(
        "| n | stage | model | calls est / actual | prompt tok est / actual | "
        "completion tok est / actual | call s est / actual |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        for row in r["rows"]:
            cells = [
                f"{row[k]['estimate']:g} / {row[k]['actual']:g}"
                for k in ("calls", "prompt_tokens", "completion_tokens", "seconds")
            ]
            print(
                f"| {r['num_instructions']} | {row['stage']} | {row['model']} | "
                + " | ".join(cells)
                + " |"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
