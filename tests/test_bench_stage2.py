"""benchmarks/bench_stage2.py and benchmarks/gpu_check.sh: the parts that run without a GPU.

The slow test runs the stage-2 engine comparison (`--quick`) on the real model (Gemma 3 270M through
transformers and llama.cpp) and checks the printed table: a row per engine and prompt set, every
number finite and positive. The others check the report's arithmetic on hand-made rows, the
agreement helpers, and the GPU script's syntax and dry run. No timing is asserted.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks" / "bench_stage2.py"
GPU_CHECK = REPO / "benchmarks" / "gpu_check.sh"


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_stage2", BENCH)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules["bench_stage2"] = mod
    spec.loader.exec_module(mod)
    return mod


def _table(text: str) -> dict[tuple[str, str], list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[0] not in ("engine", "---"):
            rows[(cells[0], cells[1])] = cells
    return rows


def _number(cell: str) -> float:
    return float(cell.rstrip("x%"))


def test_report_ratios_and_overhead_by_hand():
    b = _load_bench()
    rows = [
        b.Row("hf-raw", "kit", 4, 120.0, ["a", "b", "c", "d"]),
        b.Row("hf", "kit", 4, 60.0, ["a", "b", "c", "x"], engine_s=59.4, hit_s=0.0594),
        b.Row("llama-raw", "kit", 4, 30.0, ["a", "b", "c", "d"]),
        b.Row("llama", "kit", 4, 31.0, ["a", "b", "c", "d"], engine_s=30.69, hit_s=0.3069),
    ]
    out = b.report(rows)
    t = _table(out)
    assert set(t) == {("hf-raw", "kit"), ("hf", "kit"), ("llama-raw", "kit"), ("llama", "kit")}
    # hf: 4 prompts in 60 s = 4.00/min; raw 2.00/min -> 2.00x of its raw engine and of the anchor
    assert t[("hf", "kit")][4:9] == ["4.00", "2.00x", "2.00x", "1.010%", "0.100%"]
    # llama: 30/31 of raw llama = 0.97x; 120/31 of the anchor = 3.87x; overhead 0.31/30.69
    assert t[("llama", "kit")][4:9] == ["7.74", "0.97x", "3.87x", "1.010%", "1.000%"]
    assert t[("hf-raw", "kit")][5:9] == ["-", "1.00x", "-", "-"]
    assert out.count("hf vs hf-raw (kit): 75% identical, first divergence at tokens [0]") == 1
    assert "llama vs llama-raw (kit): 100% identical" in out


def test_agreement_and_first_divergence():
    b = _load_bench()
    assert b.first_divergence("abcd", "abxd", None) == 2
    assert b.first_divergence("ab", "abc", None) == 2
    words = lambda s: s.split()  # noqa: E731
    frac, div = b.agreement(["a b c", "a b", " x "], ["a b d", "a b", "x"], words)
    assert frac == pytest.approx(2 / 3)
    assert div == [2]


def test_compare_runs_matches_records_by_id(tmp_path):
    b = _load_bench()
    from ensemble_instruct_lib.data.jsonl import write_jsonl

    a, c = tmp_path / "a", tmp_path / "c"
    a.mkdir()
    c.mkdir()
    write_jsonl(a / "stage2_instances.jsonl", [{"id": "1", "raw": "x y"}, {"id": "2", "raw": "z"}])
    write_jsonl(c / "stage2_instances.jsonl", [{"id": "2", "raw": "z"}, {"id": "1", "raw": "x q"}])
    write_jsonl(a / "stage3_outputs_m.jsonl", [{"id": "9", "raw": "o"}])
    lines = b.compare_runs(a, c, lambda s: s.split())
    assert lines == [
        "  stage2_instances.jsonl: 2 common records, 50% identical, first divergence at tokens [1]"
    ]


def test_build_prompts_both_sets():
    b = _load_bench()
    kit = b.build_prompts(4, "kit")
    ref = b.build_prompts(4, "reference")
    assert [p.task_type for p in kit] == ["A", "B", "A", "B"]
    assert [p.instruction for p in kit] == [p.instruction for p in ref]
    # reference prompts of one type share the fixed template; kit prompts sample their demos
    assert os.path.commonprefix([ref[0].text, ref[2].text]).count("\n") > 10
    assert kit[0].text != kit[2].text
    assert all(p.text.endswith("\n") and p.instruction.split()[0] in p.text for p in kit + ref)


def test_gpu_check_syntax_and_dry_run(tmp_path):
    bash = shutil.which("bash")
    assert bash
    subprocess.run([bash, "-n", str(GPU_CHECK)], check=True)
    env = dict(os.environ, GPU_CHECK_DRY_RUN="1", GPU_CHECK_OUT=str(tmp_path / "gc"))
    r = subprocess.run(
        [bash, str(GPU_CHECK)], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    cmds = [line[2:] for line in r.stdout.splitlines() if line.startswith("+ ")]
    text = "\n".join(cmds)
    assert "pip install -q vllm" in text
    assert "models fetch gemma-3-270m" in text
    assert "--stages 1 " in text + " " and "--stages 2,3" in text
    assert "--compare-runs" in text
    assert re.search(r"bench_stage2\.py --device cuda .*--engines hf-raw hf vllm-raw vllm", text)
    assert not (tmp_path / "gc").exists()  # a dry run makes nothing
    # a machine without vLLM or the package registry: HF bf16 against HF float32, a GGUF copy
    env.update(GPU_CHECK_ENGINES="hf", GPU_CHECK_SKIP_INSTALL="1", GPU_CHECK_GGUF="/m/g.gguf")
    r = subprocess.run(
        [bash, str(GPU_CHECK)], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    text = "\n".join(line[2:] for line in r.stdout.splitlines() if line.startswith("+ "))
    assert "import vllm" not in text and "vllm-raw" not in text and "pip install" not in text
    assert "models fetch gemma-3-270m --gguf /m/g.gguf" in text
    assert "write_config hf-fp32 hf '{batch_size: 32, dtype: float32, device: cuda}'" in text
    assert "--compare-runs" in text and "run-hf-fp32" in text
    assert re.search(r"bench_stage2\.py --device cuda .*--engines hf-raw hf --", text)
    # every python module and script it names exists in the kit
    assert (REPO / "ensemble_instruct_lib" / "__main__.py").exists()


@pytest.mark.slow
def test_bench_quick_on_the_real_model(tmp_path):
    pytest.importorskip("llama_cpp")
    pytest.importorskip("transformers")
    from ensemble_instruct_lib.engines.models import model_status

    status = model_status("gemma-3-270m")
    if status["gguf"] == "-" or status["transformers"] == "-":
        pytest.skip("gemma-3-270m is not fetched: python -m ensemble_instruct_lib models fetch")
    engines = ["hf-raw", "hf", "llama-raw", "llama"]
    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, str(BENCH), "--quick", "--prompts", "2", "--engines", *engines]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    t = _table(r.stdout)
    assert set(t) == {(e, s) for e in engines for s in ("kit", "reference")}, r.stdout
    for (engine, _), cells in t.items():
        assert cells[2] == "2"
        for cell in cells[3:5]:
            x = _number(cell)
            assert math.isfinite(x) and x > 0, (engine, cells)
        ratios = cells[6:7] if engine.endswith("-raw") else cells[5:7]
        for cell in ratios:
            x = _number(cell)
            assert math.isfinite(x) and x > 0, (engine, cells)
        if engine in ("hf", "llama"):
            for cell in cells[7:9]:
                x = _number(cell)
                assert math.isfinite(x) and x >= 0, (engine, cells)
    # greedy: the kit's engines give the raw engines' texts (same weights, same decoding)
    assert "llama vs llama-raw (kit): " in r.stdout
