import copy
import json
import random
import re

import pytest

import minillava.data.teacher as teacher_module
from minillava.data.generate import IMAGE_TOKEN, ToyDataConfig, generate_toy_data, load_llava_json
from minillava.data.teacher import (
    EVAL_KINDS,
    PHRASINGS,
    SHORT_ANSWER,
    STAGE1_INSTRUCTIONS,
    ContextObject,
    ToyTeacher,
    parse_context,
)
from minillava.data.world import ROWS, WorldConfig, captions, make_scenes, symbolic_context

COLUMN_WORDS = ("left", "centre left", "centre right", "right")


@pytest.fixture(scope="module")
def scenes():
    return make_scenes("eval", 300, seed=1)


def by_name(scene):
    return {o.name: o for o in scene.objects}


# -- parsing ----------------------------------------------------------------


@pytest.mark.parametrize("cfg", [WorldConfig(), WorldConfig(image_size=64, n_columns=3, max_objects=3)])
def test_parse_context_recovers_every_attribute(cfg):
    for scene in make_scenes("train", 300, cfg=cfg):
        parsed = parse_context(symbolic_context(scene, cfg), cfg.n_columns)
        assert parsed == [
            ContextObject(o.name, o.colour, o.shape, o.size, o.column, o.row, o.box) for o in scene.objects
        ]


def test_parse_context_ignores_captions_and_rejects_bad_box_lines():
    text = "A red circle: odd caption, top left.\n\nred circle: [0.000, 0.000, 0.219, 0.219]"
    assert [o.name for o in parse_context(text)] == ["red circle"]
    bad_lines = (
        "red circle: [0.1, 0.2, 0.3]",  # three numbers
        "red circle [0.1, 0.2, 0.3, 0.4]",  # no colon
        "pink circle: [0.1, 0.1, 0.2, 0.2]",  # unknown colour
        "red circle: [0.5, 0.1, 0.2, 0.2]",  # x1 > x2
    )
    for bad in bad_lines:
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            parse_context("Some caption.\n\n" + bad)
    with pytest.raises(ValueError):
        parse_context("Only captions here.")


# -- the teacher sees only text -------------------------------------------------


def test_teacher_never_touches_scenes_or_pixels():
    # The teacher module has no way to build, read or render a scene...
    for name in ("Scene", "SceneObject", "make_scene", "make_scenes", "render", "symbolic_context"):
        assert not hasattr(teacher_module, name)
    # ...and works on hand-written text that no Scene object ever produced.
    context = (
        "Two shapes.\n\n"
        "green square: [0.031, 0.375, 0.250, 0.594]\n"
        "red circle: [0.781, 0.719, 0.938, 0.875]"
    )
    t, rng = ToyTeacher(), random.Random(0)
    facts = {(q.kind, q.answer) for q in t.questions(context, rng)}
    assert {("count", "2"), ("colour", "green"), ("shape", "circle"), ("position", "middle left"),
            ("position", "bottom right"), ("relation", "green square"), ("relation", "red circle")} <= facts
    _, text = t.detail(context, rng)
    assert "large green square" in text and "small red circle" in text


def _pattern(phrasing: str) -> re.Pattern:
    escaped = re.escape(phrasing)
    for slot in ("name", "shape", "colour", "side"):
        escaped = escaped.replace(re.escape("{" + slot + "}"), f"(?P<{slot}>[a-z]+(?: [a-z]+)?)")
    return re.compile(f"^{escaped}$")


PATTERNS = {kind: [_pattern(p) for p in phrasings] for kind, phrasings in PHRASINGS.items()}


