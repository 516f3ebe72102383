"""The LLaVA-Bench judges: the rule judge against the scene's truth, the paper's GPT-4 judge against a stub server."""

from __future__ import annotations

import random
import re
import statistics

import pytest
from chat_stub import ChatStub, reply

from minillava.data.context import format_context
from minillava.data.questions import QuestionBuilder, parse_context, there_are
from minillava.data.world import COLOURS, SHAPES, make_scenes, symbolic_context
from minillava.evals.judges import SYSTEM, ChatJudge, Review, RuleJudge, judge_content, parse_score
from minillava.evals.llava_bench import judge_bench, make_bench

# red circle: large, top left; blue square: small, lower centre left; green triangle: large, upper centre right
CONTEXT = format_context(["Three shapes on a plain background."], [
    ("red circle", (0.0, 0.0, 0.219, 0.219)),
    ("blue square", (0.281, 0.531, 0.438, 0.688)),
    ("green triangle", (0.531, 0.281, 0.75, 0.5)),
])
DETAIL = ("There are 3 objects in the image. From left to right, there is a large red circle at the top left, a small "
          "blue square at the lower centre left and a large green triangle at the upper centre right.")


@pytest.fixture(scope="module")
def judge() -> RuleJudge:
    return RuleJudge()


@pytest.fixture(scope="module")
def items() -> list[dict]:
    scenes = make_scenes("eval", 100, seed=0)
    return make_bench({s.id: symbolic_context(s) for s in scenes}, [s.id for s in scenes], seed=0)


def score(judge: RuleJudge, question: str, answer: str, kind: str = "conv", context: str = CONTEXT) -> float:
    return judge.review(question, context, answer, answer, kind).score_1


def test_the_fixed_scene_reads_as_intended():
    objs = {o.name: (o.size, QuestionBuilder().where(o)) for o in parse_context(CONTEXT)}
    assert objs == {"red circle": ("large", "top left"), "blue square": ("small", "lower centre left"),
                    "green triangle": ("large", "upper centre right")}


@pytest.mark.parametrize("question, answer, expected", [
    ("What colour is the square?", "The square is blue.", 10),
    ("What colour is the square?", "Blue.", 10),
    ("What colour is the square?", "The square is red.", 1),  # wrong colour
    ("What colour is the square?", "", 1),
    ("What colour is the square?", "I like turtles.", 1),  # irrelevant
    ("How many objects are in the image?", "There are three objects in the image.", 10),
    ("How many objects are in the image?", "3", 10),
    ("How many objects are in the image?", "There are 4 objects in the image.", 1),  # wrong count
    ("How many triangles are there?", "There is 1 triangle.", 10),
    ("How many circles can you see?", "There are no circles.", 1),
    ("Is there a yellow circle in the image?", "No.", 10),
    ("Is there a yellow circle in the image?", "No, there is no yellow circle in the image.", 10),
    ("Is there a yellow circle in the image?", "Yes, there is a yellow circle in the image.", 1),  # hallucination
    ("Where is the blue square?", "It is at the lower centre left.", 10),
    ("Where is the blue square?", "Lower centre left.", 10),
    ("Where is the blue square?", "The blue square is at the top left.", 1),  # wrong position
    ("What is directly to the left of the green triangle?",
     "The blue square is directly to the left of the green triangle.", 10),
    ("What is directly to the left of the green triangle?",
     "The red circle is directly to the left of the green triangle.", 1),  # wrong relation
    ("Is the red circle above the blue square?", "Yes, the red circle is above the blue square.", 10),
    ("Is the red circle above the blue square?", "No, the red circle is below the blue square.", 1),
    ("Which object is furthest to the right?", "The green triangle is furthest to the right.", 10),
    ("What is in the upper row?", "The green triangle is in the upper row.", 10),
    ("What is in the upper row?", "Nothing is in the upper row.", 1),
])
def test_rule_judge_on_conversation_answers(judge, question, answer, expected):
    assert score(judge, question, answer) == expected


def test_rule_judge_on_a_description(judge):
    question = "Describe the image in detail."
    perfect = score(judge, question, DETAIL, "detail")
    partial = score(judge, question, "There are 3 objects in the image. A large red circle is at the top left.",
                    "detail")
    hallucinating = score(judge, question, DETAIL + " There is also a yellow square at the bottom right.", "detail")
    wrong_count = score(judge, question, DETAIL.replace("There are 3", "There are 4"), "detail")
    wrong_place = score(judge, question, DETAIL.replace("at the top left", "at the bottom left"), "detail")
    assert perfect == 10 and score(judge, question, "", "detail") == 1
    assert 1 < partial < 6  # the count and one object of three: 4 of 10 facts
    assert hallucinating <= 8.5 and wrong_count <= 9.5 and wrong_place <= 9
    assert 1 < hallucinating and 1 < wrong_count and 1 < wrong_place


