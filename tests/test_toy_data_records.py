"""Moved from tests/test_teacher.py: the toy data set's records (toy_data.py), and ``load_llava_json`` (validate.py).

Waiting to be merged by the owners of tests/test_toy_data.py (the first two tests) and tests/test_validate.py
(the ``load_llava_json`` ones); kept apart so that no test is lost meanwhile.
"""

import copy
import json
from pathlib import Path

import pytest

from minillava.constants import IMAGE_TOKEN, SHORT_ANSWER
from minillava.data.questions import EVAL_KINDS
from minillava.data.toy_data import ToyDataConfig, generate_toy_data
from minillava.data.validate import load_llava_json

TINY = ToyDataConfig(n_train=24, n_eval=10, n_lm=40, seed=5, vqa_questions=4)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return generate_toy_data(tmp_path_factory.mktemp("a"), TINY)


def _all_files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generate_is_deterministic(tiny_data, tmp_path):
    again = generate_toy_data(tmp_path, TINY)
    a, b = _all_files(tiny_data["stage1"].parent), _all_files(again["stage1"].parent)
    assert sum(p.parts[0] == "images" for p in a) == TINY.n_train + TINY.n_eval
    # summary.json describes the run (its seconds, its folder), not the data
    assert a.pop(Path("summary.json")) and b.pop(Path("summary.json"))
    assert a == b


def test_generated_records_are_valid(tiny_data):
    stage1, stage2 = load_llava_json(tiny_data["stage1"]), load_llava_json(tiny_data["stage2"])
    lm = load_llava_json(tiny_data["lm"])
    assert len(stage1) == TINY.n_train and len(lm) == TINY.n_lm
    for r in stage1 + stage2:
        assert (tiny_data["images"] / r["image"]).is_file()
        assert r["conversations"][0]["value"].startswith(IMAGE_TOKEN + "\n")
    assert all(r["id"] == f"{r['image'][:-4]}-{r['kind']}" for r in stage2)
    # one instruction record and one short-answer VQA record per train image
    instruct = [r for r in stage2 if r["kind"] != "vqa"]
    vqa = [r for r in stage2 if r["kind"] == "vqa"]
    assert len(instruct) == len(vqa) == TINY.n_train
    assert {r["kind"] for r in instruct} <= {"conv", "detail", "complex"}
    for r in vqa:
        questions = [t["value"] for t in r["conversations"][::2]]
        assert 1 <= len(questions) <= TINY.vqa_questions
        assert all(q.endswith("\n" + SHORT_ANSWER) for q in questions)
    contexts = json.loads(tiny_data["contexts"].read_text())
    assert len(contexts) == TINY.n_train + TINY.n_eval
    for r in lm:
        assert "image" not in r
        context, question = r["conversations"][0]["value"].rsplit("\n\n", 1)
        # the LM reads the captions only (no boxes): the paper's Vicuna never saw the teacher's boxes either
        assert context.strip() and question and IMAGE_TOKEN not in context and "[" not in context
    assert {r["kind"] for r in lm} == {"conv", "detail", "complex", "caption"}
    items = json.loads(tiny_data["eval"].read_text())
    assert {i["kind"] for i in items} <= set(EVAL_KINDS)
    for i in items:
        assert i["id"] == f"{i['image'][:-4]}-{i['kind']}" and (tiny_data["images"] / i["image"]).is_file()


# -- load_llava_json (validate.py) ----------------------------------------------------

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


def _set(path, value):
    def mutate(r):
        target = r
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


BAD = {
    "missing id": lambda r: r.pop("id"),
    "missing conversations": lambda r: r.pop("conversations"),
    "wrong role": _set(["conversations", 1, "from"], "human"),
    "starts with gpt": lambda r: r["conversations"].reverse(),
    "odd turns": lambda r: r["conversations"].pop(),
    "empty turn": _set(["conversations", 3, "value"], "  "),
    "no image token": _set(["conversations", 0, "value"], "What is it?"),
    "image token twice": _set(["conversations", 0, "value"], "<image>\nWhat <image> is it?"),
    "image token not first": _set(["conversations", 0, "value"], "What is it? <image>"),
    "image token in later turn": _set(["conversations", 2, "value"], "<image>\nColour?"),
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


@pytest.mark.parametrize("problem", BAD)
def test_load_llava_json_names_the_bad_record(tmp_path, problem):
    bad = copy.deepcopy(GOOD)
    bad["id"] = "bad-7"
    BAD[problem](bad)
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
