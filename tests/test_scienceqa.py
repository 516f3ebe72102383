"""Toy ScienceQA: every answer re-derived from the Scene objects by a separate solver, LLaVA's record formats
written out by hand, the official answer extraction, and the metrics on hand-counted predictions."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from minillava.conversation import TEMPLATES as CHAT_TEMPLATES, check_messages
from minillava.data.validate import check_record
from minillava.data.world import COLOURS, SHAPE_PLURALS, SHAPES, make_scenes, symbolic_context
from minillava.evals.scienceqa import FORMATS, TEMPLATES, extract_answer, make_sqa, sqa_metrics, sqa_prompt, to_llava

SCENES = make_scenes("eval", 400, seed=5)
BY_ID = {s.id: s for s in SCENES}
CONTEXTS = {s.id: symbolic_context(s) for s in SCENES}
NAME = f"(?:{'|'.join(COLOURS)}) (?:{'|'.join(SHAPES)})"
PLURAL = "|".join(SHAPE_PLURALS.values())
SIZE_RANK = {"small": 0, "large": 1}


@pytest.fixture(scope="module")
def problems():
    return make_sqa(CONTEXTS, list(CONTEXTS), seed=0, split="test", per_scene=None)


def solve(scene, question: str) -> tuple[str, object]:
    """(category, the right choice) from the Scene's objects (columns, rows, sizes), never from the context text.
    Object answers are names; "shared" answers are sets of two names; counts are ints."""
    objs = list(scene.objects)
    named = {o.name: o for o in objs}
    if m := re.fullmatch(f"Which object would be the (left|right)most if the ({NAME}) were removed\\?", question):
        rest = [o for o in objs if o.name != m[2]]
        return "leftmost_without", (min if m[1] == "left" else max)(rest, key=lambda o: o.column).name
    if m := re.fullmatch(f"Which object is between the ({NAME}) and the ({NAME})\\?", question):
        lo, hi = sorted((named[m[1]].column, named[m[2]].column))
        (mid,) = [o.name for o in objs if lo < o.column < hi]
        return "between", mid
    if m := re.fullmatch("Which object is closest to the (top|bottom)\\?", question):
        best = (min if m[1] == "top" else max)(o.row for o in objs)
        (top,) = [o.name for o in objs if o.row == best]
        return "closest_edge", top
    if m := re.fullmatch(f"Which object is in the same row as the ({NAME})\\?", question):
        (mate,) = [o.name for o in objs if o.row == named[m[1]].row and o.name != m[1]]
        return "same_row", mate
    if m := re.fullmatch(f"Are there more ({PLURAL}) than ({PLURAL})\\?", question):
        count = Counter(SHAPE_PLURALS[o.shape] for o in objs)
        return "more_shapes", "yes" if count[m[1]] > count[m[2]] else "no"
    if m := re.fullmatch(f"How many objects are larger than the ({NAME})\\?", question):
        return "count_larger", sum(SIZE_RANK[o.size] > SIZE_RANK[named[m[1]].size] for o in objs)
    if m := re.fullmatch("Which two objects share a (colour|shape)\\?", question):
        (pair,) = [{a.name, b.name} for i, a in enumerate(objs) for b in objs[i + 1:]
                   if getattr(a, m[1]) == getattr(b, m[1])]
        return f"shared_{m[1]}", pair
    raise AssertionError(f"unknown question {question!r}")


def as_answer(category: str, choice: str):
    if category == "count_larger":
        return int(choice)
    if category.startswith("shared_"):
        return set(choice.split(" and "))
    return choice


def test_every_answer_is_right_and_every_distractor_wrong(problems):
    assert {p["category"] for p in problems} == set(TEMPLATES)
    for p in problems:
        scene = BY_ID[p["image"].removesuffix(".png")]
        category, right = solve(scene, p["question"])
        assert p["category"] == category
        picked = [as_answer(category, c) for c in p["choices"]]
        assert picked[p["answer"]] == right, p
        assert sum(c == right for c in picked) == 1, p


def test_options_are_distinct_and_drawn_from_the_scene(problems):
    for p in problems:
        names = {o.name for o in BY_ID[p["image"].removesuffix(".png")].objects}
        assert 2 <= len(p["choices"]) <= 4 and len(set(p["choices"])) == len(p["choices"])
        assert 0 <= p["answer"] < len(p["choices"])
        if p["category"] in ("leftmost_without", "between", "closest_edge", "same_row"):
            assert set(p["choices"]) <= names
        if p["category"].startswith("shared_"):
            assert all(set(c.split(" and ")) <= names for c in p["choices"])
    # the right letter is not a constant
    assert set(Counter(p["answer"] for p in problems)) == {0, 1, 2, 3}
    assert set(Counter(p["choices"][p["answer"]] for p in problems if p["category"] == "more_shapes")) == {"yes", "no"}


def test_fields_and_texts(problems):
    fields = {"id", "image", "question", "choices", "answer", "hint", "task", "grade", "subject", "topic",
              "category", "skill", "lecture", "solution", "split"}
    for p in problems:
        assert set(p) == fields and p["split"] == "test" and p["id"].startswith(p["image"].removesuffix(".png"))
        for text in (p["lecture"], p["solution"], p["hint"]):
            # would break the formats or the extraction: a second "The answer is", the converter's "Answer: "
            # strip, v0's separator
            assert not re.search("answer is|Answer: |###|BECAUSE|  ", text), text
    assert len({p["id"] for p in problems}) == len(problems)


def test_deterministic_and_one_per_scene(problems):
    ids = list(CONTEXTS)[::-1][:40]
    again = {p["id"]: p for p in make_sqa(CONTEXTS, ids, seed=0, split="test", per_scene=None)}
    assert all(again[p["id"]] == p for p in problems if p["id"] in again)
    one = make_sqa(CONTEXTS, list(CONTEXTS), seed=0, split="train")
    assert len(one) == len(CONTEXTS) and len({p["image"] for p in one}) == len(CONTEXTS)


PROBLEM = {"id": "s-1", "image": "s.png", "question": "Which object is closest to the top?",
           "choices": ["red circle", "blue square", "green triangle"], "answer": 1, "hint": "",
           "lecture": "Rows go from top to bottom.", "solution": "The blue square is in the top row.",
           "category": "closest_edge", "subject": "position"}
HUMAN = ("<image>\nWhich object is closest to the top?\nContext: N/A\n"
         "Options: (A) red circle (B) blue square (C) green triangle")


@pytest.mark.parametrize("fmt, gpt", [
    ("QCM-LEA", "Rows go from top to bottom. The blue square is in the top row. The answer is B."),
    ("QCM-ALE", "The answer is B. BECAUSE: Rows go from top to bottom. The blue square is in the top row."),
    ("QCM-A", "The answer is B."),
    ("QCM-LEPA", "LECTURE: Rows go from top to bottom.\nSOLUTION: The blue square is in the top row.\nANSWER: B."),
])
def test_formats_as_llavas_converter_writes_them(fmt, gpt):
    record = to_llava(PROBLEM, fmt)
    assert record == {"id": "s-1", "image": "s.png",
                      "conversations": [{"from": "human", "value": HUMAN}, {"from": "gpt", "value": gpt}]}
    assert check_record(record) is None


def test_prompt_context_and_empty_reasoning():
    assert sqa_prompt(PROBLEM) == HUMAN.removeprefix("<image>\n")
    assert sqa_prompt({**PROBLEM, "hint": "Look closely."}).split("\n")[1] == "Context: Look closely."
    assert sqa_prompt(PROBLEM, single_pred=True).endswith(
        "\nAnswer with the option's letter from the given choices directly.")
    # create_one_example_chatbot drops a dangling "BECAUSE:" when there is nothing to give as the reason
    bare = {**PROBLEM, "lecture": "", "solution": ""}
    assert to_llava(bare, "QCM-ALE")["conversations"][1]["value"] == "The answer is B."


class SpecialTokens:  # what check_messages asks of a tokenizer
    all_special_tokens = ["<s>", "</s>", "<unk>", "<image>"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_formats_round_trip_through_extract_answer(problems, fmt):
    for p in problems:
        record = to_llava(p, fmt)
        human, gpt = (t["value"] for t in record["conversations"])
        assert human == f"<image>\n{sqa_prompt(p)}"
        check_messages([("human", human), ("gpt", gpt)], CHAT_TEMPLATES["v0"], SpecialTokens())  # no "###"
        assert extract_answer(gpt, len(p["choices"])) == p["answer"]
        assert check_record(record) is None


@pytest.mark.parametrize("text, n, expected", [
    ("B", 3, 1),
    ("C. The blue square", 3, 2),
    ("Because of the rows. The answer is A.", 2, 0),
    ("The answer is A", 2, None),  # the official regex wants a character after the letter
    ("The answer is D.", 3, None),  # not one of the choices
    ("The answer is A. The answer is B.", 2, None),  # two answers: failed
    ("blue square", 3, None),
    ("", 3, None),
    ("SOLUTION: x\nANSWER: C.", 3, 2),  # QCM-LEPA
])
def test_extract_answer_is_the_official_parsing(text, n, expected):
    assert extract_answer(text, n) == expected


def test_metrics_count_failures_as_wrong():
    probs = [{**PROBLEM, "id": str(i)} for i in range(3)] + [{**PROBLEM, "id": "3", "category": "between"}]
    preds = ["The answer is B.", "The answer is A.", "no idea", "B"]  # right, wrong, failed, right
    m = sqa_metrics(probs, preds)
    assert (m["accuracy"], m["n"], m["correct"], m["failed"]) == (0.5, 4, 2, 1)
    assert m["per_category"] == {"between": {"accuracy": 1.0, "n": 1}, "closest_edge": {"accuracy": 1 / 3, "n": 3}}
    assert m["per_subject"] == {"position": {"accuracy": 0.5, "n": 4}}


def test_oracle_beats_a_letter_guesser(problems):
    oracle = sqa_metrics(problems, [to_llava(p, "QCM-LEA")["conversations"][1]["value"] for p in problems])
    always_a = sqa_metrics(problems, ["The answer is A."] * len(problems))
    assert oracle["accuracy"] == 1 and oracle["failed"] == 0 and always_a["accuracy"] < 0.6


def test_bad_input():
    with pytest.raises(ValueError, match="fmt"):
        to_llava(PROBLEM, "QCM-XYZ")
    with pytest.raises(ValueError, match="predictions"):
        sqa_metrics([PROBLEM], [])
    with pytest.raises(ValueError, match="split"):
        make_sqa(CONTEXTS, list(CONTEXTS)[:2], seed=0, split="dev")
    with pytest.raises(ValueError, match="scene_ids"):
        make_sqa(CONTEXTS, ["nope"], seed=0, split="test")
    with pytest.raises(ValueError, match="s-1"):
        to_llava({**PROBLEM, "answer": 3}, "QCM-A")
    with pytest.raises(ValueError, match="n_choices"):
        extract_answer("A", 6)
