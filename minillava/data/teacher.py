"""A rule-based stand-in for the paper's text-only GPT-4 teacher.

LLaVA never showed GPT-4 an image: it gave it captions and bounding boxes as
text and asked for conversations, detailed descriptions and complex reasoning.
``ToyTeacher`` does the same. Every method takes the symbolic context *string*
(see ``world.symbolic_context``) and nothing else about the scene; all facts
are re-derived from the box lines by ``parse_context``. It only borrows the
world's vocabulary (colour, shape and row words), as GPT-4 brought its own.

Column scheme for "Where is ...?" answers (4 columns): left, centre left,
centre right, right; an answer is "<row> <column>", e.g. "top centre left".
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from dataclasses import dataclass

from minillava.data.world import COLOURS, ROWS, SHAPES, SIZE_THRESHOLD, position_phrase

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

QUESTION_KINDS = ("count", "colour", "shape", "yesno", "relation", "position")
EVAL_KINDS = ("count", "colour", "yesno", "relation")

# A few phrasings per kind, shared by every generator: a tiny model can learn
# this small set. The first phrasing of each kind is the one used for eval.
PHRASINGS = {
    "count": (
        "How many objects are in the image?",
        "How many shapes are there in the image?",
        "What is the number of objects in the image?",
    ),
    "colour": ("What colour is the {shape}?", "What is the colour of the {shape}?"),
    "shape": ("What shape is the {colour} object?", "What is the shape of the {colour} object?"),
    "yesno": ("Is there a {name} in the image?", "Does the image contain a {name}?"),
    "relation": (
        "What is directly to the {side} of the {name}?",
        "Which object is directly to the {side} of the {name}?",
    ),
    "position": ("Where is the {name}?", "Where is the {name} in the image?"),
}

_NUM = r"(\d+(?:\.\d+)?)"
_BOX_LINE = re.compile(rf"^([a-z]+) ([a-z]+): \[{_NUM}, {_NUM}, {_NUM}, {_NUM}\]$")


@dataclass(frozen=True)
class ContextObject:
    name: str
    colour: str
    shape: str
    size: str
    column: int
    row: int  # index into ROWS
    box: tuple[float, float, float, float]


def parse_context(text: str, n_columns: int = 4) -> list[ContextObject]:
    """Objects from the box lines of a symbolic context, left to right.

    A box line is any line containing "[" (captions never do); it must read
    exactly like ``red circle: [0.125, 0.300, 0.400, 0.575]``. Grid position
    and size come from the box geometry, never from the captions.
    """
    cell = min(1 / n_columns, 1 / len(ROWS))  # a cell's shorter side, as a fraction of the image
    objects = []
    for line in text.splitlines():
        if "[" not in line:
            continue
        m = _BOX_LINE.match(line.strip())
        if m is None:
            raise ValueError(f"bad box line: {line!r}")
        colour, shape = m.group(1), m.group(2)
        x1, y1, x2, y2 = (float(v) for v in m.group(3, 4, 5, 6))
        if colour not in COLOURS or shape not in SHAPES:
            raise ValueError(f"unknown colour or shape in box line: {line!r}")
        if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
            raise ValueError(f"box out of [0, 1] or empty in line: {line!r}")
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        column = min(math.floor(cx * n_columns), n_columns - 1)
        row = min(math.floor(cy * len(ROWS)), len(ROWS) - 1)
        size = "large" if (x2 - x1) / cell > SIZE_THRESHOLD else "small"
        objects.append(ContextObject(f"{colour} {shape}", colour, shape, size, column, row, (x1, y1, x2, y2)))
    if not objects:
        raise ValueError("symbolic context has no box lines")
    names = [o.name for o in objects]
    if len(set(names)) != len(names):
        raise ValueError(f"object names must be distinct, got {names}")
    return sorted(objects, key=lambda o: o.column)


def caption_lines(text: str) -> list[str]:
    """The free-text captions: the lines before the first blank line."""
    return [line for line in text.split("\n\n")[0].splitlines() if line.strip() and "[" not in line]


@dataclass(frozen=True)
class Question:
    kind: str
    question: str  # without the SHORT_ANSWER suffix
    answer: str  # the exact short answer: lower case, no final period
    sentence: str = ""  # the same fact as a full sentence, for conversations


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _objects_phrase(n: int) -> str:
    return f"{n} object" if n == 1 else f"{n} objects"


def _there_are(n: int) -> str:
    return f"There {'is' if n == 1 else 'are'} {_objects_phrase(n)} in the image."


class ToyTeacher:
    """Writes instruction data from a symbolic context, like text-only GPT-4 did."""

    def __init__(self, n_columns: int = 4):
        self.n_columns = n_columns

    # -- helpers -------------------------------------------------------------

    def _parse(self, context: str) -> list[ContextObject]:
        return parse_context(context, self.n_columns)

    def _where(self, o: ContextObject) -> str:
        return position_phrase(o.row, o.column, self.n_columns)

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

    # -- short questions -----------------------------------------------------

    def questions(self, context: str, rng: random.Random) -> list[Question]:
        """Every short-answer question the context supports, phrasing picked by rng.

        Yes/no questions are balanced: one "yes" per object and as many "no"
        questions about colour+shape pairs absent from the scene.
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

    # -- the paper's three response types, plus stage-1 captions -------------

    def conversation(self, context: str, rng: random.Random) -> list[tuple[str, str]]:
        """3-6 turns about the image: first one question of each kind (in random order), then more distinct ones.

        Like LLaVA-1.5, a turn either asks for a short answer (with the SHORT_ANSWER suffix) or gets a
        full-sentence answer.
        """
        pool = self.questions(context, rng)
        by_kind: dict[str, list[Question]] = {}
        for q in pool:
            by_kind.setdefault(q.kind, []).append(q)
        n_turns = rng.randint(3, 6)
        kinds = sorted(by_kind)
        rng.shuffle(kinds)
        chosen = [rng.choice(by_kind[kind]) for kind in kinds][:n_turns]
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
        """A detailed description: the count, then every object left to right."""
        objs = self._parse(context)
        where = [self._where(o) for o in objs]
        if len(objs) == 1:
            text = f"There is 1 object in the image: a {objs[0].size} {objs[0].name} at the {where[0]}."
        elif rng.random() < 0.5:  # two styles: one listing sentence, or one sentence per object
            parts = [f"a {o.size} {o.name} at the {w}" for o, w in zip(objs, where)]
            text = f"{_there_are(len(objs))} From left to right, there is {_join(parts)}."
        else:
            parts = [f"A {o.size} {o.name} is at the {w}." for o, w in zip(objs, where)]
            text = f"{_there_are(len(objs))} From left to right: " + " ".join(parts)
        return rng.choice(DETAIL_INSTRUCTIONS), text

    def complex(self, context: str, rng: random.Random) -> tuple[str, str]:
        """A question that needs a few steps of reasoning, answered step by step."""
        objs = self._parse(context)
        templates = [self._removal, self._count_size]
        if len(objs) >= 2:
            templates += [self._rightmost_vs_leftmost, self._same_colour, self._higher]
        return rng.choice(templates)(objs, rng)

    def caption(self, context: str, rng: random.Random) -> tuple[str, str]:
        """Stage-1 pair: a brief-description instruction and one of the captions."""
        return rng.choice(STAGE1_INSTRUCTIONS), rng.choice(caption_lines(context))

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

    def _higher(self, objs, rng) -> tuple[str, str]:
        a, b = rng.sample(objs, 2)
        q = f"Is the {a.name} higher than the {b.name}?"
        steps = f"The {a.name} is in the {ROWS[a.row]} row. The {b.name} is in the {ROWS[b.row]} row."
        if a.row == b.row:
            reason, higher = "They are in the same row.", False
        else:
            higher = a.row < b.row  # row 0 is the top
            reason = f"The {ROWS[a.row]} row is {'above' if higher else 'below'} the {ROWS[b.row]} row."
        end = f"So yes, the {a.name} is higher than the {b.name}." if higher else \
            f"So no, the {a.name} is not higher than the {b.name}."
        return q, f"{steps} {reason} {end}"
