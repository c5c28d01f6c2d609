"""A backend that replays real recorded LM answers (METHOD.md stage 3, offline).

Self-Instruct published the answers of eight GPT-3-family models to its 252 user-oriented
instructions (`data.public.PREDICTION_MODELS`). `RecordedBackend` turns one model's answers into a
stage-3 "extra LM": every recorded (instruction, input) is rendered with a prompt builder (the
zero-shot output prompt by default) and the prompt is looked up on each call. The answer is
stripped of leading whitespace, cut before the first stop string and stripped (as
`parsing.parse_output` treats live stage-3 text). Output ensembling
(stage 4) can then be run and studied on real, heterogeneous LM text without any model.

Left out: stages 1-2 (nothing recorded there) and any prompt not built from a recorded example.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..data.public import load_predictions, predictions_path, sha256_of
from .base import Backend, DecodingParams, Generation, cut_at_stop

PromptBuilder = Callable[[str, str], str]


class UnknownPromptError(KeyError):
    """A prompt the recorded model never answered."""

    def __str__(self) -> str:  # KeyError would print the message's repr
        return str(self.args[0]) if self.args else ""


def _local_zero_shot(instruction: str, input: str) -> str:  # noqa: A002
    instruction, input = instruction.strip(), input.strip()  # noqa: A001
    return f"{instruction}\n{input}" if input else instruction


def default_prompt_builder() -> PromptBuilder:
    """`prompts.zero_shot_output_prompt` when the module is present, else the same format here."""
    try:
        from ..method.prompts import zero_shot_output_prompt
    except ImportError:
        return _local_zero_shot
    return zero_shot_output_prompt


class RecordedBackend(Backend):
    """Answers stage-3 prompts from one recorded model's user-oriented predictions.

    Args:
        model: one of `data.public.PREDICTION_MODELS` (e.g. "text-davinci-003").
        data_root: the data folder (default: `$EI_DATA_DIR`, see `data.public.data_dir`).
        prompt_builder: (instruction, input) -> prompt; must be the builder the pipeline uses for
            its stage-3 prompts (default: the zero-shot output prompt).
    """

    name = "recorded"

    def __init__(
        self,
        model: str,
        *,
        data_root: str | Path | None = None,
        prompt_builder: PromptBuilder | None = None,
    ) -> None:
        self.model_id = model
        self.path = predictions_path(model, data_root)  # checks the name
        self.revision = sha256_of(self.path)[:12]
        build = prompt_builder or default_prompt_builder()
        self._answers: dict[str, str] = {}
        for row in load_predictions(model, data_root):
            key = build(row["instruction"], row["input"]).strip()
            self._answers.setdefault(key, row["response"])

    def __len__(self) -> int:
        return len(self._answers)

    def __contains__(self, prompt: object) -> bool:
        return isinstance(prompt, str) and prompt.strip() in self._answers

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["file"] = self.path.name
        return d

    def _generate(
        self, prompts: list[str], params: DecodingParams, sample_indices: list[int]
    ) -> list[Generation]:
        out = []
        for i, prompt in enumerate(prompts):
            response = self._answers.get(prompt.strip())
            if response is None:
                raise UnknownPromptError(
                    f"recorded model {self.model_id!r} has no answer for prompt {i} "
                    f"({prompt[:80]!r}{'...' if len(prompt) > 80 else ''}). It only answers the "
                    f"{len(self._answers)} prompts built by its prompt_builder from the recorded "
                    "user-oriented instructions: build stage-3 prompts from "
                    "data.public.load_recorded(...) examples with the same prompt builder, or use a "
                    "real backend for new instructions."
                )
            # Leading whitespace goes first: text-davinci answers open with a blank line, which a
            # blank-line stop would otherwise turn into an empty answer.
            text, _ = cut_at_stop(response.lstrip(), params.stop)
            out.append(Generation(text=text.strip(), finish_reason="stop"))
        return out