def test_rule_judge_on_complex_reasoning(judge):
    question = "How many objects are between the red circle and the green triangle?"
    good = ("From left to right, the objects are the red circle, the blue square and the green triangle. The blue "
            "square lies between the red circle and the green triangle. So 1 object is between them.")
    assert score(judge, question, good, "complex") == 10
    assert score(judge, question, "1", "complex") == 10
    assert score(judge, question, "Nothing lies between the red circle and the green triangle. So no object is "
                                  "between them.", "complex") == 1
    wrong_step = good.replace("the red circle, the blue square", "the blue square, the red circle")  # order wrong
    assert 1 < score(judge, question, wrong_step, "complex") < 10


def test_the_review_explains_and_orders_the_answers(judge):
    r = judge.review("Is there a yellow circle in the image?", CONTEXT, "No.", "Yes, there is a yellow circle.", "conv")
    assert (r.score_1, r.score_2) == (10, 1) and not r.failed
    assert r.explanation.startswith("Assistant 1:") and "yellow circle" in r.explanation.splitlines()[1]
    with pytest.raises(ValueError, match="'bogus'"):
        judge.review("How many objects are in the image?", CONTEXT, "3", "3", "bogus")


def test_every_toy_question_has_the_exact_answer(judge):
    """Each question QuestionBuilder makes, in every phrasing the rng picks: its sentence and its short answer
    score 10, and another short answer scores 1."""
    builder = QuestionBuilder()
    for scene in make_scenes("eval", 40, seed=3):
        context = symbolic_context(scene)
        for q in builder.questions(context, random.Random(scene.seed)):
            wrong = {"yes": "no", "no": "yes"}.get(q.answer, "7")
            r = judge.review(q.question, context, q.sentence, q.answer, "conv")
            assert (r.score_1, r.score_2) == (10, 10), (q, r)
            assert judge.review(q.question, context, wrong, "", "conv").score_1 == 1, q


def _absent(context: str) -> str:
    names = {o.name for o in parse_context(context)}
    return next(f"{c} {s}" for c in COLOURS for s in SHAPES if f"{c} {s}" not in names)


def test_references_score_10_and_worse_answers_lower_on_generated_items(judge, items):
    """The teacher's reference gets 10 on 300 generated items; an empty answer 1; one that adds an object that is
    not there, or names an absent object instead of a present one, or gets a number wrong, clearly less."""
    by = {k: [] for k in ("hallucinated", "swapped", "partial")}
    by["wrong_number"] = {"conv": [], "detail": []}
    for it in items:
        q, c, ref, kind = it["question"], it["context"], it["reference"], it["kind"]
        assert score(judge, q, ref, kind, c) == 10, it
        assert score(judge, q, "", kind, c) == 1
        absent, present = _absent(c), parse_context(c)[0].name
        by["hallucinated"].append(score(judge, q, f"{ref} There is also a {absent}.", kind, c))
        if present in ref:
            by["swapped"].append(score(judge, q, ref.replace(present, absent), kind, c))
        if kind in ("conv", "detail") and re.search(r"\d", ref):
            by["wrong_number"][kind].append(score(judge, q, re.sub(r"\d", lambda m: str(int(m[0]) + 1), ref, count=1),
                                            kind, c))
        objs = parse_context(c)
        if kind == "detail" and len(objs) >= 2:  # the count and the first object only
            o = objs[0]
            partial = f"{there_are(len(objs))} A {o.size} {o.name} is at the {QuestionBuilder().where(o)}."
            by["partial"].append(score(judge, q, partial, kind, c))
    assert max(by["hallucinated"]) <= 8.6 and statistics.mean(by["hallucinated"]) < 7
    assert max(by["swapped"]) < 10 and statistics.mean(by["swapped"]) < 7
    assert max(by["wrong_number"]["conv"]) == 1  # the number was the answer
    assert max(by["wrong_number"]["detail"]) < 9 and statistics.mean(by["wrong_number"]["detail"]) < 8
    assert 1 < min(by["partial"]) and max(by["partial"]) < 7  # partly right: in between


