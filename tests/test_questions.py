"""Questions from a symbolic context: its box lines parsed, and every answer checked against the scene itself."""

import random
import re
from collections import Counter

import pytest
from scene_truth import conveys, pattern, truth

from minillava.constants import SHORT_ANSWER
from minillava.data.questions import (EVAL_KINDS, PHRASINGS, QUESTION_KINDS, ContextObject, QuestionBuilder,
                                      parse_context)
from minillava.data.world import WorldConfig, make_scenes, row_names, symbolic_context


@pytest.fixture(scope="module")
def scenes():
    return make_scenes("eval", 300, seed=1)


# -- parsing ----------------------------------------------------------------


@pytest.mark.parametrize("cfg", [WorldConfig(), WorldConfig(image_size=64, n_columns=3, n_rows=3, max_objects=3)])
def test_parse_context_recovers_every_attribute(cfg):
    rows = row_names(cfg.n_rows)
    for scene in make_scenes("train", 300, cfg=cfg):
        parsed = parse_context(symbolic_context(scene, cfg), cfg.n_columns, cfg.n_rows)
        assert parsed == [ContextObject(o.name, o.colour, o.shape, o.size, o.column, o.row, rows[o.row], o.box)
                          for o in scene.objects]


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


# -- questions, answered from the scene ---------------------------------------


def test_short_answers_match_scene_truth(scenes):
    builder, rng = QuestionBuilder(), random.Random(0)
    seen = set()
    for scene in scenes:
        qs = builder.questions(symbolic_context(scene), rng)
        for q in qs:
            seen.add(q.kind)
            assert (q.kind, q.answer) == truth(scene, q.question), (scene.id, q)
            assert q.answer == q.answer.lower() and not q.answer.endswith(".")
            assert conveys(q.sentence, q.answer) and q.sentence.endswith("."), q
        assert len({q.question for q in qs}) == len(qs), "no question is asked twice"
        yes_no = [q.answer for q in qs if q.kind == "yesno"]
        assert yes_no.count("yes") == yes_no.count("no") == len(scene.objects)
        # Colour questions only for shapes that occur once; shape questions only for unique colours.
        shapes = [o.shape for o in scene.objects]
        asked = {q.question.split()[-1].rstrip("?") for q in qs if q.kind == "colour"}
        assert asked == {s for s in shapes if shapes.count(s) == 1}
    assert seen == set(PHRASINGS) == set(QUESTION_KINDS)
    # pairs are asked about in both orders, so both answers occur for the relative yes/no kinds
    answers = {(q.kind, q.answer) for scene in scenes[:100] for q in builder.questions(symbolic_context(scene), rng)}
    assert {("side", "yes"), ("side", "no"), ("above", "yes"), ("above", "no"), ("row", "nothing")} <= answers


def test_short_answer_vqa_records(scenes):
    """LLaVA-1.5-style VQA turns: distinct evaluated-kind questions with the suffix and the exact answer."""
    builder, rng = QuestionBuilder(), random.Random(0)
    kinds = Counter()
    for scene in scenes[:200]:
        turns = builder.short_answers(symbolic_context(scene), rng, 8)
        questions = [q.removesuffix("\n" + SHORT_ANSWER) for q, _ in turns]
        assert all(q.endswith("\n" + SHORT_ANSWER) for q, _ in turns)
        assert len(set(questions)) == len(questions) and 1 <= len(turns) <= 8
        for plain, (_, answer) in zip(questions, turns):
            kind, fact = truth(scene, plain)
            assert kind in EVAL_KINDS and answer == fact
            kinds[kind, answer if kind == "yesno" else ""] += 1
    yes, no = kinds["yesno", "yes"], kinds["yesno", "no"]
    assert 0.45 < yes / (yes + no) < 0.55, "as many absent objects as present ones are asked about"
    assert 0.4 < (yes + no) / sum(kinds.values()) < 0.6, "about half are yes/no (VQAv2: 38%)"
    assert len(builder.short_answers(symbolic_context(scenes[0]), rng, 1)) == 1
    with pytest.raises(ValueError, match="k must be"):
        builder.short_answers(symbolic_context(scenes[0]), rng, 0)


