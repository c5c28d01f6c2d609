"""A fake model for self-ensemble runs (test helper): the fake generator answers stages 1-2, and
a stage-3 prompt gets the sample of its index (`SAMPLES[index % 3]`; samples 0 and 2 agree)."""

from __future__ import annotations

import re

from ensemble_instruct_lib.engines.scripted import ScriptedBackend
from ensemble_instruct_lib.testing.fake import fake_generator

SAMPLES = ["alpha beta gamma", "alpha beta delta", "alpha beta gamma"]
TEMPERATURE = 0.5  # what the self-ensemble configs of the tests sample with


def sampler_backends() -> dict[str, ScriptedBackend]:
    """{"gen": backend}: stages 1-2 through the fake generator, stage 3 per sample index."""
    gen = fake_generator("gen")

    def dispatch(prompt, params, index):
        if re.search(r"\n\d+\.$", prompt) or (
            prompt.endswith("\n") and "\ninstruction: " in prompt
        ):
            return gen.generate([prompt], params, [index])[0].text
        assert params.do_sample and params.temperature == TEMPERATURE
        return " " + SAMPLES[index % 3]

    return {"gen": ScriptedBackend(dispatch, model_id="gen")}
