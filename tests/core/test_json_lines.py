"""core.json_lines: the one JSONL reading loop of the prompt file, the batch manifest and the evaluation's reader."""
from fusedream_pack.fusedream_ops.core.json_lines import json_lines


def test_blank_lines_are_skipped_but_counted_and_a_bad_line_comes_with_its_number_and_error():
    """Reverted on a scratch copy: numbering from 0 (every number one low) and dropping the error (a bad line then
    read as a parsed null); both failed here."""
    rows = list(json_lines(['{"a": 1}\n', "\n", "   \r\n", "null\n", "{nope\n", "[2]"]))
    assert [(n, v) for n, v, _ in rows] == [(1, {"a": 1}), (4, None), (5, None), (6, [2])]
    assert [e is None for _, _, e in rows] == [True, True, False, True]
    assert rows[2][2].msg.startswith("Expecting property name")
