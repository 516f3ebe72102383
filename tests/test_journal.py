"""The journal (data/journal.py): records appended as whole lines, recovered after a kill, damage refused."""

from __future__ import annotations

import json

import pytest

from minillava.data.journal import Journal


def record(i: int) -> dict:
    return {"id": f"r{i}", "conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": "a"}]}


def test_records_survive_a_reopen_and_ids_stay_unique(tmp_path):
    path = tmp_path / "s.jsonl"
    j = Journal(path)
    for i in range(3):
        j.append(record(i))
    with pytest.raises(ValueError, match="'r1' is already written"):
        j.append(record(1))
    j.close()
    again = Journal(path)
    assert again.ids == {"r0", "r1", "r2"} and not again.torn
    again.append(record(3))
    again.close()
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["r0", "r1", "r2", "r3"]


def test_a_torn_tail_is_cut_off_and_damage_before_it_is_refused(tmp_path):
    path = tmp_path / "s.jsonl"
    whole = "".join(json.dumps(record(i)) + "\n" for i in range(2))
    path.write_text(whole + json.dumps(record(2))[:17])  # killed while writing the third line
    j = Journal(path)
    j.close()
    assert j.torn and j.ids == {"r0", "r1"} and path.read_text() == whole
    for bad, message in (("{broken\n", "line 2 is not a complete JSON record"),
                         ('["a list"]\n', "line 2 is not a LLaVA record with a string id"),
                         (json.dumps(record(0)) + "\n", "line 2: id 'r0' is written twice")):
        path.write_text(json.dumps(record(0)) + "\n" + bad + json.dumps(record(5)) + "\n")
        with pytest.raises(ValueError, match=message):
            Journal(path)
