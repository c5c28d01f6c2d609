"""Parsers for LM responses: hand-written responses of every shape a real LM produces."""

from __future__ import annotations

import pytest

from ensemble_instruct_lib import parse_instance, parse_instructions, parse_output
from ensemble_instruct_lib.method.parsing import parse_instance_verbose


def test_parse_instructions():
    assert parse_instructions(" Write a haiku about rain. |EoS|") == ["Write a haiku about rain."]
    assert parse_instructions(" Name three fruits |EoS|\n26. List two colors: |EoS|\n27.") == [
        "Name three fruits",
        "List two colors",
    ]
    # Self-Instruct style: many numbered items, no end marker
    raw = "Sort the list.\n2. Find the  maximum.\n3) Reverse a string.\n4."
    assert parse_instructions(raw) == ["Sort the list.", "Find the maximum.", "Reverse a string."]
    assert parse_instructions("   |EoS|") == []


def test_type_a_instance_with_multiline_output():
    raw = " input: 3, 1, 2\noutput: 1\n2\n3\n|EoS|\n\ninstruction: Next task\ninput: x\noutput: y"
    inst = parse_instance(raw, "A", "Sort the numbers")
    assert inst.input == "3, 1, 2"
    assert inst.output == "1\n2\n3"  # the whole multi-line output, not only its first line
    assert inst.extra_instructions == ("Next task",)


def test_type_a_run_on_without_end_marker():
    raw = "input: a cat\noutput: un chat\n\ninstruction: Translate to German now\ninput: a dog\noutput: ein Hund"
    inst = parse_instance(raw, "A", "Translate to French")
    assert (inst.input, inst.output) == ("a cat", "un chat")
    assert inst.extra_instructions == ("Translate to German now",)


def test_type_b_instance():
    inst = parse_instance("output: Why did the chicken cross the road?\n|EoS|", "B", "Tell a joke")
    assert inst.input == "" and inst.output == "Why did the chicken cross the road?"
    assert parse_instance_verbose("input: x\noutput: y", "B", "Do it") == (None, "unexpected_input")


def test_invalid_instances():
    assert parse_instance_verbose("output: y", "A", "Do it") == (None, "no_input")
    assert parse_instance_verbose("input: x\n|EoS|", "A", "Do it") == (None, "no_output")
    assert parse_instance_verbose("input: x\noutput:   \n|EoS|", "A", "Do it") == (
        None,
        "empty_output",
    )
    assert parse_instance_verbose("input:\noutput: y", "A", "Do it") == (None, "empty_input")
    assert parse_instance_verbose("just some text", "B", "Do it") == (None, "no_output")
    assert parse_instance_verbose("output: y", "Z", "Do it") == (None, "bad_task_type")
    # an output field that only appears in an invented second block does not count
    assert parse_instance("input: x\n|EoS|\ninstruction: t\ninput: a\noutput: b", "A", "t") is None


def test_field_names_are_case_insensitive_and_repeated_instruction_is_skipped():
    inst = parse_instance("Instruction: Add them\nInput: 2 and 3\nOutput: 5", "A", "Add them")
    assert (inst.input, inst.output, inst.extra_instructions) == ("2 and 3", "5", ())


def test_parse_output():
    assert parse_output(" Paris.\n\nInput: next question") == "Paris."
    assert parse_output("\n\n  Paris is the capital. |EoS| junk") == "Paris is the capital."
    assert parse_output("line one\nline two\n") == "line one\nline two"
    assert parse_output("a\n\nb", stop=("|EoS|",)) == "a\n\nb"


# Real-style stage-2 answers (the shape of falcon-40b text): the prompt ended with
# "instruction: <asked>\n" and the LM started a new block with another task.
DIFFERENT = [
    (
        "B",
        "Write a short poem about the first snow of winter.",
        "instruction: Give me some tips for learning a new language.\noutput: Practice a little "
        "every day, talk with native speakers and do not be afraid of mistakes.\n|EoS|",
    ),
    (
        "A",
        "Convert the temperature from Celsius to Fahrenheit.",
        " instruction: Translate the sentence into Spanish.\ninput: The cat sleeps on the sofa.\n"
        "output: El gato duerme en el sofa.\n|EoS|",
    ),
    (
        "A",
        "Summarize the paragraph in one sentence.",
        "Instruction: Summarize the paragraph in two sentences.\ninput: Rivers carry water...\n"
        "output: Rivers carry water. They shape valleys.",
    ),
]


@pytest.mark.parametrize(("task_type", "asked", "raw"), DIFFERENT)
def test_answer_to_a_different_instruction_is_rejected(task_type, asked, raw):
    assert parse_instance_verbose(raw, task_type, asked) == (None, "different_instruction")
    assert parse_instance(raw, task_type, asked) is None


def test_a_true_repeat_of_the_instruction_is_accepted():
    asked = "Write a short poem about the first snow of winter:"
    raw = (
        "instruction:   Write a short  poem about the first\tsnow of winter\n"
        "output: White hush on the roofs,\nthe year exhales.\n|EoS|"
    )
    inst, reason = parse_instance_verbose(raw, "B", asked)
    assert reason == "ok"
    assert (inst.input, inst.output) == ("", "White hush on the roofs,\nthe year exhales.")
    # without the repeated line the same answer parses the same way
    assert parse_instance(raw.split("\n", 1)[1], "B", asked) == inst
