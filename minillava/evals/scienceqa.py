"""Toy ScienceQA: multiple-choice questions about toy scenes that take one step of reasoning, in LLaVA's formats.

ScienceQA (Lu et al. 2022) problems hold a question, 2-5 choices, the answer's index, a hint (shown as "Context"),
an image, a lecture (the general rule), a solution (the reasoning for this problem) and labels (task, grade,
subject, topic, category, skill, split). LLaVA fine-tuned on them with the lecture and solution before the answer
("QCM-LEA", reasoning first) or after it ("QCM-ALE", answer first) and answered them in one chat turn.

Here each problem is about one toy scene and needs one step beyond looking an object up (the templates in
``TEMPLATES``: which object would be leftmost if one were removed, which is between two others, closest to the top,
in the same row, are there more circles than squares, how many are larger than X, which two share a colour or a
shape). Answers are computed from ``parse_context`` objects; object options are drawn from the scene, so the text
alone cannot tell them apart.

A problem: {"id": "<scene>-sqa-<category>", "image": "<scene>.png", "question", "choices": [str, ...],
"answer": int, "hint", "task", "grade", "subject", "topic", "category", "skill", "lecture", "solution", "split"}.

Formats and parsing follow LLaVA: ``scripts/convert_sqa_to_llava.py`` (``convert_to_llava``) and
``scripts/convert_sqa_to_llava_base_prompt.py`` (``get_context_text``, ``get_choice_text``,
``create_one_example_chatbot``) for the records, ``llava/eval/eval_science_qa.py`` for the answer extraction.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from minillava.constants import IMAGE_TOKEN
from minillava.data.context import join_words
from minillava.data.pipeline import record_rng
from minillava.data.questions import ContextObject, parse_context
from minillava.data.world import SHAPE_PLURALS, SHAPES

__all__ = ["FORMATS", "OPTIONS", "SPLITS", "TEMPLATES", "extract_answer", "make_sqa", "sqa_metrics", "sqa_prompt",
           "to_llava"]

OPTIONS = ("A", "B", "C", "D", "E")  # eval_science_qa.py's --options default
FORMATS = ("QCM-A", "QCM-LEA", "QCM-ALE", "QCM-LEPA")
SPLITS = ("train", "val", "test", "minival", "minitest")
SINGLE_PRED = "Answer with the option's letter from the given choices directly."  # model_vqa_science.py
MAX_CHOICES = 4


@dataclass(frozen=True)
class Draft:
    """One problem before its choices are shuffled: the right choice first."""

    question: str
    answer: str
    distractors: list[str]
    solution: str
    hint: str = ""


@dataclass(frozen=True)
class Template:
    """A question template; `make` returns None where the scene does not support it (ambiguous or trivial)."""

    category: str
    subject: str
    topic: str
    skill: str
    grade: str
    task: str
    lecture: str
    make: Callable[[list[ContextObject], random.Random], Draft | None]


def _the(objs: Sequence[ContextObject]) -> str:
    return join_words([f"the {o.name}" for o in objs])


def _order(objs: Sequence[ContextObject]) -> str:
    if len(objs) == 1:
        return f"The only object is the {objs[0].name}."
    return f"From left to right, the objects are {_the(objs)}."


def _others(objs, answer, rng: random.Random, k: int = MAX_CHOICES - 1) -> list[str]:
    names = [o.name for o in objs if o.name != answer]
    return rng.sample(names, min(k, len(names)))


def _extreme_without(objs, rng):
    if len(objs) < 2:
        return None
    side = rng.choice(("left", "right"))
    edge = objs[0] if side == "left" else objs[-1]
    # mostly remove the extreme object itself, so the answer is not the extreme object of the whole scene
    removed = edge if rng.random() < 2 / 3 else rng.choice(objs)
    rest = [o for o in objs if o is not removed]
    answer = rest[0] if side == "left" else rest[-1]
    solution = f"{_order(objs)} Without the {removed.name}, the {side}most object is the {answer.name}."
    return Draft(f"Which object would be the {side}most if the {removed.name} were removed?", answer.name,
                 _others(objs, answer.name, rng), solution, f"Imagine that the {removed.name} is taken away.")


def _between(objs, rng):
    spans = [(objs[i], objs[i + 1], objs[i + 2]) for i in range(len(objs) - 2)]  # exactly one object between
    if not spans:
        return None
    a, mid, b = rng.choice(spans)
    if rng.random() < 0.5:
        a, b = b, a
    left, right = sorted((a, b), key=lambda o: o.column)
    solution = (f"{_order(objs)} The {mid.name} is the only object to the right of the {left.name} and to the left "
                f"of the {right.name}.")
    return Draft(f"Which object is between the {a.name} and the {b.name}?", mid.name, _others(objs, mid.name, rng),
                 solution)


def _closest_edge(objs, rng):
    edge = rng.choice(("top", "bottom"))
    pick = min if edge == "top" else max
    best = pick(o.row for o in objs)
    winners = [o for o in objs if o.row == best]
    if len(objs) < 2 or len(winners) > 1:
        return None
    (answer,) = winners
    rows = join_words([f"the {o.name} is in the {o.row_name} row" for o in objs])
    solution = f"{rows[0].upper()}{rows[1:]}. The {answer.name} is the only object in the {answer.row_name} row, " \
               f"the one nearest the {edge}."
    return Draft(f"Which object is closest to the {edge}?", answer.name, _others(objs, answer.name, rng), solution)


def _same_row(objs, rng):
    candidates = [(o, mates[0]) for o in objs
                  if len(mates := [p for p in objs if p is not o and p.row == o.row]) == 1]
    if len(objs) < 3 or not candidates:  # at least two options besides the named object
        return None
    o, mate = rng.choice(candidates)
    solution = f"The {o.name} is in the {o.row_name} row. Of the other objects, only the {mate.name} is in that row."
    others = [p for p in objs if p is not o]
    return Draft(f"Which object is in the same row as the {o.name}?", mate.name, _others(others, mate.name, rng),
                 solution)


def _more_shapes(objs, rng):
    counts = Counter(o.shape for o in objs)
    present = sorted(counts)
    a = rng.choice(present)  # at least one of the two shapes is in the scene
    b = rng.choice([s for s in SHAPES if s != a])
    if rng.random() < 0.5:
        a, b = b, a
    ka, kb = counts[a], counts[b]

    def n(k: int, shape: str) -> str:
        return f"{k} {shape if k == 1 else SHAPE_PLURALS[shape]}"

    verdict = "more than" if ka > kb else "the same as" if ka == kb else "fewer than"
    solution = f"The picture has {n(ka, a)} and {n(kb, b)}. {ka} is {verdict} {kb}."
    return Draft(f"Are there more {SHAPE_PLURALS[a]} than {SHAPE_PLURALS[b]}?", "yes" if ka > kb else "no",
                 ["no" if ka > kb else "yes"], solution)


def _count_larger(objs, rng):
    if len(objs) < 2:
        return None
    o = rng.choice(objs)
    larger = [p for p in objs if o.size == "small" and p.size == "large"]
    if o.size == "large":
        solution = f"The {o.name} is large, and no object is larger than a large one."
    elif not larger:
        solution = f"The {o.name} is small, and so is every other object."
    else:
        verb = "is" if len(larger) == 1 else "are"
        solution = f"The {o.name} is small. {_the(larger)[0].upper()}{_the(larger)[1:]} {verb} large."
    answer = str(len(larger))
    numbers = [str(k) for k in range(len(objs)) if str(k) != answer]  # 0 .. n-1 others besides the named one
    return Draft(f"How many objects are larger than the {o.name}?", answer,
                 rng.sample(numbers, min(MAX_CHOICES - 1, len(numbers))), solution,
                 "Each shape in the picture is either small or large.")


def _shared(attr: str):
    def make(objs, rng):
        counts = Counter(getattr(o, attr) for o in objs)
        pairs = [(a, b) for i, a in enumerate(objs) for b in objs[i + 1:]]
        # exactly one pair shares the attribute, and there are other pairs to choose from
        if len(objs) < 3 or sorted(counts.values())[-2:] != [1, 2]:
            return None
        (value,) = [v for v, k in counts.items() if k == 2]
        (a, b) = [o for o in objs if getattr(o, attr) == value]
        text = lambda p, q: f"{p.name} and {q.name}"  # left to right
        distractors = [text(p, q) for p, q in pairs if (p, q) != (a, b)]
        what = "a colour" if attr == "colour" else "a shape"
        solution = f"The {a.name} and the {b.name} are both {value if attr == 'colour' else SHAPE_PLURALS[value]}; " \
                   f"every other object has {what} of its own."
        return Draft(f"Which two objects share {what}?", text(a, b),
                     rng.sample(distractors, min(MAX_CHOICES - 1, len(distractors))), solution)
    return make


_LR = ("The objects stand in columns from left to right. The leftmost object is the one in the column furthest to "
       "the left, the rightmost the one furthest to the right.")
TEMPLATES: dict[str, Template] = {t.category: t for t in (
    Template("leftmost_without", "position", "left and right", "Find the outermost object after one is removed",
             "grade2", "closed choice",
             _LR + " Taking an object away leaves the others where they are.", _extreme_without),
    Template("between", "position", "left and right", "Find the object between two others", "grade1",
             "closed choice",
             "An object is between two others when it is to the right of one of them and to the left of the other.",
             _between),
    Template("closest_edge", "position", "top and bottom", "Find the highest or lowest object", "grade1",
             "closed choice",
             "The picture has rows from top to bottom. The object closest to the top is in the highest row, the "
             "object closest to the bottom in the lowest row.", _closest_edge),
    Template("same_row", "position", "top and bottom", "Find objects at the same height", "grade1", "closed choice",
             "Two objects are in the same row when they are at the same height in the picture, whatever their "
             "columns.", _same_row),
    Template("more_shapes", "quantity", "counting", "Compare the sizes of two groups", "grade1", "yes or no",
             "To compare two groups, count the objects in each. There are more in the first group only if its "
             "count is greater; equal counts mean neither has more.", _more_shapes),
    Template("count_larger", "quantity", "size", "Count the objects larger than a given one", "grade2",
             "closed choice",
             "Every object is either small or large. A large object is larger than a small one; objects of the "
             "same size are not larger than each other.", _count_larger),
    Template("shared_colour", "attribute", "colour", "Find two objects of the same colour", "grade1",
             "closed choice",
             "Every object has one colour and one shape. Two objects share a colour when they have the same "
             "colour, whatever their shapes.", _shared("colour")),
    Template("shared_shape", "attribute", "shape", "Find two objects of the same shape", "grade1", "closed choice",
             "Every object has one colour and one shape. Two objects share a shape when they have the same shape, "
             "whatever their colours.", _shared("shape")),
)}


def make_sqa(contexts: dict[str, str], scene_ids: Sequence[str], seed: int = 0, split: str = "train",
             per_scene: int | None = 1) -> list[dict]:
    """Toy ScienceQA problems (see the module docstring): for each scene, `per_scene` problems of distinct
    templates among those the scene supports (None: one of each), choices shuffled.

    Deterministic per (seed, scene id); a scene that supports no template gets no problem. Templates are not
    balanced: every scene supports "more_shapes", a one-object scene nothing else (on 300 default scenes with
    per_scene=1: 124 more_shapes, 15-40 of each other template)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if per_scene is not None and per_scene < 1:
        raise ValueError(f"per_scene must be >= 1 or None, got {per_scene}")
    problems = []
    for scene_id in scene_ids:
        if scene_id not in contexts:
            raise ValueError(f"scene_ids: {scene_id!r} has no context")
        objs = parse_context(contexts[scene_id])
        # one rng per template and scene, so a template's problem does not depend on the others
        drafts = {name: d for name, t in TEMPLATES.items()
                  if (d := t.make(objs, record_rng(f"sqa-{name}", seed, scene_id))) is not None}
        rng = record_rng("sqa", seed, scene_id)
        names = list(drafts) if per_scene is None else rng.sample(list(drafts), min(per_scene, len(drafts)))
        for name in names:
            d, t = drafts[name], TEMPLATES[name]
            choices = [d.answer, *d.distractors]
            rng.shuffle(choices)
            problems.append({"id": f"{scene_id}-sqa-{name}", "image": f"{scene_id}.png", "question": d.question,
                             "choices": choices, "answer": choices.index(d.answer), "hint": d.hint, "task": t.task,
                             "grade": t.grade, "subject": t.subject, "topic": t.topic, "category": t.category,
                             "skill": t.skill, "lecture": t.lecture, "solution": d.solution, "split": split})
    return problems


