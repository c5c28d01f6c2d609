"""Rouge-L speed, as ratios against rouge-score measured in the same run (issue: foundation).

Three measurements, each on real-like text built from the public data (seed instructions, the 252
user-oriented instructions, sentences of the recorded GPT-3 outputs, and recombinations of them):

1. novelty: one new instruction against a 50k pool. rouge-score scores every pair; the kit scores
   every pair exactly (`NoveltyIndex.scores`) and also decides "best > 0.7?" with the overlap bound
   (`NoveltyIndex.exceeds`). Scores are checked identical. rouge-score-rs (Rust, batch on all cores)
   is the second reference column.
2. consensus: stemmed pairwise Rouge-L for 10k triples of recorded outputs (`select_consensus` does
   normalization, exact matching and the pairwise matrix) against rouge-score scoring the same pairs.
3. growth: building a 50k-instruction set incrementally with the novelty filter (decision + 10 most
   similar), time at 1k/5k/10k/50k, next to rouge-score's cost extrapolated from its per-pair time.

Run: python benchmarks/bench_rouge.py [--pool 50000] [--growth 50000] [--triples 10000]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import time
from pathlib import Path

import numpy as np
from rouge_score import rouge_scorer

from ensemble_instruct_lib.method.consensus import normalize, select_consensus
from ensemble_instruct_lib.method.filters import NoveltyFilter
from ensemble_instruct_lib.method.rouge import NoveltyIndex

try:
    from rouge_score_rs import rouge_scorer as rs_scorer
except ImportError:  # optional second reference
    rs_scorer = None

DATA = Path(os.environ.get("EI_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def real_like_texts(n: int, seed: int = 0) -> list[str]:
    """n distinct instruction-like texts: real ones first, then recombinations of real halves."""
    si = DATA / "self_instruct"
    base = [t["instruction"] for t in _jsonl(si / "seed_tasks.jsonl")]
    base += [t["instruction"] for t in _jsonl(si / "user_oriented_instructions.jsonl")]
    for p in sorted((si / "user_oriented_predictions").glob("*.jsonl")):
        for r in _jsonl(p):
            for sent in re.split(r"(?<=[.!?])\s+", r["response"] + " " + r["target"]):
                words = sent.split()
                if 4 <= len(words) <= 40:
                    base.append(" ".join(words))
    base = list(dict.fromkeys(base))
    rng = random.Random(seed)
    out, seen = list(base[:n]), set(base[:n])
    while len(out) < n:
        a, b = rng.sample(base, 2)
        wa, wb = a.split(), b.split()
        text = " ".join(wa[: max(2, len(wa) // 2)] + wb[len(wb) // 2 :])
        if text not in seen:
            seen.add(text)
            out.append(text)
    rng.shuffle(out)
    return out


def bench_novelty(pool_size: int) -> None:
    texts = real_like_texts(pool_size + 20, seed=1)
    pool, queries = texts[:pool_size], texts[pool_size:]
    idx = NoveltyIndex()
    t = time.perf_counter()
    idx.extend(pool)
    build = time.perf_counter() - t
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    q = queries[0]
    t = time.perf_counter()
    ref = np.array([scorer.score(p, q)["rougeL"].fmeasure for p in pool])
    t_ref = time.perf_counter() - t
    rows = [("rouge-score (pure Python)", t_ref, True)]
    if rs_scorer is not None:
        rs = rs_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        t = time.perf_counter()
        got = np.array([s["rougeL"].fmeasure for s in rs.score_batch(pool, [q] * len(pool))])
        rows.append(
            ("rouge-score-rs (Rust, all cores)", time.perf_counter() - t, bool((got == ref).all()))
        )
    reps = 20
    t = time.perf_counter()
    for _ in range(reps):
        ours = idx.scores(q)
    rows.append(
        (
            "kit NoveltyIndex.scores (every pair exact)",
            (time.perf_counter() - t) / reps,
            bool((ours == ref).all()),
        )
    )
    idx.stats = {"pairs": 0, "exact": 0}
    t = time.perf_counter()
    decisions = [idx.exceeds(x, 0.7) for x in queries]
    t_dec = (time.perf_counter() - t) / len(queries)
    exact_ok = all(
        d == bool((idx.scores(x) > 0.7).any()) for d, x in zip(decisions, queries, strict=True)
    )
    rows.append(("kit NoveltyIndex.exceeds (decision, bound)", t_dec, exact_ok))
    print(
        f"\n## novelty: one new instruction vs a {pool_size:,} pool (index built in {build:.1f} s)"
    )
    print(f"{'method':<46}{'seconds':>10}{'speed-up vs rouge-score':>26}{'identical':>11}")
    for name, sec, same in rows:
        print(f"{name:<46}{sec:>10.4f}{t_ref / sec:>25.0f}x{str(same):>11}")
    print(
        f"pairs needing an exact LCS in the bounded decision: {_exact_fraction(idx, queries):.2%}"
    )


def _exact_fraction(idx: NoveltyIndex, queries: list[str]) -> float:
    idx.stats = {"pairs": 0, "exact": 0}
    for x in queries:
        idx.exceeds(x, 0.7)
    return idx.stats["exact"] / max(idx.stats["pairs"], 1)


def bench_consensus(n_triples: int) -> None:
    si = DATA / "self_instruct" / "user_oriented_predictions"
    models = sorted(p.name.replace("_predictions.jsonl", "") for p in si.glob("*.jsonl"))
    resp = {
        m: [r["response"].strip() for r in _jsonl(si / f"{m}_predictions.jsonl")] for m in models
    }
    triples = []
    for combo in itertools.combinations(models, 3):
        for i in range(len(resp[models[0]])):
            triples.append([resp[m][i] for m in combo])
    triples = random.Random(0).sample(triples, min(n_triples, len(triples)))
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    t = time.perf_counter()
    ref = []
    for c in triples:
        n = [normalize(x) for x in c]
        ref.append(
            [scorer.score(n[j], n[i])["rougeL"].fmeasure for i, j in ((0, 1), (0, 2), (1, 2))]
        )
    t_ref = time.perf_counter() - t
    rows = [("rouge-score (3 pairs per triple)", t_ref, True)]
    if rs_scorer is not None:
        rs = rs_scorer.RougeScorer(["rougeL"], use_stemmer=True)
        preds, targs = [], []
        for c in triples:
            n = [normalize(x) for x in c]
            for i, j in ((0, 1), (0, 2), (1, 2)):
                preds.append(n[i])
                targs.append(n[j])
        t = time.perf_counter()
        got = [s["rougeL"].fmeasure for s in rs.score_batch(targs, preds)]
        rows.append(
            (
                "rouge-score-rs (Rust, all cores)",
                time.perf_counter() - t,
                got == [x for r in ref for x in r],
            )
        )
    t = time.perf_counter()
    res = [select_consensus(c) for c in triples]
    t_ours = time.perf_counter() - t
    same = all(
        [r.scores[0, 1], r.scores[0, 2], r.scores[1, 2]] == e for r, e in zip(res, ref, strict=True)
    )
    rows.append(("kit select_consensus (whole decision)", t_ours, same))
    kept = sum(r.kept for r in res) / len(res)
    print(f"\n## consensus: {len(triples):,} triples of recorded outputs (kept {kept:.1%})")
    print(f"{'method':<46}{'seconds':>10}{'speed-up vs rouge-score':>26}{'identical':>11}")
    for name, sec, ok in rows:
        print(f"{name:<46}{sec:>10.3f}{t_ref / sec:>25.0f}x{str(ok):>11}")


def bench_growth(target: int) -> None:
    texts = real_like_texts(target * 3, seed=2)
    seeds = texts[:175]
    f = NoveltyFilter({"A": seeds}, with_mean=False)
    checkpoints = [c for c in (1_000, 5_000, 10_000, 50_000) if c <= target] or [target]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    sample = texts[-200:]
    t = time.perf_counter()
    for a, b in zip(sample[:100], sample[100:], strict=True):
        scorer.score(a, b)
    per_pair = (time.perf_counter() - t) / 100
    print("\n## growth: building a novel set incrementally (decision + 10 most similar)")
    print(f"{'accepted':>10}{'candidates':>12}{'seconds':>10}{'rouge-score, estimated':>26}")
    accepted, pairs = 0, 0
    t = time.perf_counter()
    for seen, text in enumerate(texts[175:], start=1):
        pairs += 175 + accepted
        d = f.check(text, "A")
        if d.accepted:
            f.add(text, "A")
            accepted += 1
            if accepted in checkpoints:
                est = pairs * per_pair
                print(
                    f"{accepted:>10,}{seen:>12,}{time.perf_counter() - t:>10.1f}"
                    f"{est:>20.0f} s ({est / 86400:.2f} days)"
                )
                if accepted == checkpoints[-1]:
                    break


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pool", type=int, default=50_000)
    ap.add_argument("--triples", type=int, default=10_000)
    ap.add_argument("--growth", type=int, default=50_000)
    args = ap.parse_args()
    print(f"data: {DATA}; cores: {os.cpu_count()}")
    bench_novelty(args.pool)
    bench_consensus(args.triples)
    bench_growth(args.growth)


if __name__ == "__main__":
    main()
