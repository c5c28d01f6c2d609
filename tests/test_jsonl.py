"""Crash-safe JSONL: torn tails are detected and discarded, never duplicated or fatal."""

from __future__ import annotations

import pytest

from ensemble_instruct_lib import DataError
from ensemble_instruct_lib.data.jsonl import (
    JsonlAppender,
    read_jsonl,
    repair_torn_tail,
    write_jsonl,
)


def test_roundtrip_and_atomic_rewrite(tmp_path):
    p = tmp_path / "a.jsonl"
    assert write_jsonl(p, [{"a": 1}, {"b": "é\n"}]) == 2
    assert read_jsonl(p) == [{"a": 1}, {"b": "é\n"}]
    write_jsonl(p, [{"c": 3}])
    assert read_jsonl(p) == [{"c": 3}]
    assert not [x for x in tmp_path.iterdir() if x.name.endswith(".tmp")]


def test_torn_tail_is_discarded_then_repaired(tmp_path):
    p = tmp_path / "b.jsonl"
    with JsonlAppender(p) as out:
        out.append({"i": 0})
        out.append({"i": 1})
    with open(p, "a") as f:
        f.write('{"i": 2, "text": "half a li')  # a killed writer
    with pytest.warns(UserWarning, match="incomplete last line"):
        assert read_jsonl(p) == [{"i": 0}, {"i": 1}]
    with JsonlAppender(p) as out:  # appending repairs first
        out.append({"i": 2})
    assert read_jsonl(p) == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert not repair_torn_tail(p)


def test_corrupt_middle_line_is_an_error_with_file_and_line(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"i": 0}\n{oops\n{"i": 2}\n')
    with pytest.raises(DataError) as e:
        read_jsonl(p)
    assert e.value.line == 2 and str(p) in str(e.value)
    p.write_text('{"i": 0}\n[1, 2]\n')
    with pytest.raises(DataError, match="JSON object"):
        read_jsonl(p)