# -- LLaVA's formats -----------------------------------------------------------------------------------------------


def _check_choices(problem: dict) -> list[str]:
    choices = problem.get("choices")
    if not isinstance(choices, list) or not 2 <= len(choices) <= len(OPTIONS):
        raise ValueError(f"problem {problem.get('id')!r}: choices must be a list of 2-{len(OPTIONS)}, got {choices!r}")
    if not isinstance(problem.get("answer"), int) or not 0 <= problem["answer"] < len(choices):
        raise ValueError(f"problem {problem.get('id')!r}: answer must index the choices, got {problem.get('answer')!r}")
    return choices


def sqa_prompt(problem: dict, single_pred: bool = False) -> str:
    """The question as LLaVA's converter writes it, without the image token: "<question>\\nContext: <hint or
    N/A>\\nOptions: (A) ... (B) ...". `single_pred` adds LLaVA-1.5's "Answer with the option's letter ..." line.

    For evaluation, pass it as the item's "question" to ``evaluate.answer_questions`` with ``suffix=""``: that
    puts "<image>\\n" before it, as ``llava/eval/model_vqa_science.py`` does."""
    choices = _check_choices(problem)
    context = problem.get("hint", "").strip() or "N/A"  # get_context_text, with use_caption=False
    options = " ".join(f"({OPTIONS[i]}) {c}" for i, c in enumerate(choices))  # get_choice_text
    text = f"Question: {problem['question']}\nContext: {context}\nOptions: {options}\n"  # "QCM"
    text = text.replace("  ", " ").strip().replace("Question: ", "")  # create_one_example_chatbot, convert_to_llava
    return f"{text}\n{SINGLE_PRED}" if single_pred else text


