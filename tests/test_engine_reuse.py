"""A stage-3 member on the generator's own engine (same kind, model and options) reuses the engine
the generator loaded instead of loading the weights a second time, and runs first in stage 3;
members that share an engine run back to back on one load; the outputs are those of a run that
loads each time."""

from __future__ import annotations

import json

import pytest

from ensemble_instruct_lib.engines import factory
from ensemble_instruct_lib.runs.config import load_config
from ensemble_instruct_lib.runs.pipeline import run


def _config(tmp_path, data_root, gpt2, t5, *, same: bool):
    # float32 is what dtype auto gives on CPU: the same computation, another engine key
    member_opts = "{batch_size: 4}" if same else "{batch_size: 4, dtype: float32}"
    path = tmp_path / f"reuse-{same}.yaml"
    path.write_text(
        "name: reuse\n"
        f"data_dir: {data_root}\n"
        "num_instructions: 1\n"
        f"generator: {{kind: hf, model: {gpt2}, name: gen, options: {{batch_size: 4}}}}\n"
        "extra_models:\n"
        f"  - {{kind: hf, model: {t5}, name: t5}}\n"
        f"  - {{kind: hf, model: {gpt2}, name: again, prompt_style: few_shot,"
        f" options: {member_opts}}}\n"
        f"  - {{kind: hf, model: {t5}, name: t5-fewshot, prompt_style: few_shot}}\n"
        "instruction: {max_new_tokens: 16, max_rounds: 2}\n"
        "instance: {max_new_tokens: 24}\n"
        "output: {max_new_tokens: 12}\n"
    )
    return load_config(path)


@pytest.fixture
def loads(monkeypatch):
    seen: list[str] = []
    real = factory.make_backend

    def counting(spec, **kw):
        seen.append(str(spec["model"]))
        return real(spec, **kw)

    monkeypatch.setattr(factory, "make_backend", counting)
    return seen


def test_the_generators_engine_answers_again_without_a_second_load(
    tmp_path, data_root, tiny_gpt2_dir, tiny_t5_dir, loads
):
    out = tmp_path / "same"
    run(_config(tmp_path, data_root, tiny_gpt2_dir, tiny_t5_dir, same=True), out, progress=False)
    assert loads.count(str(tiny_gpt2_dir)) == 1 and loads.count(str(tiny_t5_dir)) == 1
    manifest = json.loads((out / "manifest.json").read_text())
    # the generator's engine went first; the two t5 members ran back to back on one load
    assert list(manifest["counts"]["stage3"]) == ["again", "t5", "t5-fewshot"]

    loads.clear()
    other = tmp_path / "other"
    run(_config(tmp_path, data_root, tiny_gpt2_dir, tiny_t5_dir, same=False), other, progress=False)
    assert loads.count(str(tiny_gpt2_dir)) == 2  # other options: another engine
    assert loads.count(str(tiny_t5_dir)) == 1
    for name in (
        "stage3_outputs_again.jsonl",
        "stage3_outputs_t5.jsonl",
        "stage3_outputs_t5-fewshot.jsonl",
        "ensembled.jsonl",
    ):
        assert (out / name).read_text() == (other / name).read_text()
