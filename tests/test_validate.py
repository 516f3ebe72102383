"""Loading and validating LLaVA JSON through `datasets`: every bad record named, skip mode, round trip."""

from __future__ import annotations

import copy
import json

import pytest
from PIL import Image

from minillava.data.validate import (
    LlavaDataError,
    llava_features,
    load_llava,
    save_llava_json,
    load_llava_json,
    validate_records,
)

# In the original LLaVA-Instruct format: the image before or after the question, ids that look like numbers.
ORIGINAL = [
    {"id": "000000033471", "image": "000000033471.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
        {"from": "gpt", "value": "The bus in the image is white and red."},
        {"from": "human", "value": "What feature can be seen on the back of the bus?"},
        {"from": "gpt", "value": "The back of the bus features an advertisement."}]},
    {"id": "000000052846", "image": "000000052846.png", "conversations": [
        {"from": "human", "value": "Where is the cat positioned in the image?\n<image>"},
        {"from": "gpt", "value": "The cat is positioned on top of the back of the couch."}]},
    {"id": "i6IyJda_0", "model": "", "conversations": [
        {"from": "human", "value": "Write a haiku about rain."},
        {"from": "gpt", "value": "Soft rain on the roof..."}]},
]
ORIGINAL[2]["model"] = "gpt-4"  # mix665k's text-only records carry a "model" field


@pytest.fixture
def folder(tmp_path):
    for rec in ORIGINAL:
        if "image" in rec:
            Image.new("RGB", (8, 8), (200, 30, 30)).save(tmp_path / rec["image"])
    return tmp_path


def write(path, records):
    path.write_text(json.dumps(records, indent=1))
    return path


def test_round_trip_through_the_original_format(folder):
    src = write(folder / "llava_instruct.json", ORIGINAL)
    ds, report = load_llava(src, image_folder=folder)
    assert ds.features == llava_features() and len(ds) == 3 and not report.skipped
    assert ds[0]["id"] == "000000033471" and ds[2]["image"] is None  # a string id stays a string
    out = save_llava_json(ds, folder / "again.json")
    assert json.loads(out.read_text()) == ORIGINAL
    again, _ = load_llava(out, image_folder=folder)
    assert again.to_list() == ds.to_list()


def test_string_ids_stay_strings_when_ids_are_mixed(folder):
    records = [{**copy.deepcopy(ORIGINAL[2]), "id": rid} for rid in ("000000006", 7, "8")]
    ds, _ = load_llava(write(folder / "mixed.json", records))
    assert list(ds["id"]) == ["000000006", "7", "8"]


def test_json_lines_are_read_too(folder):
    src = folder / "records.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in ORIGINAL) + "\n")
    ds, _ = load_llava(src, image_folder=folder)
    assert save_llava_json(ds, folder / "out.json") and json.loads((folder / "out.json").read_text()) == ORIGINAL


def _set(index, value):
    def mutate(records):
        records[1]["conversations"][index]["value"] = value
    return mutate


def _unreadable(records):
    records[1]["image"] = "broken.png"


BAD = {  # the second record made bad in one way; the error names the file and that record
    "missing image": lambda rs: rs[1].update(image="nowhere.png"),
    "unreadable image": _unreadable,
    "roles out of order": lambda rs: rs[1]["conversations"].reverse(),
    "gpt twice": lambda rs: rs[1]["conversations"][0].update({"from": "gpt"}),
    "missing <image>": _set(0, "Where is the cat?"),
    "repeated <image>": _set(0, "<image>\nWhere is the cat?\n<image>"),
    "<image> mid-question": _set(0, "Where is <image> the cat?"),
    "empty turn": _set(1, "   "),
    "only <image>": _set(0, "<image>\n"),
    "unknown field": lambda rs: rs[1].update(caption="x"),
}
MESSAGES = {
    "missing image": "nowhere.png not found", "unreadable image": "broken.png cannot be read",
    "roles out of order": "roles out of order", "gpt twice": "roles out of order",
    "missing <image>": "exactly once, found 0", "repeated <image>": "exactly once, found 2",
    "<image> mid-question": "must start with", "empty turn": "empty", "only <image>": "empty",
    "unknown field": "unknown field",
}


@pytest.mark.parametrize("problem", BAD)
def test_every_bad_record_is_named(folder, problem):
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    records = copy.deepcopy(ORIGINAL)
    BAD[problem](records)
    path = write(folder / "data.json", records)
    with pytest.raises(LlavaDataError, match=r"data\.json: record 1 \(id='000000052846'\) at line \d+: .*"
                       + MESSAGES[problem].replace("<", r"\<")):
        load_llava(path, image_folder=folder)


def test_bad_record_line_is_where_it_starts_in_a_multiline_array(folder):
    """Line numbers are counted on from record to record (not from the top each time); they must stay exact."""
    records = [copy.deepcopy(ORIGINAL[0]) for _ in range(5)]
    for i, r in enumerate(records):
        r["id"] = f"r{i}"
    records[3]["conversations"][0]["from"] = "robot"
    text = json.dumps(records, indent=2)
    line = text[: text.index('"r3"')].count("\n")  # the record's "{" is on the line before its "id"
    path = folder / "multi.json"
    path.write_text(text)
    with pytest.raises(LlavaDataError, match=rf"record 3 \(id='r3'\) at line {line}: "):
        load_llava(path)


