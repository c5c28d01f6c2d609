"""Time the full ablation grids on the recorded outputs (issue 5: "the full grids on recorded
data run in minutes on this machine").

Grids (all eight recorded models, 252 examples each):

1. precompute: `recorded_matrix.recorded_matrix` (every example's 8x8 stemmed pairwise Rouge-L of the
   normalized outputs, the exact-match relation, gold scores), once per process.
2. size: every subset of 2..8 members, each member once as the generator (1,016 ordered lists);
   then with every permutation (109,592 ordered lists).
3. threshold: 26 thresholds (0 to 0.5) x every ordered 3-member list (168).
4. rules: sum / best_pair / random / first x 168 ordered 3-member lists x 3 seeds.
5. vanilla: every ordered 3-member list (168) by the vanilla model's role.

Reference: the direct way, `select_consensus` on every example of every ordered list (it
recomputes Rouge-L each time), timed on a sample of lists and extrapolated to each grid's
decisions. Decisions were checked identical in tests/test_ablations.py.

Run: python benchmarks/bench_ablations.py [--sample 20] [--no-permutations]
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

from ensemble_instruct_lib.analysis import recorded_grids as ab
from ensemble_instruct_lib.analysis import recorded_matrix as rm
from ensemble_instruct_lib.data.public import PREDICTION_MODELS
from ensemble_instruct_lib.method.consensus import select_consensus

if not os.environ.get("EI_DATA_DIR"):
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    if shared.exists():
        os.environ["EI_DATA_DIR"] = str(shared)


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def direct_seconds_per_list(mat: rm.RecordedMatrix, sample: int) -> float:
    """Seconds `select_consensus` takes for all examples of one ordered member list, averaged
    over `sample` random lists of sizes 2..8."""
    rng = random.Random(0)
    orders = [o for s in range(2, 9) for o in ab.member_orders(mat.models, s)]
    picked = rng.sample(orders, sample)
    t0 = time.perf_counter()
    for names in picked:
        cols = [mat.models.index(m) for m in names]
        for row in mat.responses:
            select_consensus([row[c] for c in cols])
    return (time.perf_counter() - t0) / sample


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sample", type=int, default=20, help="lists timed the direct way")
    ap.add_argument("--no-permutations", action="store_true", help="skip the 109k-list grid")
    args = ap.parse_args()

    rows = []
    mat, t = timed(rm.recorded_matrix, PREDICTION_MODELS)
    rows.append(("precompute (matrices, gold)", 1, t, None))
    per_list = direct_seconds_per_list(mat, args.sample)

    sizes, t = timed(ab.ensemble_size, range(2, 9))
    rows.append(("size 2-8, each member as generator", len(sizes), t, per_list * len(sizes)))
    if not args.no_permutations:
        perms, t = timed(ab.ensemble_size, range(2, 9), ordering="all")
        rows.append(("size 2-8, every permutation", len(perms), t, per_list * len(perms)))
    thr, t = timed(ab.threshold_sweep)
    rows.append(
        (f"threshold x{thr['threshold'].nunique()}, size 3", len(thr), t, per_list * len(thr))
    )
    rules, t = timed(ab.selection_rules)
    # one select_consensus matrix per (list, seed) serves every rule
    rows.append(("rules x4, size 3, 3 seeds", len(rules), t, per_list * len(rules) / 4))
    van, t = timed(ab.tuned_vs_vanilla)
    rows.append(("tuned vs vanilla, size 3", len(van), t, per_list * len(van)))

    print(f"{mat.examples} examples x {len(mat.models)} models; {os.cpu_count()} cores")
    print(f"direct select_consensus: {per_list * 1000:.1f} ms per ordered list of 252 examples")
    print()
    print("| grid | rows | kit (s) | direct, extrapolated (s) | speed-up |")
    print("| --- | ---: | ---: | ---: | ---: |")
    total = 0.0
    for name, n, secs, direct in rows:
        total += secs
        ref = "-" if direct is None else f"{direct:,.0f}"
        gain = "-" if direct is None or secs == 0 else f"{direct / secs:,.0f}x"
        print(f"| {name} | {n:,} | {secs:.2f} | {ref} | {gain} |")
    print(f"| total | | {total:.2f} | | |")


if __name__ == "__main__":
    main()
