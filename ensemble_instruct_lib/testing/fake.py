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
from typing import TYPE_CHECKING

from ..engines.base import DecodingParams, Generation
from ..engines.scripted import ScriptedBackend
from ..methods import alpaca, self_instruct

if TYPE_CHECKING:
    from ..runs.config import RunConfig

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
    needs_input = "\ninput:" in prompt  # type A demonstrations have inputs (either prompt set)
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


# ------------------------------------------------------------------------------------------
# a fake LM speaking these formats (tests and offline demos; not a model)


def fake_self_instruct_generator(model_id: str = "fake-generator") -> ScriptedBackend:
    """A deterministic fake LM answering this module's stage-1, classification and stage-2
    prompts: several new tasks per call (some too short, some with blocked keywords, some
    copies of a demo, now and then cut by the token limit), Yes/No answers, and examples whose
    outputs the `fake.fake_answerer` stage-3 LMs mostly agree with."""

    def task(rng: random.Random, prompt: str) -> str:
        r = rng.random()
        if r < 0.08:
            return "Draw a picture of a quiet harbor at dawn."
        if r < 0.14:
            return "Say hello."
        if r < 0.2:
            first = re.search(r"(?m)^Task 1: (.*)$", prompt)
            return first.group(1) if first else "Say hi."
        w = rng.sample(_WORDS, 5)
        return f"{rng.choice(_VERBS)} the {w[0]} and the {w[1]} of a {w[2]} near the {w[3]} {w[4]}."

    def respond(prompt: str, params: DecodingParams, index: int) -> str | Generation:
        m = re.search(r"\nTask (\d+):$", prompt)
        if m:
            rng = _rng("si-stage1", prompt, index)
            n = int(m.group(1))
            lines = [" " + task(rng, prompt)]
            lines += [f"Task {n + k}: {task(rng, prompt)}" for k in range(1, rng.randint(2, 8))]
            text = "\n".join(lines)
            if rng.random() < 0.15:
                return Generation(text[: len(text) - 7], finish_reason="length")
            return text
        if prompt.endswith("\nClassification:"):
            new = prompt.rsplit("\nTask: ", 1)[1]
            return " Yes" if _rng("si-cls", new).random() < 0.3 else " No"
        if prompt.endswith("\n") and "\nTask: " in prompt:
            instruction = prompt.rstrip("\n").rsplit("\nTask: ", 1)[1]
            rng = _rng("si-stage2", prompt, index)
            if rng.random() < 0.1:
                return "Sorry, I cannot think of an example."
            if prompt.startswith(self_instruct._OUTPUT_FIRST_HEADER):
                inp = " ".join(rng.sample(_WORDS, 4))
                return f"Class label: {_answer(instruction, inp)}\nInput: {inp}\n\nTask: next"
            inp = " ".join(rng.sample(_WORDS, 4)) if rng.random() < 0.6 else ""
            body = f"Input: {inp}\n" if inp else ""
            return f"{body}Output: {_answer(instruction, inp)}\n\nTask: next"
        raise ValueError(f"fake Self-Instruct generator got an unknown prompt: {prompt[-80:]!r}")

    return ScriptedBackend(respond, model_id=model_id)


def fake_alpaca_generator(model_id: str = "fake-generator") -> ScriptedBackend:
    """A deterministic fake LM continuing Alpaca task lists: mostly well-formed new tasks whose
    outputs `fake.fake_answerer` LMs mostly agree with; some too short, with blocked keywords,
    copies of a demo, without an output, and now and then a response cut by the token limit."""

    def respond(prompt: str, params: DecodingParams, index: int) -> str | Generation:
        m = re.search(r"\n(\d+)\. Instruction:$", prompt)
        if not m:
            raise ValueError(f"fake Alpaca generator got an unknown prompt: {prompt[-80:]!r}")
        rng = _rng("alpaca", prompt, index)
        first = int(m.group(1))
        demo = re.search(r"(?m)^1\. Instruction: (.*)$", prompt)
        blocks = []
        for k in range(first, first + rng.randint(3, 10)):
            r = rng.random()
            w = rng.sample(_WORDS, 5)
            if r < 0.07:
                instr = "Draw a map of the old town."
            elif r < 0.12:
                instr = "Say hello."
            elif r < 0.17 and demo:
                instr = demo.group(1)
            else:
                instr = f"{rng.choice(_VERBS)} the {w[0]} and the {w[1]} of a {w[2]} near {w[3]}."
            inp = " ".join(rng.sample(_WORDS, 3)) if rng.random() < 0.6 else ""
            head = f" {instr}" if k == first else f"{k}. Instruction: {instr}"
            body = f"{head}\n{k}. Input:\n{inp or alpaca.NO_INPUT}"
            if rng.random() >= 0.08:
                body += f"\n{k}. Output:\n{_answer(instr, inp)}"
            blocks.append(body)
        text = f"\n{alpaca.SEPARATOR}\n".join(blocks) + f"\n{alpaca.SEPARATOR}"
        if rng.random() < 0.15:
            return Generation(text[: len(text) - 12], finish_reason="length")
        return text

    return ScriptedBackend(respond, model_id=model_id)


#: the fake generator of each prompting method (Ensemble-Instruct's is `fake_generator`)
GENERATORS = {
    "ensemble_instruct": fake_generator,
    "self_instruct": fake_self_instruct_generator,
    "alpaca": fake_alpaca_generator,
}


def fake_backends(config: RunConfig, agreement: float = 0.7) -> dict[str, ScriptedBackend]:
    """Deterministic fake LMs for every model of a config of any method, keyed by model name (for
    `pipeline.run`; tests and offline demos, not a model).

    The generator speaks the config's method's formats (`GENERATORS`); the extra models are
    `fake_answerer`s, which agree with the fake generators' outputs most of the time.
    """
    out = {config.generator.name: GENERATORS[config.method](config.generator.model)}
    for spec in config.extra_models:
        out[spec.name] = fake_answerer(spec.model, agreement)
    return out
