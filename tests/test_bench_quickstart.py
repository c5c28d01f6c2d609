"""benchmarks/bench_quickstart.py --quick: the default config's real two-model run (Gemma 3 270M and
SmolLM2-135M-Instruct through llama.cpp, 1 instruction per type) against a raw replay of the same
calls. Checks what the benchmark prints and that the replay covers every call of the run, for both
models; no timing is asserted (speed lives in benchmarks/README.md)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ensemble_instruct_lib.engines import models as M

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks" / "bench_quickstart.py"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_quick_prints_kit_and_raw_times_for_both_models():
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip(f"llama-cpp-python is not installed: {M.LLAMA_CPP_INSTALL}")
    for km in M.KNOWN_MODELS.values():
        if not M.package_installed(km):
            pytest.skip(f"the {km.package} package is not installed: {km.install_command}")
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--reference", "none"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=800,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    calls = int(re.search(r"calls: (\d+) \((\d+) generated tokens\)", out).group(1))
    assert calls >= 4  # stages 1 and 2 for two types (stage 3 only where stage 2 was valid)
    kit = float(re.search(r"kit, the whole `run` command: ([\d.]+) s", out).group(1))
    models = dict(re.findall(r"raw llama\.cpp, (\S+): ([\d.]+) s", out))
    assert "gemma-3-270m" in models and set(models) <= {"gemma-3-270m", "smollm2-135m-instruct"}
    raw = float(re.search(r"raw engine time of the same calls: ([\d.]+) s", out).group(1))
    assert abs(raw - sum(float(v) for v in models.values())) < 0.2
    ratio = float(re.search(r"kit / raw: ([\d.]+)x", out).group(1))
    assert kit > 0 and raw > 0 and abs(ratio - kit / raw) < 0.01
    assert "reference" not in out.split("kit / raw")[1]