def _answer_text(problem: dict, fmt: str) -> str:
    letter = OPTIONS[problem["answer"]]
    lecture, solution = problem.get("lecture", ""), problem.get("solution", "")
    if fmt == "QCM-A":
        out = f"Answer: The answer is {letter}."
    elif fmt == "QCM-ALE":
        out = f"Answer: The answer is {letter}. BECAUSE: {lecture} {solution}"
    elif fmt == "QCM-LEA":
        out = f"Answer: {lecture} {solution} The answer is {letter}."
    else:  # QCM-LEPA
        out = f"LECTURE: {lecture}\n" if lecture.strip() else ""
        out += f"SOLUTION: {solution}\n" if solution.strip() else ""
        # Deviation: the official "###\n" line before "ANSWER:" is left out; our v0 template reserves "###" (its
        # separator and stop: check_messages refuses it, and generation would stop before the answer letter).
        out += f"ANSWER: {letter}."
    out = out.replace("  ", " ").strip()
    if out.endswith("BECAUSE:"):
        out = out.replace("BECAUSE:", "").strip()
    return out.replace("Answer: ", "")


def to_llava(problem: dict, fmt: str = "QCM-LEA") -> dict:
    """A LLaVA training record {"id", "image", "conversations": [human, gpt]} in one of FORMATS, as
    ``convert_to_llava`` writes it: QCM-LEA (reasoning first: "<lecture> <solution> The answer is B."), QCM-ALE
    (answer first: "The answer is B. BECAUSE: <lecture> <solution>"), QCM-A ("The answer is B.") or QCM-LEPA
    ("LECTURE: ...\\nSOLUTION: ...\\nANSWER: B.", see the deviation in ``_answer_text``).

    The converter appends "\\n<image>" to the question; LLaVA's training code (``preprocess_multimodal``) moves it to
    the front, and so do we, as every record of this package opens with it."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    human = f"{IMAGE_TOKEN}\n{sqa_prompt(problem)}"
    return {"id": problem["id"], "image": problem["image"],
            "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": _answer_text(problem, fmt)}]}


# -- scoring -------------------------------------------------------------------------------------------------------

_THE_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")  # sic: the unescaped "." wants one more character
_LEPA_ANSWER = re.compile(r"ANSWER: ([A-Z])\.")


def extract_answer(text: str, n_choices: int) -> int | None:
    """The chosen option's index, or None when the answer cannot be read (it then counts as wrong).

    ``llava/eval/eval_science_qa.py``: the whole text is a letter A-E; or it starts with "<letter>. "; or
    "The answer is <letter>." occurs exactly once; and the letter must be one of the first `n_choices`
    (``get_pred_idx``, which returns -1 where the first release drew a random choice). One addition: if none of
    those match, "ANSWER: <letter>." (QCM-LEPA) is read, as the first release's answer prompter rewrote it to
    "The answer is <letter>" (``llava/eval/model_vqa_science.py`` at 8959d5c)."""
    if not 1 <= n_choices <= len(OPTIONS):
        raise ValueError(f"n_choices must be in 1..{len(OPTIONS)}, got {n_choices}")
    if text in OPTIONS:
        letter = text
    elif len(text) >= 3 and text[0] in OPTIONS and text[1:3] == ". ":
        letter = text[0]
    elif len(found := _THE_ANSWER_IS.findall(text)) == 1:
        letter = found[0]
    elif len(found := _LEPA_ANSWER.findall(text)) == 1:
        letter = found[0]
    else:
        return None
    return OPTIONS.index(letter) if letter in OPTIONS[:n_choices] else None


def sqa_metrics(problems: Sequence[dict], predictions: Sequence[str]) -> dict:
    """Accuracy of the model's raw answers, in the problems' order: {"accuracy", "n", "correct", "failed" (answers
    that could not be read; wrong), "per_category": {category: {"accuracy", "n"}}, "per_subject": {...}}."""
    if len(problems) != len(predictions):
        raise ValueError(f"predictions: {len(predictions)} answers for {len(problems)} problems")
    if not problems:
        raise ValueError("problems is empty")
    hits: dict[str, dict[str, list[bool]]] = {"per_category": {}, "per_subject": {}}
    correct = failed = 0
    for i, (problem, text) in enumerate(zip(problems, predictions)):
        if not isinstance(text, str):
            raise ValueError(f"predictions[{i}] must be a string, got {type(text).__name__}")
        choices = _check_choices(problem)
        picked = extract_answer(text, len(choices))
        failed += picked is None
        right = picked == problem["answer"]
        correct += right
        for group, key in (("per_category", "category"), ("per_subject", "subject")):
            hits[group].setdefault(problem.get(key, "?"), []).append(right)
    out: dict = {"accuracy": correct / len(problems), "n": len(problems), "correct": correct, "failed": failed}
    for group, by in hits.items():
        out[group] = {k: {"accuracy": sum(v) / len(v), "n": len(v)} for k, v in sorted(by.items())}
    return out