def test_eval_questions(scenes):
    builder, rng = QuestionBuilder(), random.Random(0)
    yes = 0
    for scene in scenes:
        qs = builder.eval_questions(symbolic_context(scene), rng)
        kinds = [q.kind for q in qs]
        assert kinds == [k for k in EVAL_KINDS if k in kinds] and {"count", "yesno"} <= set(kinds)
        assert ("relation" in kinds) == (len(scene.objects) > 1)
        shapes = [o.shape for o in scene.objects]
        assert ("colour" in kinds) == any(shapes.count(s) == 1 for s in shapes)
        for q in qs:
            assert pattern(PHRASINGS[q.kind][0]).match(q.question), "eval uses the first phrasing"
            assert (q.kind, q.answer) == truth(scene, q.question)
        yes += next(q for q in qs if q.kind == "yesno").answer == "yes"
    assert 0.4 < yes / len(scenes) < 0.6



# -- one-attribute existence questions (opt-in VQA kinds) ----------------------


def test_existence_questions_are_true_to_the_scene_and_balanced(scenes):
    from minillava.data.questions import EXISTENCE_KINDS

    builder = QuestionBuilder()
    for scene in scenes[:100]:
        qs = builder.existence(symbolic_context(scene), random.Random(scene.id))
        shapes, colours = {o.shape for o in scene.objects}, {o.colour for o in scene.objects}
        for q in qs:
            assert q.kind in EXISTENCE_KINDS
            value = re.match(r"Is there an? (\w+)", q.question).group(1)
            present = value in (shapes if q.kind == "has_shape" else colours)
            assert q.answer == ("yes" if present else "no"), (scene.id, q)
        for kind, present, n_values in (("has_shape", shapes, 3), ("has_colour", colours, 4)):
            answers = Counter(q.answer for q in qs if q.kind == kind)
            assert answers["yes"] == len(present)
            assert answers["no"] == min(len(present), n_values - len(present))  # as many as absent values allow


def test_vqa_records_draw_existence_questions_only_when_asked(scenes):
    from minillava.data.questions import EXISTENCE_KINDS
    from minillava.data.toy_data import ToyDataConfig

    builder = QuestionBuilder()
    context = symbolic_context(scenes[0])
    default = builder.short_answers(context, random.Random(0), 50)
    assert not any(q.startswith("Is there a") and " object " in q for q, _ in default)
    both = builder.short_answers(context, random.Random(0), 50, EVAL_KINDS + EXISTENCE_KINDS)
    assert len(both) > len(default)
    with pytest.raises(ValueError, match="vqa_kinds.*'has_size'"):
        ToyDataConfig(vqa_kinds=("count", "has_size"))


def test_balanced_short_answers_take_each_kind_in_turn(scenes):
    """Balanced: no kind gets two more questions than another unless that one ran out of candidates, the two
    existence kinds counting as one; unbalanced, yes/no and existence questions crowd out colour (what
    `ToyDataConfig.vqa_balanced` is for)."""
    from minillava.data.questions import EXISTENCE_KINDS

    builder, kinds = QuestionBuilder(), EVAL_KINDS + EXISTENCE_KINDS
    totals = {False: Counter(), True: Counter()}
    for i, scene in enumerate(scenes[:200]):
        context = symbolic_context(scene)
        rng = random.Random(i)  # the pool short_answers draws from, rebuilt with the same random state
        pool = builder.questions(context, rng) + builder.existence(context, rng)
        group = {k: "existence" if k in EXISTENCE_KINDS else k for k in kinds}
        kind_of = {f"{q.question}\n{SHORT_ANSWER}": group[q.kind] for q in pool if q.kind in kinds}
        available = Counter(kind_of.values())
        for balanced in (False, True):
            turns = builder.short_answers(context, random.Random(i), 8, kinds, balanced)
            assert len(turns) == len({q for q, _ in turns}) == min(8, sum(available.values()))
            chosen = Counter(kind_of[q] for q, _ in turns)
            totals[balanced].update(chosen)
            if balanced:
                for a in available:
                    for b in available:
                        assert chosen[a] >= chosen[b] - 1 or chosen[a] == available[a], (i, chosen, available)
    share = {b: {k: totals[b][k] / sum(totals[b].values()) for k in ("colour", "existence")} for b in totals}
    assert share[True]["colour"] > 1.3 * share[False]["colour"]
    assert share[True]["existence"] < 0.85 * share[False]["existence"]
