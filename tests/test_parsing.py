"""Parsers for LM responses: hand-written responses of every shape a real LM produces."""

from __future__ import annotations

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
    inst = parse_instance(raw, "A")
    assert inst.input == "3, 1, 2"
    assert inst.output == "1\n2\n3"  # the whole multi-line output, not only its first line
    assert inst.extra_instructions == ("Next task",)


def test_type_a_run_on_without_end_marker():
    raw = "input: a cat\noutput: un chat\n\ninstruction: Translate to German now\ninput: a dog\noutput: ein Hund"
    inst = parse_instance(raw, "A")
    assert (inst.input, inst.output) == ("a cat", "un chat")
    assert inst.extra_instructions == ("Translate to German now",)


def test_type_b_instance():
    inst = parse_instance("output: Why did the chicken cross the road?\n|EoS|", "B")
    assert inst.input == "" and inst.output == "Why did the chicken cross the road?"
    assert parse_instance_verbose("input: x\noutput: y", "B") == (None, "unexpected_input")


def test_invalid_instances():
    assert parse_instance_verbose("output: y", "A") == (None, "no_input")
    assert parse_instance_verbose("input: x\n|EoS|", "A") == (None, "no_output")
    assert parse_instance_verbose("input: x\noutput:   \n|EoS|", "A") == (None, "empty_output")
    assert parse_instance_verbose("input:\noutput: y", "A") == (None, "empty_input")
    assert parse_instance_verbose("just some text", "B") == (None, "no_output")
    assert parse_instance_verbose("output: y", "Z") == (None, "bad_task_type")
    # an output field that only appears in an invented second block does not count
    assert parse_instance("input: x\n|EoS|\ninstruction: t\ninput: a\noutput: b", "A") is None


def test_field_names_are_case_insensitive_and_repeated_instruction_is_skipped():
    inst = parse_instance("Instruction: Add them\nInput: 2 and 3\nOutput: 5", "A")
    assert (inst.input, inst.output, inst.extra_instructions) == ("2 and 3", "5", ())


def test_parse_output():
    assert parse_output(" Paris.\n\nInput: next question") == "Paris."
    assert parse_output("\n\n  Paris is the capital. |EoS| junk") == "Paris is the capital."
    assert parse_output("line one\nline two\n") == "line one\nline two"
    assert parse_output("a\n\nb", stop=("|EoS|",)) == "a\n\nb"