def test_malformed_json_names_the_record_and_line(folder):
    text = json.dumps(ORIGINAL, indent=1)
    second = text.index('"000000052846"')
    path = folder / "broken.json"
    path.write_text(text[:second] + "000000052846," + text[second + len('"000000052846",'):])
    line = text[:second].count("\n") + 1
    with pytest.raises(LlavaDataError, match=rf"broken\.json: record 1 \(id=None\) at line {line}: malformed JSON"):
        load_llava(path)
    # skip mode cannot step over it inside an array: the records after it cannot be found
    with pytest.raises(LlavaDataError, match="malformed JSON"):
        load_llava(path, skip_bad=True)
    path.write_text("{not json")
    with pytest.raises(LlavaDataError, match=r"broken\.json: malformed JSON at line 1"):
        load_llava(path)
    path.write_text(json.dumps(ORIGINAL)[:-1] + ", 5 6]")
    with pytest.raises(LlavaDataError, match=r"record 3 \(id=None\) at line 1: record is not an object \(got int\)"):
        load_llava(path)
    with pytest.raises(LlavaDataError, match=r"record 4 \(id=None\) at line 1: malformed JSON.*expected ','"):
        load_llava(path, skip_bad=True)


def test_skip_mode_reports_how_many_and_which(folder, caplog):
    lines = [json.dumps(r) for r in ORIGINAL]
    bad = copy.deepcopy(ORIGINAL[0])
    bad["id"] = "bad-roles"
    bad["conversations"].reverse()
    lines[1:1] = ['{"id": "torn", "conv', json.dumps(bad)]
    path = folder / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LlavaDataError, match=r"data\.jsonl: record 1 \(id=None\) at line 2: malformed JSON"):
        load_llava(path)
    ds, report = load_llava(path, image_folder=folder, skip_bad=True)
    assert list(ds["id"]) == [r["id"] for r in ORIGINAL]
    assert report.n_read == 5 and [(s.index, s.id) for s in report.skipped] == [(1, None), (2, "bad-roles")]
    assert "malformed JSON" in report.skipped[0].reason and "roles out of order" in report.skipped[1].reason
    assert "kept 3 of 5 records, skipped 2" in str(report) and "record 2 (id='bad-roles')" in caplog.text


def test_duplicate_ids_only_when_asked(folder):
    path = write(folder / "dup.json", [ORIGINAL[2], ORIGINAL[2]])
    assert len(validate_records(path)[0]) == 2  # the paper's files reuse an image's id across response types
    with pytest.raises(LlavaDataError, match=r"record 1 \(id='i6IyJda_0'\).*duplicate id"):
        validate_records(path, unique_ids=True)


def test_save_refuses_bad_records(folder):
    bad = copy.deepcopy(ORIGINAL[:1])
    bad[0]["conversations"][0]["value"] = "no image token"
    with pytest.raises(LlavaDataError, match=r"out\.json: record 0 \(id='000000033471'\)"):
        save_llava_json(bad, folder / "out.json")


GOOD = {
    "id": "r1",
    "image": "r1.png",
    "conversations": [
        {"from": "human", "value": "<image>\nWhat is it?"},
        {"from": "gpt", "value": "A circle."},
        {"from": "human", "value": "Colour?"},
        {"from": "gpt", "value": "Red."},
    ],
}


def _drop_image(r):
    del r["image"]


def _set_path(path, value):
    def mutate(r):
        target = r
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


BAD_RECORD = {
    "missing id": lambda r: r.pop("id"),
    "missing conversations": lambda r: r.pop("conversations"),
    "wrong role": _set_path(["conversations", 1, "from"], "human"),
    "starts with gpt": lambda r: r["conversations"].reverse(),
    "odd turns": lambda r: r["conversations"].pop(),
    "empty turn": _set_path(["conversations", 3, "value"], "  "),
    "no image token": _set_path(["conversations", 0, "value"], "What is it?"),
    "image token twice": _set_path(["conversations", 0, "value"], "<image>\nWhat <image> is it?"),
    "image token not first": _set_path(["conversations", 0, "value"], "What is it? <image>"),
    "image token in later turn": _set_path(["conversations", 2, "value"], "<image>\nColour?"),
    "image token without image": _drop_image,
}


def test_load_llava_json_accepts_good_records(tmp_path):
    text_only = copy.deepcopy(GOOD)
    del text_only["image"]
    text_only["id"] = "r2"
    text_only["conversations"][0]["value"] = "red circle: [0.1, 0.1, 0.2, 0.2]\n\nWhat is it?"
    path = tmp_path / "good.json"
    path.write_text(json.dumps([GOOD, text_only]))
    assert len(load_llava_json(path)) == 2


@pytest.mark.parametrize("problem", BAD_RECORD)
def test_load_llava_json_names_the_bad_record(tmp_path, problem):
    bad = copy.deepcopy(GOOD)
    bad["id"] = "bad-7"
    BAD_RECORD[problem](bad)
    path = tmp_path / "data.json"
    path.write_text(json.dumps([GOOD, bad]))
    named = "None" if problem == "missing id" else "'bad-7'"
    with pytest.raises(ValueError, match=rf"data\.json: record 1 \(id={named}\)"):
        load_llava_json(path)


def test_load_llava_json_rejects_non_lists(tmp_path):
    path = tmp_path / "obj.json"
    path.write_text(json.dumps({"id": "x"}))
    with pytest.raises(ValueError, match="obj.json: expected a list"):
        load_llava_json(path)
