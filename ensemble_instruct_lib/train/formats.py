"""The one prompt format used to fine-tune on generated data and to evaluate the tuned model.

Implements the glue of METHOD.md "Evaluation in the paper": a base LM is fine-tuned on the
(instruction, input, output) records the pipeline exports, then asked the SuperNI test tasks and the
252 user-oriented instructions in the very same format, so a score reflects the data and not a
mismatch of templates. The paper does not print its template; this Alpaca-like layout is the kit's
own choice, versioned by `FORMAT_VERSION` (stored in every prediction and fine-tuning record):

    ### Instruction:
    <instruction>

    ### Input:
    <input>

    ### Response:
    <response><eos>

The "Input" block is left out when the input is empty (type-B tasks); the "Instruction" block is
left out when the instruction is empty (evaluation "without definition": the model sees the input
only). Fields are stripped of surrounding whitespace. The response is followed by the tokenizer's
end-of-sequence token when training; generation stops at EOS or at `STOP_STRINGS`.
"""

from __future__ import annotations

FORMAT_VERSION = "ei-sft-v1"

INSTRUCTION_HEADER = "### Instruction:"
INPUT_HEADER = "### Input:"
RESPONSE_HEADER = "### Response:"

#: Where a greedy continuation is cut when the model starts a new block instead of ending.
STOP_STRINGS: tuple[str, ...] = ("\n### ",)


def build_prompt(instruction: str, input: str = "") -> str:
    """The prompt for one task, ending right where the response starts.

    Args:
        instruction: the task instruction (a SuperNI task definition, a user-oriented instruction,
            a generated instruction); "" leaves the block out.
        input: the instance input; "" leaves the block out.

    Returns:
        The prompt text, ending with ``"### Response:\\n"``.
    """
    blocks = []
    if instruction.strip():
        blocks.append(f"{INSTRUCTION_HEADER}\n{instruction.strip()}")
    if input.strip():
        blocks.append(f"{INPUT_HEADER}\n{input.strip()}")
    blocks.append(f"{RESPONSE_HEADER}\n")
    return "\n\n".join(blocks)


def build_example(instruction: str, input: str, output: str) -> tuple[str, str]:
    """One training example split into (prompt, response); only the response is learned.

    The caller appends the tokenizer's EOS token to the response.
    """
    return build_prompt(instruction, input), output.strip()
