"""A deterministic fake LM that speaks the pipeline's formats, for tests and offline demos.

Not part of the method and not a model: `fake_backends` returns `ScriptedBackend`s whose answers
are pure functions of (prompt, sample index), shaped like a cooperative LM's: stage-1 answers are
mostly new instructions (some too short, some with blocked keywords, some near-duplicates), stage-2
answers mostly valid blocks (some malformed, some with an invented extra block), stage-3 answers
agree with the generator's output most of the time. The pipeline's real logic (filters, parsing,
consensus, resuming) runs unchanged on them, so every stage has work to accept and to reject.
"""

from __future__ import annotations

import hashlib
import random
import re

from .backends.base import DecodingParams
from .backends.scripted import ScriptedBackend
from .config import RunConfig

_WORDS = [
    "river",
    "mountain",
    "teacher",
    "recipe",
    "budget",
    "garden",
    "planet",
    "museum",
    "letter",
    "protocol",
    "harvest",
    "violin",
    "engine",
    "market",
    "winter",
    "station",
    "language",
    "bridge",
    "forest",
    "doctor",
    "camera",
    "painting",
    "journey",
    "kitchen",
    "theory",
    "library",
    "ocean",
    "festival",
    "village",
    "contract",
    "window",
    "battery",
    "puzzle",
    "history",
    "vaccine",
    "galaxy",
    "election",
    "harbor",
    "desert",
    "orchestra",
    "tablet",
    "novel",
    "climate",
    "soccer",
    "customer",
    "algorithm",
    "poem",
    "island",
    "mirror",
    "workshop",
    "ticket",
    "hospital",
    "tractor",
    "volcano",
    "senate",
    "castle",
    "recipe",
    "coffee",
    "airport",
    "factory",
    "ballet",
    "chemistry",
    "wallet",
    "insurance",
    "glacier",
    "robot",
]
_VERBS = ("Describe", "Explain", "Summarize", "Compare", "List", "Suggest", "Classify", "Rewrite")


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()
    return random.Random(int(digest[:16], 16))


def _answer(instruction: str, inp: str) -> str:
    """The 'right' output for an instruction, which the fake extra LMs mostly agree on."""
    rng = _rng("answer", instruction, inp)
    return " ".join(rng.sample(_WORDS, 6)).capitalize() + "."


def _stage1(prompt: str, index: int) -> str:
    rng = _rng("stage1", prompt, index)
    r = rng.random()
    if r < 0.08:
        return " Draw a picture of a quiet harbor at dawn. |EoS|"
    if r < 0.14:
        return " Say hello. |EoS|"
    if r < 0.2:  # a near-copy of the first demonstration: not novel
        first = re.search(r"(?m)^1\. (.*) \|EoS\|$", prompt)
        return f" {first.group(1)} |EoS|" if first else " Say hi. |EoS|"
    words = rng.sample(_WORDS, 5)
    return (
        f" {rng.choice(_VERBS)} the {words[0]} and the {words[1]} of a {words[2]} "
        f"near the {words[3]} {words[4]}. |EoS|"
    )


def _stage2(prompt: str, index: int) -> str:
    instruction = prompt.rstrip("\n").rsplit("\ninstruction: ", 1)[1]
    needs_input = "write an input" in prompt.split("\n", 1)[0]
    rng = _rng("stage2", prompt, index)
    r = rng.random()
    inp = " ".join(rng.sample(_WORDS, 4)) if needs_input else ""
    if r < 0.1:
        return "Sorry, I cannot do that.\n|EoS|"
    extra = ""
    if r < 0.25:
        extra = (
            "\n\ninstruction: Invent a slogan for a "
            + " ".join(rng.sample(_WORDS, 3))
            + "\noutput: Always "
            + rng.choice(_WORDS)
            + "."
        )
    body = f"input: {inp}\n" if needs_input else ""
    return f"{body}output: {_answer(instruction, inp)}{extra}\n|EoS|"


def fake_generator(model_id: str = "fake-generator") -> ScriptedBackend:
    """A fake stage-1/2 LM."""

    def respond(prompt: str, params: DecodingParams, index: int) -> str:
        if re.search(r"\n\d+\.$", prompt):
            return _stage1(prompt, index)
        if prompt.endswith("\n") and "\ninstruction: " in prompt:
            return _stage2(prompt, index)
        raise ValueError(f"fake generator got a prompt it does not know: {prompt[-80:]!r}")

    return ScriptedBackend(respond, model_id=model_id)


def fake_answerer(model_id: str, agreement: float = 0.7) -> ScriptedBackend:
    """A fake stage-3 LM answering zero-shot prompts; agrees with the generator `agreement` of
    the time, paraphrases a little some of the time, and is off-topic otherwise."""

    def respond(prompt: str, params: DecodingParams, index: int) -> str:
        instruction, _, inp = prompt.partition("\n")
        right = _answer(instruction.strip(), inp.strip())
        r = _rng("stage3", model_id, prompt).random()
        if r < agreement:
            return " " + right
        if r < agreement + (1 - agreement) / 2:
            return " " + right.rsplit(" ", 2)[0] + " indeed."
        return " I would rather talk about " + " ".join(
            _rng("off", model_id, prompt).sample(_WORDS, 3)
        )

    return ScriptedBackend(respond, model_id=model_id)


def fake_backends(config: RunConfig, agreement: float = 0.7) -> dict[str, ScriptedBackend]:
    """Fake backends for every model of a config, keyed by model name (for `pipeline.run`)."""
    out = {config.generator.name: fake_generator(config.generator.model)}
    for spec in config.extra_models:
        out[spec.name] = fake_answerer(spec.model, agreement)
    return out
