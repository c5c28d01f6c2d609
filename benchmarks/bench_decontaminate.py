"""Decontamination speed: the kit's `Decontaminator` on 50k generated-like examples, against a
brute-force reference measured in the same run (issue 23).

The evaluation side is the default one (`decontaminate.sets: [user_oriented, superni]`: the 252
user-oriented tasks and the 11,810 SuperNI test references of the offline data). The examples are
recombined seed texts (an instruction, an input and an output each, made of halves of two
texts, a text with words dropped, or a text reversed); one in 20 (`--mixed`) draws from the
user-oriented texts too, so some share 13-grams with or paraphrase evaluation items. The kit checks every example
(`Decontaminator.check`: Rouge-L of the instruction through the `NoveltyIndex` top-1 walk, then
13-gram lookups of the three fields in one hash table). The reference checks a random subsample
the straightforward way: rouge-score's Rouge-L (no stemming) of the instruction against every
evaluation instruction, and each field's 13-gram set intersected with every evaluation text's;
its per-example time is scaled to all examples. Decisions, matched kinds and Rouge-L scores on
the subsample are checked equal.

Run: python benchmarks/bench_decontaminate.py [--examples 50000] [--sample 300] [--seed 0]
     [--mixed 0.05]
"""

from __future__ import annotations

import argparse
import os
import random
import time

from rouge_score import rouge_scorer
from rouge_score import tokenize as rs_tokenize

from ensemble_instruct_lib.data.eval_sets import eval_set
from ensemble_instruct_lib.data.public import load_seed_tasks
from ensemble_instruct_lib.method.decontaminate import Decontaminator, eval_texts


def _recombine(rng: random.Random, pool: list[str]) -> str:
    a, b = rng.sample(pool, 2)
    wa, wb = a.split(), b.split()
    r = rng.random()
    if r < 0.45:
        return " ".join(wa[: len(wa) // 2] + wb[len(wb) // 2 :])
    if r < 0.9:
        return " ".join(w for w in wa if rng.random() > 0.1)
    return " ".join(wa[::-1])


def _grams(text: str, n: int) -> set[tuple[str, ...]]:
    t = rs_tokenize.tokenize(text, None)
    return {tuple(t[i : i + n]) for i in range(len(t) - n + 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--examples", type=int, default=50_000)
    ap.add_argument("--sample", type=int, default=300, help="examples the reference checks")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mixed", type=float, default=0.05, help="share recombining eval texts")
    args = ap.parse_args()
    data = os.environ.get("EI_DATA_DIR")

    t0 = time.perf_counter()
    texts = []
    for name in ("user_oriented", "superni"):
        items, note = eval_set(name, data)
        texts += eval_texts(name, items)
        print("read", note)
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    dec = Decontaminator(texts)
    t_build = time.perf_counter() - t0
    print(
        f"evaluation texts: {len(texts)}, distinct 13-grams {dec.num_ngrams}; read {t_read:.2f} s, "
        f"kit index built in {t_build:.2f} s"
    )

    seeds = load_seed_tasks()
    uo = [t for t in texts if t.set == "user_oriented"]
    seed_instr = [s.instruction for s in seeds]
    seed_body = [i.output for s in seeds for i in s.instances if len(i.output.split()) > 3]
    seed_body += [i.input for s in seeds for i in s.instances if len(i.input.split()) > 3]
    eval_instr = seed_instr + [t.text for t in uo if t.field == "instruction"]
    eval_body = seed_body + [t.text for t in uo if t.field != "instruction"]
    eval_body = [t for t in eval_body if len(t.split()) > 3]
    rng = random.Random(args.seed)
    examples = []
    for _ in range(args.examples):
        # one example in 20 recombines user-oriented texts with seeds (some contaminated)
        mixed = rng.random() < args.mixed
        ip, bp = (eval_instr, eval_body) if mixed else (seed_instr, seed_body)
        examples.append(
            (
                _recombine(rng, ip),
                _recombine(rng, bp) if rng.random() < 0.6 else "",
                _recombine(rng, bp),
            )
        )
    dec.check(*examples[0])  # the walk's first call loads numba's compiled code
    t0 = time.perf_counter()
    found = [dec.check(*ex) for ex in examples]
    t_kit = time.perf_counter() - t0
    flagged = sum(m is not None for m in found)
    kinds = {k: sum(m is not None and m.kind == k for m in found) for k in ("rouge_l", "ngram")}
    print(
        f"kit: {args.examples} examples checked in {t_kit:.2f} s "
        f"({1e6 * t_kit / args.examples:.1f} us each); flagged {flagged} {kinds}"
    )

    # the brute-force reference on a subsample, its build timed apart
    t0 = time.perf_counter()
    eval_grams = [(t, _grams(t.text, 13)) for t in texts]
    eval_grams = [(t, g) for t, g in eval_grams if g]
    instructions = [t for t in texts if t.field == "instruction"]
    t_ref_build = time.perf_counter() - t0
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    sample = random.Random(args.seed + 1).sample(range(args.examples), args.sample)
    t0 = time.perf_counter()
    ref = []
    for k in sample:
        instruction, inp, out = examples[k]
        best = max(scorer.score(t.text, instruction)["rougeL"].fmeasure for t in instructions)
        hit = best > 0.7
        kind = "rouge_l" if hit else None
        if not hit:
            for field in (instruction, inp, out):
                g = _grams(field, 13)
                if g and any(g & eg for _, eg in eval_grams):
                    kind = "ngram"
                    break
        ref.append((kind, best))
    t_ref = time.perf_counter() - t0
    for k, (kind, best) in zip(sample, ref, strict=True):
        m = found[k]
        assert (m.kind if m else None) == kind, (examples[k], m, kind)
        if kind == "rouge_l":
            assert m.score == best
    per = t_ref / args.sample
    scaled = per * args.examples
    print(
        f"reference (rouge-score + n-gram set intersections, every pair): {args.sample} examples "
        f"in {t_ref:.2f} s ({1e3 * per:.1f} ms each) -> {scaled:.0f} s for {args.examples} "
        f"(its n-gram sets built in {t_ref_build:.2f} s); decisions on the sample identical"
    )
    print(
        f"kit / reference: {t_kit / scaled:.5f} (check alone); "
        f"{(t_kit + t_build) / (scaled + t_ref_build):.5f} with each side's index build; "
        f"speed-up {scaled / t_kit:,.0f}x"
    )


if __name__ == "__main__":
    main()