# -- the paper's judge -------------------------------------------------------------------------------------------------

# haotian-liu/LLaVA llava/eval/table/rule.json, "llava_bench_conv" / "_detail" / "_complex" (all the same), verbatim
RULE = ("We would like to request your feedback on the performance of two AI assistants in response to the user "
        "question displayed above. The user asks the question on observing an image. For your reference, the visual "
        "content in the image is represented with a few sentences describing the image. \nPlease rate the "
        "helpfulness, relevance, accuracy, level of details of their responses. Each assistant receives an overall "
        "score on a scale of 1 to 10, where a higher score indicates better overall performance.\nPlease first "
        "output a single line containing only two values indicating the scores for Assistant 1 and 2, "
        "respectively. The two scores are separated by a space.\nIn the subsequent line, please provide a "
        "comprehensive explanation of your evaluation, avoiding any potential bias and ensuring that the order in "
        "which the responses were presented does not affect your judgment.")


@pytest.mark.parametrize("text, expected", [
    ("8 6\nAssistant 1 is exact.", [8.0, 6.0]),
    ("8,6", [8.0, 6.0]),
    ("7.5 3", [7.5, 3.0]),
    ("8, 6\n...", [-1, -1]),  # the official split on single spaces: three fields
    ("Scores: 8 6", [-1, -1]),
    ("eight six", [-1, -1]),
    ("", [-1, -1]),
])
def test_parse_score_is_the_official_one(text, expected):
    assert parse_score(text) == expected


def test_chat_judge_sends_the_papers_prompt_and_reads_the_scores():
    question, answer_1, answer_2 = "What colour is the square?", "The square is blue.", "It is red."
    with ChatStub(lambda body, n: reply("8 6\nAssistant 2 got the colour wrong.")) as stub:
        judge = ChatJudge(stub.base_url, "gpt-4-0314", api_key_env=None, timeout=10)
        r = judge.review(question, CONTEXT, answer_1, answer_2, "conv")
    assert r == Review(8.0, 6.0, "8 6\nAssistant 2 got the colour wrong.") and judge.failed == 0
    body = stub.requests[0]["body"]
    assert stub.requests[0]["path"] == "/v1/chat/completions"
    assert body["model"] == "gpt-4-0314" and body["temperature"] == 0.2 and body["max_tokens"] == 1024
    expected = (f"[Context]\n{CONTEXT}\n\n[Question]\n{question}\n\n"
                f"[Assistant 1]\n{answer_1}\n\n[End of Assistant 1]\n\n"
                f"[Assistant 2]\n{answer_2}\n\n[End of Assistant 2]\n\n"
                f"[System]\n{RULE}\n\n")
    assert body["messages"] == [
        {"role": "system", "content": "You are a helpful and precise assistant for checking the quality of the answer."},
        {"role": "user", "content": expected}]
    assert SYSTEM == body["messages"][0]["content"]
    for kind in ("detail", "complex"):
        assert judge_content(CONTEXT, question, answer_1, answer_2, kind) == expected
    with pytest.raises(ValueError, match="'bogus'"):
        judge_content(CONTEXT, question, answer_1, answer_2, "bogus")


def test_an_unreadable_review_scores_minus_one_and_is_counted():
    items = [{"id": f"s-{k}-0", "image": "s.png", "kind": k, "question": "How many objects are in the image?",
              "reference": "There are 3 objects in the image.", "context": CONTEXT} for k in ("conv", "detail")]
    replies = ["9 4\nfine", "Assistant 1 is better than Assistant 2."]
    with ChatStub(lambda body, n: reply(replies[n])) as stub:
        judge = ChatJudge(stub.base_url, "judge", api_key_env=None, timeout=10)
        result = judge_bench(items, ["Three.", "Four."], judge)
    assert judge.failed == 1
    assert [(r["reference_score"], r["model_score"]) for r in result["reviews"]] == [(9.0, 4.0), (-1.0, -1.0)]
    assert result["reviews"][1]["explanation"] == replies[1]
    assert result["relative"]["detail"]["failed"] == 1 and result["relative"]["overall"]["failed"] == 1
    assert result["relative"]["overall"]["n"] == 2  # counted, not dropped: (9 - 1) / 2 and (4 - 1) / 2
    assert result["relative"]["overall"]["reference"] == 4.0 and result["relative"]["overall"]["model"] == 1.5
