"""A rule-based stand-in for the paper's text-only GPT-4 teacher.

LLaVA never showed GPT-4 an image: it gave it captions and bounding boxes as
text and asked for conversations, detailed descriptions and complex reasoning.
``ToyTeacher`` does the same. Every method takes the symbolic context *string*
(see ``world.symbolic_context``) and nothing else about the scene; all facts
are re-derived from the box lines by ``parse_context``. It only borrows the
world's vocabulary (colour, shape and row words), as GPT-4 brought its own.

What the paper asked of GPT-4, and where it is here:
- conversations about counts, attributes, absolute and relative positions and
  comparisons, in varied phrasing: ``questions`` and ``conversation``;
- detailed descriptions that cover every object: ``detail``;
- complex reasoning with a chain of steps and a conclusion: ``complex``.

Column scheme for "Where is ...?" answers (4 columns): left, centre left,
centre right, right; an answer is "<row> <column>", e.g. "upper centre left".
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from minillava.data.context import caption_lines, parse_box_line
from minillava.data.world import (COLOURS, NUMBER_WORDS, SHAPE_PLURALS, SHAPES, SIZE_THRESHOLD, position_phrase,
                                  row_names)

__all__ = ["ContextObject", "Question", "Teacher", "ToyTeacher", "caption_lines", "caption_pair", "parse_context"]

Turns = list[tuple[str, str]]  # (question, answer) pairs; the first question gets the image token later

STAGE2_KINDS = ("conv", "detail", "complex")  # the paper's three response types

SHORT_ANSWER = "Answer with a single word or phrase."

STAGE1_INSTRUCTIONS = (
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Offer a succinct explanation of the picture presented.",
    "Summarize the visual content of the image.",
    "Give a short and clear explanation of the subsequent image.",
    "Share a concise interpretation of the image provided.",
    "Present a compact description of the photo's key features.",
    "Relay a brief, clear account of the picture shown.",
    "Render a clear and concise summary of the photo.",
    "Write a terse but informative summary of the picture.",
    "Create a compact narrative representing the image presented.",
)

DETAIL_INSTRUCTIONS = (
    "Describe the image in detail.",
    "What do you see in this image? Describe it thoroughly.",
    "Give a detailed description of the image.",
)

# The kinds the held-out evaluation asks; their phrasings, answers and share of conversation turns are kept
# as they were when the evaluation was designed (see ``conversation``).
EVAL_KINDS = ("count", "colour", "yesno", "relation")
# Conversation groups besides the evaluated kinds: attributes and places (absolute and relative).
ATTRIBUTE_KINDS = ("shape", "size", "count_colour", "count_shape", "larger")
PLACE_KINDS = ("position", "extreme", "row", "side", "above", "higher")
QUESTION_KINDS = EVAL_KINDS + ATTRIBUTE_KINDS + PLACE_KINDS

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


class Teacher(Protocol):
    """Every teacher: a symbolic context (text) in, (question, answer) turns out; it never sees pixels.

    ``kind`` is one of STAGE2_KINDS; "detail" and "complex" return one turn, "conv" several.
    """

    def respond(self, kind: str, context: str, rng: random.Random) -> Turns: ...


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


def caption_pair(context: str, rng: random.Random) -> tuple[str, str]:
    """Stage-1 pair: one of the paper's 11 brief-description instructions and one of the image's captions."""
    return rng.choice(STAGE1_INSTRUCTIONS), rng.choice(caption_lines(context))


@dataclass(frozen=True)
class Question:
    kind: str
    question: str  # without the SHORT_ANSWER suffix
    answer: str  # the exact short answer: lower case, no final period
    sentence: str = ""  # the same fact as a full sentence, for conversations


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _the(objs) -> str:
    """"the red circle and the blue square"."""
    return _join([f"the {o.name}" for o in objs])


def _objects_phrase(n: int) -> str:
    return f"{n} object" if n == 1 else f"{n} objects"


def _there_are(n: int) -> str:
    return f"There {'is' if n == 1 else 'are'} {_objects_phrase(n)} in the image."


def _how_many(k: int, singular: str, plural: str) -> str:
    """"There are no circles." / "There is 1 circle." / "There are 3 circles."."""
    if k == 0:
        return f"There are no {plural}."
    return f"There is 1 {singular}." if k == 1 else f"There are {k} {plural}."


def _group(kind: str) -> str:
    """The conversation group of a question kind: an evaluated kind is its own group."""
    if kind in ATTRIBUTE_KINDS:
        return "attribute"
    if kind in PLACE_KINDS:
        return "place"
    return kind


class ToyTeacher:
    """Writes instruction data from a symbolic context, like text-only GPT-4 did."""

    def __init__(self, n_columns: int = 4, n_rows: int = 4):
        self.n_columns, self.n_rows = n_columns, n_rows

    def respond(self, kind: str, context: str, rng: random.Random) -> Turns:
        """The ``Teacher`` interface: one record's turns of the given kind."""
        if kind == "conv":
            return self.conversation(context, rng)
        if kind == "detail":
            return [self.detail(context, rng)]
        if kind == "complex":
            return [self.complex(context, rng)]
        raise ValueError(f"unknown response kind {kind!r}; expected one of {STAGE2_KINDS}")

    # -- helpers -------------------------------------------------------------

    def _parse(self, context: str) -> list[ContextObject]:
        return parse_context(context, self.n_columns, self.n_rows)

    def _where(self, o: ContextObject) -> str:
        return position_phrase(o.row, o.column, self.n_columns, self.n_rows)

    @staticmethod
    def _neighbour(objs: list[ContextObject], i: int, side: str) -> ContextObject | None:
        # objs are sorted by column and columns are distinct: the nearest object
        # on a side is simply the next one in the list.
        j = i - 1 if side == "left" else i + 1
        return objs[j] if 0 <= j < len(objs) else None

    def _count(self, objs, phrasing: int) -> Question:
        n = len(objs)
        return Question("count", PHRASINGS["count"][phrasing], str(n), _there_are(n))

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
        where = self._where(o)
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
        return Question("count_colour", q, str(k), _how_many(k, f"{colour} object", f"{colour} objects"))

    @staticmethod
    def _count_shape(objs, shape: str, phrasing: int) -> Question:
        k = sum(o.shape == shape for o in objs)
        q = PHRASINGS["count_shape"][phrasing].format(shapes=SHAPE_PLURALS[shape])
        return Question("count_shape", q, str(k), _how_many(k, shape, SHAPE_PLURALS[shape]))

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
        sentence = f"{_the(inside).capitalize()} {verb} in the {name} row."
        return Question("row", q, _join([o.name for o in inside]), sentence)

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

    # -- short questions -----------------------------------------------------

    def questions(self, context: str, rng: random.Random) -> list[Question]:
        """Every short-answer question the context supports, phrasing picked by rng.

        Yes/no questions are balanced: one "yes" per object and as many "no"
        questions about colour+shape pairs absent from the scene. Pairs of objects
        are asked about in a random order, so "yes" and "no" answers both occur.
        """
        objs = self._parse(context)

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
        objs = self._parse(context)
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

    def short_answers(self, context: str, rng: random.Random, k: int) -> Turns:
        """LLaVA-1.5's academic-task VQA data in miniature: up to `k` distinct questions about the image, of the
        kinds a short-answer benchmark asks here (EVAL_KINDS), in random order and phrasing, each with the
        SHORT_ANSWER suffix and the exact short answer.

        LLaVA-1.5 merged all of an image's VQAv2 / GQA questions into one conversation and prompted them with
        this suffix, because the v1 model answered short-answer benchmarks in sentences. About half of the
        questions here are yes/no (one per object and as many about absent ones; VQAv2 has 38%).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        pool = [q for q in self.questions(context, rng) if q.kind in EVAL_KINDS]
        rng.shuffle(pool)
        return [(f"{q.question}\n{SHORT_ANSWER}", q.answer) for q in pool[:k]]

    # -- the paper's three response types, plus stage-1 captions -------------

    def conversation(self, context: str, rng: random.Random) -> Turns:
        """3-6 turns about the image: first one question of each group (in random order), then more distinct ones.

        Groups: each evaluated kind (count, colour, yes/no, relation), "attribute" (shape, size, counts by
        colour or shape, size comparisons) and "place" (absolute position, furthest left or right, rows, left
        of / above, which is higher). The attribute and place groups are cut to the sizes the shape and
        position groups had before they grew (one per object of a unique colour, one per object), so the
        evaluated kinds keep their share of the turns.

        Like LLaVA-1.5, a turn either asks for a short answer (with the SHORT_ANSWER suffix) or gets a
        full-sentence answer.
        """
        pool = self.questions(context, rng)
        by_group: dict[str, list[Question]] = {}
        for q in pool:
            by_group.setdefault(_group(q.kind), []).append(q)
        sizes = {"attribute": sum(q.kind == "shape" for q in pool), "place": sum(q.kind == "position" for q in pool)}
        for group, size in sizes.items():
            if kept := rng.sample(by_group.pop(group, []), size):
                by_group[group] = kept
        pool = [q for qs in by_group.values() for q in qs]
        n_turns = rng.randint(3, 6)
        groups = sorted(by_group)
        rng.shuffle(groups)
        chosen = [rng.choice(by_group[group]) for group in groups][:n_turns]
        rest = [q for q in pool if q not in chosen]
        chosen += rng.sample(rest, min(len(rest), n_turns - len(chosen)))
        turns = []
        for q in chosen:
            if rng.random() < 0.5:
                turns.append((f"{q.question}\n{SHORT_ANSWER}", q.answer))
            else:
                turns.append((q.question, q.sentence))
        return turns

    def detail(self, context: str, rng: random.Random) -> tuple[str, str]:
        """A detailed description: the count, every object left to right, then how they group and stack."""
        objs = self._parse(context)
        where = [self._where(o) for o in objs]
        if len(objs) == 1:
            return rng.choice(DETAIL_INSTRUCTIONS), \
                f"There is 1 object in the image: a {objs[0].size} {objs[0].name} at the {where[0]}."
        style = rng.randrange(3)  # one listing sentence, one sentence per object, or a walk from left to right
        if style == 0:
            parts = [f"a {o.size} {o.name} at the {w}" for o, w in zip(objs, where)]
            text = f"{_there_are(len(objs))} From left to right, there is {_join(parts)}."
        elif style == 1:
            parts = [f"A {o.size} {o.name} is at the {w}." for o, w in zip(objs, where)]
            text = f"{_there_are(len(objs))} From left to right: " + " ".join(parts)
        else:
            parts = [f"On the far left, a {objs[0].size} {objs[0].name} is at the {where[0]}."]
            parts += [f"Next to the right, a {o.size} {o.name} is at the {w}." for o, w in zip(objs[1:], where[1:])]
            text = f"{_there_are(len(objs))} " + " ".join(parts)
        extras = [self._colour_summary(objs), self._height_summary(objs)]
        return rng.choice(DETAIL_INSTRUCTIONS), " ".join([text] + [e for e in extras if e])

    @staticmethod
    def _colour_summary(objs) -> str:
        repeated = [(c, k) for c, k in sorted(Counter(o.colour for o in objs).items()) if k > 1]
        if not repeated:
            return "Every object has a different colour."
        if repeated[0][1] == len(objs):
            return f"All of them are {repeated[0][0]}."
        return " ".join(f"{NUMBER_WORDS[k].capitalize()} of the objects are {c}." for c, k in repeated)

    @staticmethod
    def _height_summary(objs) -> str:
        top = min(o.row for o in objs)
        highest = [o for o in objs if o.row == top]
        if len(highest) == len(objs):
            return f"They are all in the {highest[0].row_name} row."
        if len(highest) == 1:
            return f"The {highest[0].name} is the highest object."
        return f"{_the(highest).capitalize()} are the highest, side by side in the {highest[0].row_name} row."

    def complex(self, context: str, rng: random.Random) -> tuple[str, str]:
        """A question that needs a few steps of reasoning, answered step by step, ending in "So ..."."""
        objs = self._parse(context)
        templates = [self._removal, self._count_size, self._more_than]
        if len(objs) >= 2:
            templates += [self._rightmost_vs_leftmost, self._same_colour, self._higher_than, self._between,
                          self._highest]
        return rng.choice(templates)(objs, rng)

    def caption(self, context: str, rng: random.Random) -> tuple[str, str]:
        """Stage-1 pair: a brief-description instruction and one of the captions."""
        return caption_pair(context, rng)

    # -- complex-reasoning templates ------------------------------------------

    def _removal(self, objs, rng) -> tuple[str, str]:
        o = rng.choice(objs)
        n = len(objs)
        q = f"If the {o.name} were removed, how many objects would remain?"
        a = (f"{_there_are(n)} Removing the {o.name} takes away 1, and {n} - 1 = {n - 1}. "
             f"So {_objects_phrase(n - 1)} would remain.")
        return q, a

    def _count_size(self, objs, rng) -> tuple[str, str]:
        size = rng.choice(("large", "small"))
        q = f"How many objects are {size}, and which ones?"
        chosen = [f"the {o.name}" for o in objs if o.size == size]
        if not chosen:
            other = "small" if size == "large" else "large"
            return q, f"Every object in the image is {other}. So no object is {size}."
        k = len(chosen)
        verb = "is" if k == 1 else "are"
        return q, f"The {size} objects are: {_join(chosen)}. That makes {k}. So {_objects_phrase(k)} {verb} {size}."

    def _rightmost_vs_leftmost(self, objs, rng) -> tuple[str, str]:
        left, right = objs[0], objs[-1]
        q = "Which object is furthest to the right, and is it larger than the leftmost one?"
        steps = (f"The rightmost object is the {right.size} {right.name}. "
                 f"The leftmost object is the {left.size} {left.name}.")
        if right.size == left.size:
            reason, larger = "They are the same size.", False
        else:
            larger = right.size == "large"
            reason = f"A {right.size} object is {'larger' if larger else 'smaller'} than a {left.size} one."
        not_ = "" if larger else "not "
        end = f"So the {right.name} is furthest to the right, and it is {not_}larger than the {left.name}."
        return q, f"{steps} {reason} {end}"

    def _same_colour(self, objs, rng) -> tuple[str, str]:
        q = "Are all the objects the same colour? Explain."
        colours = [o.colour for o in objs]
        steps = f"The colours from left to right are {_join(colours)}."
        if len(set(colours)) == 1:
            return q, f"{steps} They are all {colours[0]}. So yes, all the objects are {colours[0]}."
        n_colours = len(set(colours))
        return q, f"{steps} That is {n_colours} different colours. So no, the objects are not all the same colour."

    def _higher_than(self, objs, rng) -> tuple[str, str]:
        a, b = rng.sample(objs, 2)
        q = f"Is the {a.name} higher than the {b.name}?"
        steps = f"The {a.name} is in the {a.row_name} row. The {b.name} is in the {b.row_name} row."
        if a.row == b.row:
            reason, higher = "They are in the same row.", False
        else:
            higher = a.row < b.row  # row 0 is the top
            reason = f"The {a.row_name} row is {'above' if higher else 'below'} the {b.row_name} row."
        end = f"So yes, the {a.name} is higher than the {b.name}." if higher else \
            f"So no, the {a.name} is not higher than the {b.name}."
        return q, f"{steps} {reason} {end}"

    def _more_than(self, objs, rng) -> tuple[str, str]:
        """Compare two counts: shapes ("more circles than squares") or colours ("more red objects than blue")."""
        attr, values = ("shape", SHAPES) if rng.random() < 0.5 else ("colour", COLOURS)
        # one value present in the image, the other any different one, in a random order
        a = rng.choice(sorted({getattr(o, attr) for o in objs}))
        a, b = rng.sample([a, rng.choice([v for v in values if v != a])], 2)
        names = {v: (v, SHAPE_PLURALS[v]) if attr == "shape" else (f"{v} object", f"{v} objects") for v in (a, b)}
        members = {v: [o for o in objs if getattr(o, attr) == v] for v in (a, b)}
        plural = {v: names[v][1] for v in (a, b)}
        q = f"Are there more {plural[a]} than {plural[b]}?"
        steps = []
        for v in (a, b):
            found, sentence = members[v], _how_many(len(members[v]), *names[v])
            steps.append(sentence[:-1] + f": {_the(found)}." if found else sentence)
        ka, kb = len(members[a]), len(members[b])
        compare = f"{ka} is {'more' if ka > kb else 'not more'} than {kb}."
        end = (f"So yes, there are more {plural[a]} than {plural[b]}." if ka > kb else
               f"So no, there are not more {plural[a]} than {plural[b]}.")
        return q, " ".join(steps + [compare, end])

    def _between(self, objs, rng) -> tuple[str, str]:
        i, j = sorted(rng.sample(range(len(objs)), 2))
        a, b = objs[i], objs[j]
        q = f"How many objects are between the {a.name} and the {b.name}?"
        order = f"From left to right, the objects are {_the(objs)}."
        inside = objs[i + 1 : j]
        if not inside:
            return q, f"{order} Nothing lies between the {a.name} and the {b.name}. So no object is between them."
        verb = "lies" if len(inside) == 1 else "lie"
        return q, (f"{order} {_the(inside).capitalize()} {verb} between the {a.name} and the {b.name}. "
                   f"So {_objects_phrase(len(inside))} {'is' if len(inside) == 1 else 'are'} between them.")

    def _highest(self, objs, rng) -> tuple[str, str]:
        q = "Which object is the highest in the image?"
        rows = [f"the {o.name} is in the {o.row_name} row" for o in objs]
        top = min(o.row for o in objs)
        highest = [o for o in objs if o.row == top]
        steps = f"From left to right, {_join(rows)}. The highest of these rows is the {highest[0].row_name} row."
        if len(highest) == 1:
            return q, f"{steps} So the {highest[0].name} is the highest."
        return q, f"{steps} So {_the(highest)} are the highest, side by side."