def truth(scene, kind: str, question: str) -> str:
    """The right answer, computed from the Scene objects, not from the text."""
    m = next(filter(None, (p.match(question) for p in PATTERNS[kind])), None)
    assert m, f"unknown phrasing for {kind}: {question!r}"
    objs, names = scene.objects, by_name(scene)
    if kind == "count":
        return str(len(objs))
    if kind == "colour":
        (o,) = [o for o in objs if o.shape == m["shape"]]
        return o.colour
    if kind == "shape":
        (o,) = [o for o in objs if o.colour == m["colour"]]
        return o.shape
    if kind == "yesno":
        return "yes" if m["name"] in names else "no"
    if kind == "relation":
        target = names[m["name"]]
        side = [o for o in objs if (o.column < target.column if m["side"] == "left" else o.column > target.column)]
        nearest = min(side, key=lambda o: abs(o.column - target.column))
        return nearest.name
    if kind == "position":
        o = names[m["name"]]
        return f"{ROWS[o.row]} {COLUMN_WORDS[o.column]}"
    raise AssertionError(kind)


def test_short_answers_match_scene_truth(scenes):
    t, rng = ToyTeacher(), random.Random(0)
    seen = set()
    for scene in scenes:
        qs = t.questions(symbolic_context(scene), rng)
        for q in qs:
            seen.add(q.kind)
            assert q.answer == truth(scene, q.kind, q.question), (scene.id, q)
            assert q.answer == q.answer.lower() and not q.answer.endswith(".")
            assert q.answer in q.sentence.lower() and q.sentence.endswith(".")
        yes_no = [q.answer for q in qs if q.kind == "yesno"]
        assert yes_no.count("yes") == yes_no.count("no") == len(scene.objects)
        # Colour questions only for shapes that occur once; shape questions only for unique colours.
        shapes = [o.shape for o in scene.objects]
        asked = {q.question.split()[-1].rstrip("?") for q in qs if q.kind == "colour"}
        assert asked == {s for s in shapes if shapes.count(s) == 1}
    assert seen == set(PHRASINGS)


def test_eval_questions(scenes):
    t, rng = ToyTeacher(), random.Random(0)
    yes = 0
    for scene in scenes:
        qs = t.eval_questions(symbolic_context(scene), rng)
        kinds = [q.kind for q in qs]
        assert kinds == [k for k in EVAL_KINDS if k in kinds] and {"count", "yesno"} <= set(kinds)
        assert ("relation" in kinds) == (len(scene.objects) > 1)
        shapes = [o.shape for o in scene.objects]
        assert ("colour" in kinds) == any(shapes.count(s) == 1 for s in shapes)
        for q in qs:
            assert _pattern(PHRASINGS[q.kind][0]).match(q.question), "eval uses the first phrasing"
            assert q.answer == truth(scene, q.kind, q.question)
        yes += next(q for q in qs if q.kind == "yesno").answer == "yes"
    assert 0.4 < yes / len(scenes) < 0.6


def test_conversation(scenes):
    t, rng = ToyTeacher(), random.Random(0)
    short = 0
    total = 0
    for scene in scenes[:200]:
        turns = t.conversation(symbolic_context(scene), rng)
        assert 3 <= len(turns) <= 6
        questions = [q.removesuffix("\n" + SHORT_ANSWER) for q, _ in turns]
        assert len(set(questions)) == len(questions)
        for (q, a), plain in zip(turns, questions):
            kind = next(k for k, ps in PATTERNS.items() if any(p.match(plain) for p in ps))
            fact = truth(scene, kind, plain)
            total += 1
            if q.endswith("\n" + SHORT_ANSWER):
                short += 1
                assert a == fact
            else:
                assert a.endswith(".") and fact in a.lower()
    assert 0.35 < short / total < 0.65


def test_detail_mentions_every_object_left_to_right(scenes):
    t, rng = ToyTeacher(), random.Random(0)
    for scene in scenes[:200]:
        instruction, text = t.detail(symbolic_context(scene), rng)
        n = len(scene.objects)
        assert text.startswith(f"There {'is' if n == 1 else 'are'} {n} object")
        positions = []
        for o in scene.objects:
            phrase = f"{o.size} {o.name} (?:is )?at the {ROWS[o.row]} {COLUMN_WORDS[o.column]}"
            m = re.search(phrase, text)
            assert m, (text, phrase)
            positions.append(m.start())
        assert positions == sorted(positions)


