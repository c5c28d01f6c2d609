"""A scripted fake LM with canned answers, for unit tests of every pipeline stage (no model).

The answer to a prompt comes from a dict (exact prompt), a list of (regex, answer) rules searched in
order (first match wins), or a function. Answers are strings (cut before the first stop string,
like a real backend, or with `keep_after_stop` only a final stop string removed) or ready `Generation`s (to script a "length" finish or token counts). Every
prompt received is kept in `calls`, every batch in `batches`, so tests can assert on what the
pipeline asked.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .base import Backend, DecodingParams, Generation, cut_generated

Answer = str | Generation
AnswerFn = Callable[[str, DecodingParams, int], Answer]
Rule = tuple[str | re.Pattern[str], Answer | AnswerFn]


class UnscriptedPromptError(KeyError):
    """The script has no answer for a prompt."""

    def __str__(self) -> str:  # KeyError would print the message's repr
        return str(self.args[0]) if self.args else ""


class ScriptedBackend(Backend):
    """Canned answers per prompt.

    Args:
        responder: one of
            - a dict prompt -> answer (exact match);
            - a list of (regex, answer-or-function) rules, tried in order with `re.search`;
            - a function (prompt, params, sample_index) -> answer.
            Rule functions take the same (prompt, params, sample_index) arguments.
        model_id: the model name reported (and used in cache keys).
    """

    name = "scripted"

    def __init__(
        self,
        responder: Mapping[str, Answer] | Sequence[Rule] | AnswerFn,
        *,
        model_id: str = "scripted",
        revision: str = "",
    ) -> None:
        self.model_id = model_id
        self.revision = revision
        self.calls: list[str] = []
        self.batches: list[list[str]] = []
        self._fn: AnswerFn
        if isinstance(responder, Mapping):
            table = dict(responder)
            self._fn = lambda p, params, i: self._from_table(table, p)
        elif callable(responder):
            self._fn = responder
        elif isinstance(responder, Sequence) and not isinstance(responder, str):
            rules = []
            for n, rule in enumerate(responder):
                if not (isinstance(rule, tuple) and len(rule) == 2):
                    raise ValueError(f"rule {n} must be a (regex, answer) pair, got {rule!r}")
                pattern = rule[0] if isinstance(rule[0], re.Pattern) else re.compile(rule[0])
                rules.append((pattern, rule[1]))
            self._fn = lambda p, params, i: self._from_rules(rules, p, params, i)
        else:
            raise TypeError(
                "responder must be a dict, a list of (regex, answer) rules or a function, "
                f"got {type(responder).__name__}"
            )

    @staticmethod
    def _from_table(table: dict[str, Answer], prompt: str) -> Answer:
        if prompt not in table:
            raise UnscriptedPromptError(
                f"ScriptedBackend has no answer for prompt {prompt[:120]!r}; add it to the "
                f"responder dict ({len(table)} prompts scripted)"
            )
        return table[prompt]

    @staticmethod
    def _from_rules(
        rules: list[tuple[re.Pattern[str], Any]], prompt: str, params: DecodingParams, index: int
    ) -> Answer:
        for pattern, answer in rules:
            if pattern.search(prompt):
                return answer(prompt, params, index) if callable(answer) else answer
        raise UnscriptedPromptError(
            f"ScriptedBackend: no rule matches prompt {prompt[:120]!r}; rules tried: "
            f"{[p.pattern for p, _ in rules]}"
        )

    def _generate(
        self, prompts: list[str], params: DecodingParams, sample_indices: list[int]
    ) -> list[Generation]:
        self.batches.append(list(prompts))
        out = []
        for prompt, index in zip(prompts, sample_indices, strict=True):
            self.calls.append(prompt)
            answer = self._fn(prompt, params, index)
            if isinstance(answer, Generation):
                out.append(dataclasses.replace(answer, extra=dict(answer.extra)))
            elif isinstance(answer, str):
                text = cut_generated(answer, params)
                out.append(Generation(text=text, finish_reason="stop"))
            else:
                raise TypeError(
                    f"ScriptedBackend answer for {prompt[:60]!r} must be str or Generation, "
                    f"got {type(answer).__name__}"
                )
        return out
