"""Short-answer questions about an image, asked from its symbolic context alone.

The paper asked GPT-4 for conversations about counts, attributes, absolute and relative positions and
comparisons, in varied phrasing. This module holds the questions those conversations (and the held-out
evaluation, and LLaVA-1.5-style VQA records) are made of:
- ``parse_context``: the objects of a symbolic context (see ``world.symbolic_context``), re-derived from its box
  lines; nothing else about the scene is read. It only borrows the world's vocabulary (colour, shape and row
  words), as GPT-4 brought its own;
- the question kinds (``EVAL_KINDS``, ``ATTRIBUTE_KINDS``, ``PLACE_KINDS``) and their few ``PHRASINGS``;
- ``QuestionBuilder``: every question a context supports (``questions``), the evaluation's
  (``eval_questions``) and a VQA record's (``short_answers``), each with its exact short answer and the same
  fact as a full sentence;
- the sentence pieces the teacher's longer answers share with these ("There are 3 objects in the image.").

Column scheme for "Where is ...?" answers (4 columns): left, centre left, centre right, right; an answer is
"<row> <column>", e.g. "upper centre left".
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import zip_longest

from minillava.constants import SHORT_ANSWER, Turns
from minillava.data.context import join_words, parse_box_line
from minillava.data.world import COLOURS, SHAPE_PLURALS, SHAPES, SIZE_THRESHOLD, position_phrase, row_names

__all__ = ["ATTRIBUTE_KINDS", "EVAL_KINDS", "EXISTENCE_KINDS", "PHRASINGS", "PLACE_KINDS", "QUESTION_KINDS", "ContextObject", "Question",
           "QuestionBuilder", "how_many", "objects_phrase", "parse_context", "the_objects", "there_are"]

# The kinds the held-out evaluation asks; their phrasings, answers and share of conversation turns are kept
# as they were when the evaluation was designed (see ``ToyTeacher.conversation``).
EVAL_KINDS = ("count", "colour", "yesno", "relation")
# Conversation groups besides the evaluated kinds: attributes and places (absolute and relative).
ATTRIBUTE_KINDS = ("shape", "size", "count_colour", "count_shape", "larger")
PLACE_KINDS = ("position", "extreme", "row", "side", "above", "higher")
QUESTION_KINDS = EVAL_KINDS + ATTRIBUTE_KINDS + PLACE_KINDS
# One-attribute existence questions ("Is there a triangle?", "Is there a red object?"): not in the default data;
# `ToyDataConfig.vqa_kinds` can add them to the short-answer VQA records (docs/experiments.md, 2026-12-03: they
# are stepping stones to the colour-and-shape yes/no question, which alone sits on a saddle).
EXISTENCE_KINDS = ("has_shape", "has_colour")


def _balance_group(kind: str) -> str:
    """The turn a kind takes in balanced short answers: one for each kind, one for all existence kinds."""
    return "existence" if kind in EXISTENCE_KINDS else kind


EXISTENCE_PHRASINGS = {"has_shape": "Is there a {shape} in the image?",
                       "has_colour": "Is there a {colour} object in the image?"}

# A few phrasings per kind, shared by every generator: a tiny model can learn
# this small set. The first phrasing of each kind is the one used for eval.
PHRASINGS = {
    "count": (
        "How many objects are in the image?",
        "How many shapes are there in the image?",
        "What is the number of objects in the image?",
    ),
    "colour": ("What colour is the {shape}?", "What is the colour of the {shape}?"),
    "yesno": ("Is there a {name} in the image?", "Does the image contain a {name}?"),
    "relation": (
        "What is directly to the {side} of the {name}?",
        "Which object is directly to the {side} of the {name}?",
    ),
    "shape": ("What shape is the {colour} object?", "What is the shape of the {colour} object?"),
    "size": ("What size is the {name}?", "Is the {name} large or small?"),
    "count_colour": ("How many {colour} objects are there?", "How many objects are {colour}?"),
    "count_shape": ("How many {shapes} are there?", "How many {shapes} can you see?"),
    "larger": ("Which is larger, the {name} or the {other}?", "Which object is bigger, the {name} or the {other}?"),
    "position": ("Where is the {name}?", "Where is the {name} in the image?"),
    "extreme": ("Which object is furthest to the {side}?", "What is the {side}most object?"),
    "row": ("What is in the {row} row?", "Which objects are in the {row} row?"),
    "side": ("Is the {name} to the {side} of the {other}?", "Is the {name} on the {side} side of the {other}?"),
    "above": ("Is the {name} above the {other}?", "Is the {name} higher up than the {other}?"),
    "higher": ("Which is higher, the {name} or the {other}?", "Which object is higher up, the {name} or the {other}?"),
}


@dataclass(frozen=True)
class ContextObject:
    name: str
    colour: str
    shape: str
    size: str
    column: int
    row: int  # 0 = top
    row_name: str  # "top", "upper", ...: the world's word for the row
    box: tuple[float, float, float, float]


def parse_context(text: str, n_columns: int = 4, n_rows: int = 4) -> list[ContextObject]:
    """Objects from the box lines of a symbolic context, left to right.

    A box line is any line containing "[" (captions never do); it must read
    exactly like ``red circle: [0.125, 0.300, 0.400, 0.575]``. Grid position
    and size come from the box geometry, never from the captions.
    """
    rows = row_names(n_rows)
    cell = min(1 / n_columns, 1 / n_rows)  # a cell's shorter side, as a fraction of the image
    objects = []
    for line in text.splitlines():
        if "[" not in line:
            continue
        name, (x1, y1, x2, y2) = parse_box_line(line)
        colour, _, shape = name.partition(" ")
        if colour not in COLOURS or shape not in SHAPES:
            raise ValueError(f"unknown colour or shape in box line: {line!r}")
        if x1 == x2 or y1 == y2:
            raise ValueError(f"empty box in line: {line!r}")
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        column = min(math.floor(cx * n_columns), n_columns - 1)
        row = min(math.floor(cy * n_rows), n_rows - 1)
        size = "large" if (x2 - x1) / cell > SIZE_THRESHOLD else "small"
        objects.append(ContextObject(name, colour, shape, size, column, row, rows[row], (x1, y1, x2, y2)))
    if not objects:
        raise ValueError("symbolic context has no box lines")
    names = [o.name for o in objects]
    if len(set(names)) != len(names):
        raise ValueError(f"object names must be distinct, got {names}")
    return sorted(objects, key=lambda o: o.column)


@dataclass(frozen=True)
class Question:
    kind: str
    question: str  # without the SHORT_ANSWER suffix
    answer: str  # the exact short answer: lower case, no final period
    sentence: str = ""  # the same fact as a full sentence, for conversations


# -- sentence pieces, shared with the teacher's descriptions and reasoning -------


def the_objects(objs) -> str:
    """"the red circle and the blue square"."""
    return join_words([f"the {o.name}" for o in objs])


def objects_phrase(n: int) -> str:
    """"1 object" / "3 objects"."""
    return f"{n} object" if n == 1 else f"{n} objects"


def there_are(n: int) -> str:
    """"There is 1 object in the image." / "There are 3 objects in the image."."""
    return f"There {'is' if n == 1 else 'are'} {objects_phrase(n)} in the image."


def how_many(k: int, singular: str, plural: str) -> str:
    """"There are no circles." / "There is 1 circle." / "There are 3 circles."."""
    if k == 0:
        return f"There are no {plural}."
    return f"There is 1 {singular}." if k == 1 else f"There are {k} {plural}."


class QuestionBuilder:
    """The short-answer questions a symbolic context supports, on a grid of ``n_columns`` x ``n_rows`` cells."""

    def __init__(self, n_columns: int = 4, n_rows: int = 4):
        self.n_columns, self.n_rows = n_columns, n_rows

    def parse(self, context: str) -> list[ContextObject]:
        """The context's objects, left to right (``parse_context`` on this grid)."""
        return parse_context(context, self.n_columns, self.n_rows)

    def where(self, o: ContextObject) -> str:
        """An object's place as "<row> <column>", e.g. "upper centre left"."""
        return position_phrase(o.row, o.column, self.n_columns, self.n_rows)

    # -- helpers -------------------------------------------------------------

    @staticmethod
    def _neighbour(objs: list[ContextObject], i: int, side: str) -> ContextObject | None:
        # objs are sorted by column and columns are distinct: the nearest object
        # on a side is simply the next one in the list.
        j = i - 1 if side == "left" else i + 1
        return objs[j] if 0 <= j < len(objs) else None

    def _count(self, objs, phrasing: int) -> Question:
        n = len(objs)
        return Question("count", PHRASINGS["count"][phrasing], str(n), there_are(n))

    def _colour(self, o, phrasing: int) -> Question:
        q = PHRASINGS["colour"][phrasing].format(shape=o.shape)
        return Question("colour", q, o.colour, f"The {o.shape} is {o.colour}.")

    def _shape(self, o, phrasing: int) -> Question:
        q = PHRASINGS["shape"][phrasing].format(colour=o.colour)
        return Question("shape", q, o.shape, f"The {o.colour} object is a {o.shape}.")

    def _yesno(self, name: str, present: bool, phrasing: int) -> Question:
        q = PHRASINGS["yesno"][phrasing].format(name=name)
        if present:
            return Question("yesno", q, "yes", f"Yes, there is a {name} in the image.")
        return Question("yesno", q, "no", f"No, there is no {name} in the image.")

    def _relation(self, o, side: str, other, phrasing: int) -> Question:
        q = PHRASINGS["relation"][phrasing].format(side=side, name=o.name)
        return Question("relation", q, other.name, f"The {other.name} is directly to the {side} of the {o.name}.")

    def _position(self, o, phrasing: int) -> Question:
        q = PHRASINGS["position"][phrasing].format(name=o.name)
        where = self.where(o)
        return Question("position", q, where, f"The {o.name} is at the {where}.")

    @staticmethod
    def _unique(objs, attr: str) -> list[ContextObject]:
        counts = Counter(getattr(o, attr) for o in objs)
        return [o for o in objs if counts[getattr(o, attr)] == 1]

    @staticmethod
    def _absent_names(objs) -> list[str]:
        present = {o.name for o in objs}
        return [f"{c} {s}" for c in COLOURS for s in SHAPES if f"{c} {s}" not in present]

    # -- attribute and place questions (conversation only) --------------------

    @staticmethod
    def _size(o, phrasing: int) -> Question:
        return Question("size", PHRASINGS["size"][phrasing].format(name=o.name), o.size, f"The {o.name} is {o.size}.")

    @staticmethod
    def _count_colour(objs, colour: str, phrasing: int) -> Question:
        k = sum(o.colour == colour for o in objs)
        q = PHRASINGS["count_colour"][phrasing].format(colour=colour)
        return Question("count_colour", q, str(k), how_many(k, f"{colour} object", f"{colour} objects"))

    @staticmethod
    def _count_shape(objs, shape: str, phrasing: int) -> Question:
        k = sum(o.shape == shape for o in objs)
        q = PHRASINGS["count_shape"][phrasing].format(shapes=SHAPE_PLURALS[shape])
        return Question("count_shape", q, str(k), how_many(k, shape, SHAPE_PLURALS[shape]))

    @staticmethod
    def _larger(a, b, phrasing: int) -> Question:  # a and b differ in size
        big, small = (a, b) if a.size == "large" else (b, a)
        q = PHRASINGS["larger"][phrasing].format(name=a.name, other=b.name)
        return Question("larger", q, big.name, f"The {big.name} is larger than the {small.name}.")

    @staticmethod
    def _extreme(objs, side: str, phrasing: int) -> Question:
        o = objs[0] if side == "left" else objs[-1]
        q = PHRASINGS["extreme"][phrasing].format(side=side)
        return Question("extreme", q, o.name, f"The {o.name} is furthest to the {side}.")

    def _row(self, objs, row: int, phrasing: int) -> Question:
        name = row_names(self.n_rows)[row]
        q = PHRASINGS["row"][phrasing].format(row=name)
        inside = [o for o in objs if o.row == row]
        if not inside:
            return Question("row", q, "nothing", f"Nothing is in the {name} row.")
        verb = "is" if len(inside) == 1 else "are"
        sentence = f"{the_objects(inside).capitalize()} {verb} in the {name} row."
        return Question("row", q, join_words([o.name for o in inside]), sentence)

    @staticmethod
    def _side(a, b, side: str, phrasing: int) -> Question:
        q = PHRASINGS["side"][phrasing].format(name=a.name, side=side, other=b.name)
        actual = "left" if a.column < b.column else "right"  # columns are distinct
        if actual == side:
            return Question("side", q, "yes", f"Yes, the {a.name} is to the {side} of the {b.name}.")
        return Question("side", q, "no", f"No, the {a.name} is to the {actual} of the {b.name}.")

    @staticmethod
    def _above(a, b, phrasing: int) -> Question:
        q = PHRASINGS["above"][phrasing].format(name=a.name, other=b.name)
        if a.row < b.row:  # row 0 is the top
            return Question("above", q, "yes", f"Yes, the {a.name} is above the {b.name}.")
        if a.row > b.row:
            return Question("above", q, "no", f"No, the {a.name} is below the {b.name}.")
        return Question("above", q, "no", f"No, the {a.name} and the {b.name} are in the same row.")

    @staticmethod
    def _higher(a, b, phrasing: int) -> Question:  # a and b are in different rows
        top, low = (a, b) if a.row < b.row else (b, a)
        q = PHRASINGS["higher"][phrasing].format(name=a.name, other=b.name)
        return Question("higher", q, top.name, f"The {top.name} is higher than the {low.name}.")

    # -- the question sets ----------------------------------------------------

    def questions(self, context: str, rng: random.Random) -> list[Question]:
        """Every short-answer question the context supports, phrasing picked by rng.

        Yes/no questions are balanced: one "yes" per object and as many "no"
        questions about colour+shape pairs absent from the scene. Pairs of objects
        are asked about in a random order, so "yes" and "no" answers both occur.
        """
        objs = self.parse(context)

        def p(kind: str) -> int:  # a random phrasing index for this kind
            return rng.randrange(len(PHRASINGS[kind]))

        out = [self._count(objs, p("count"))]
        out += [self._colour(o, p("colour")) for o in self._unique(objs, "shape")]
        out += [self._shape(o, p("shape")) for o in self._unique(objs, "colour")]
        out += [self._yesno(o.name, True, p("yesno")) for o in objs]
        out += [self._yesno(name, False, p("yesno")) for name in rng.sample(self._absent_names(objs), len(objs))]
        for i, o in enumerate(objs):
            for side in ("left", "right"):
                other = self._neighbour(objs, i, side)
                if other is not None:
                    out.append(self._relation(o, side, other, p("relation")))
        out += [self._position(o, p("position")) for o in objs]

        out += [self._size(o, p("size")) for o in objs]
        # every colour and shape present, and one absent of each ("How many squares?" -> "0")
        for values, attr, make in ((COLOURS, "colour", self._count_colour), (SHAPES, "shape", self._count_shape)):
            present = sorted({getattr(o, attr) for o in objs})
            absent = [v for v in values if v not in present]
            for v in present + rng.sample(absent, min(1, len(absent))):
                out.append(make(objs, v, p(f"count_{attr}")))
        out += [self._row(objs, row, p("row")) for row in range(self.n_rows)]
        if len(objs) >= 2:
            out += [self._extreme(objs, side, p("extreme")) for side in ("left", "right")]
        for a, b in ((a, b) for i, a in enumerate(objs) for b in objs[i + 1 :]):
            a, b = rng.sample((a, b), 2)  # which one is named first
            if a.size != b.size:
                out.append(self._larger(a, b, p("larger")))
            if a.row != b.row:
                out.append(self._higher(a, b, p("higher")))
            out.append(self._side(a, b, rng.choice(("left", "right")), p("side")))
            out.append(self._above(a, b, p("above")))
        return out

    def eval_questions(self, context: str, rng: random.Random) -> list[Question]:
        """One question per EVAL_KINDS kind (skipping unsupported ones), first phrasing."""
        objs = self.parse(context)
        out = [self._count(objs, 0)]
        if unique := self._unique(objs, "shape"):
            out.append(self._colour(rng.choice(unique), 0))
        if rng.random() < 0.5:
            out.append(self._yesno(rng.choice(objs).name, True, 0))
        else:
            out.append(self._yesno(rng.choice(self._absent_names(objs)), False, 0))
        pairs = [(o, side, other) for i, o in enumerate(objs) for side in ("left", "right")
                 if (other := self._neighbour(objs, i, side)) is not None]
        if pairs:
            out.append(self._relation(*rng.choice(pairs), 0))
        return out

    def existence(self, context: str, rng: random.Random) -> list[Question]:
        """One-attribute existence questions (EXISTENCE_KINDS), balanced: a "yes" for every shape and colour the
        scene has, and as many "no" about absent ones as there are (fewer when few are absent)."""
        objs = self.parse(context)
        out = []
        for kind, attr, values in (("has_shape", "shape", SHAPES), ("has_colour", "colour", COLOURS)):
            present = sorted({getattr(o, attr) for o in objs})
            absent = [v for v in values if v not in present]
            no = rng.sample(absent, min(len(present), len(absent)))
            for v, answer in [(v, "yes") for v in present] + [(v, "no") for v in no]:
                there = f"a {v}" if attr == "shape" else f"a {v} object"
                sentence = f"Yes, there is {there} in the image." if answer == "yes" else \
                    f"No, there is no {there} in the image."
                out.append(Question(kind, EXISTENCE_PHRASINGS[kind].format(**{attr: v}), answer, sentence))
        return out

    def short_answers(self, context: str, rng: random.Random, k: int, kinds: Sequence[str] = EVAL_KINDS,
                      balanced: bool = False) -> Turns:
        """LLaVA-1.5's academic-task VQA data in miniature: up to `k` distinct questions about the image, of the
        kinds a short-answer benchmark asks here (EVAL_KINDS), in random order and phrasing, each with the
        SHORT_ANSWER suffix and the exact short answer.

        LLaVA-1.5 merged all of an image's VQAv2 / GQA questions into one conversation and prompted them with
        this suffix, because the v1 model answered short-answer benchmarks in sentences. Drawn from all candidates
        alike, about half of the questions here are yes/no (one per object and as many about absent ones; VQAv2 has
        38%); `balanced` takes the kinds in turn instead (one of each, then a second of each, ...), so that a kind
        with few candidates per scene (colour: one per shape that occurs once) is not crowded out. The existence
        kinds take one turn between them: they are stepping stones, not what the evaluation asks.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        pool = [q for q in self.questions(context, rng) if q.kind in kinds]
        if set(kinds) & set(EXISTENCE_KINDS):  # drawn only when asked for, so the default records stay the same
            pool += [q for q in self.existence(context, rng) if q.kind in kinds]
        rng.shuffle(pool)
        if balanced:  # round-robin over the kinds, so a kind with many candidates (yes/no) does not crowd out the rest
            groups = list(dict.fromkeys(_balance_group(kind) for kind in kinds))
            by_group = {g: [q for q in pool if _balance_group(q.kind) == g] for g in groups}
            queues = [by_group[g] for g in rng.sample(groups, len(groups)) if by_group[g]]
            pool = [q for rank in zip_longest(*queues) for q in rank if q is not None][:k]
            rng.shuffle(pool)  # the turns of a merged record in random order, not kind by kind
        return [(f"{q.question}\n{SHORT_ANSWER}", q.answer) for q in pool[:k]]