def test_complex_answers_are_consistent(scenes):
    t, rng = ToyTeacher(), random.Random(0)
    seen = set()
    for scene in scenes:
        objs, names = scene.objects, by_name(scene)
        q, a = t.complex(symbolic_context(scene), rng)
        conclusion = a.rsplit(". ", 1)[-1]
        assert conclusion.startswith("So ") and a.endswith(".")
        if m := re.match(r"If the (\w+ \w+) were removed", q):
            seen.add("removal")
            assert m[1] in names
            left = len(objs) - 1
            assert conclusion == f"So {left} object{'' if left == 1 else 's'} would remain."
        elif m := re.match(r"How many objects are (\w+), and which ones\?", q):
            seen.add("count_size")
            k = sum(o.size == m[1] for o in objs)
            assert (f"So {k} object" in conclusion) if k else ("no object" in conclusion)
        elif q.startswith("Which object is furthest to the right"):
            seen.add("rightmost")
            left, right = objs[0], objs[-1]
            larger = right.size == "large" and left.size == "small"
            not_ = "" if larger else "not "
            assert conclusion == f"So the {right.name} is furthest to the right, and it is {not_}larger than the {left.name}."
        elif q.startswith("Are all the objects the same colour"):
            seen.add("same_colour")
            assert conclusion.startswith("So yes" if len({o.colour for o in objs}) == 1 else "So no")
        elif m := re.match(r"Is the (\w+ \w+) higher than the (\w+ \w+)\?", q):
            seen.add("higher")
            assert conclusion.startswith("So yes" if names[m[1]].row < names[m[2]].row else "So no")
        else:
            raise AssertionError(q)
    assert seen == {"removal", "count_size", "rightmost", "same_colour", "higher"}


def test_caption_pairs(scenes):
    t, rng = ToyTeacher(), random.Random(0)
    assert len(STAGE1_INSTRUCTIONS) == 11
    assert STAGE1_INSTRUCTIONS[0] == "Describe the image concisely."
    assert STAGE1_INSTRUCTIONS[-1] == "Create a compact narrative representing the image presented."
    for scene in scenes[:50]:
        instruction, caption = t.caption(symbolic_context(scene), rng)
        assert instruction in STAGE1_INSTRUCTIONS and caption in captions(scene)


def test_vocabulary_is_small(scenes):
    t, rng = ToyTeacher(), random.Random(0)
    words = set()
    for scene in scenes:
        c = symbolic_context(scene)
        texts = [a for _, a in t.conversation(c, rng)] + list(t.detail(c, rng)) + list(t.complex(c, rng))
        for text in texts + c.split("\n"):
            words |= set(re.findall(r"[a-z]+", text.lower()))
    assert len(words) < 200, sorted(words)


# -- generate.py ------------------------------------------------------------------

TINY = ToyDataConfig(n_train=24, n_eval=10, n_lm=40, seed=5)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return generate_toy_data(tmp_path_factory.mktemp("a"), TINY)


def _all_files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generate_is_deterministic(tiny_data, tmp_path):
    again = generate_toy_data(tmp_path, TINY)
    a, b = _all_files(tiny_data["stage1"].parent), _all_files(again["stage1"].parent)
    assert len(a) == TINY.n_train + TINY.n_eval + 5
    assert a == b


def test_generated_records_are_valid(tiny_data):
    stage1, stage2 = load_llava_json(tiny_data["stage1"]), load_llava_json(tiny_data["stage2"])
    lm = load_llava_json(tiny_data["lm"])
    assert len(stage1) == len(stage2) == TINY.n_train and len(lm) == TINY.n_lm
    for r in stage1 + stage2:
        assert (tiny_data["images"] / r["image"]).is_file()
        assert r["conversations"][0]["value"].startswith(IMAGE_TOKEN + "\n")
    assert all(r["id"] == f"{r['image'][:-4]}-{r['kind']}" for r in stage2)
    assert {r["kind"] for r in stage2} <= {"conv", "detail", "complex"}
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
