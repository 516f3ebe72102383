"""A rule-based stand-in for the paper's text-only GPT-4 teacher.

LLaVA never showed GPT-4 an image: it gave it captions and bounding boxes as
text and asked for conversations, detailed descriptions and complex reasoning.
``ToyTeacher`` does the same. Every method takes the symbolic context *string*
(see ``world.symbolic_context``) and nothing else about the scene; all facts
are re-derived from the box lines by ``questions.parse_context``. It only borrows the
world's vocabulary (colour, shape and row words), as GPT-4 brought its own.

What the paper asked of GPT-4, and where it is here:
- conversations about counts, attributes, absolute and relative positions and
  comparisons, in varied phrasing: ``conversation``, made of the short-answer
  questions of ``questions.QuestionBuilder``;
- detailed descriptions that cover every object: ``detail``;
- complex reasoning with a chain of steps and a conclusion: ``complex`` and its
  reasoning templates.
Stage 1's caption pairs (``caption``) and the detail records' instructions come
from ``instructions``.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

from minillava.constants import SHORT_ANSWER, STAGE2_KINDS, Turns
from minillava.data.context import join_words
from minillava.data.instructions import DETAIL_INSTRUCTIONS, caption_pair
from minillava.data.questions import (ATTRIBUTE_KINDS, EVAL_KINDS, PLACE_KINDS, Question, QuestionBuilder, how_many,
                                      objects_phrase, the_objects, there_are)
from minillava.data.world import COLOURS, NUMBER_WORDS, SHAPE_PLURALS, SHAPES

__all__ = ["Teacher", "ToyTeacher"]


class Teacher(Protocol):
    """Every teacher: a symbolic context (text) in, (question, answer) turns out; it never sees pixels.

    ``kind`` is one of STAGE2_KINDS; "detail" and "complex" return one turn, "conv" several.
    """

    def respond(self, kind: str, context: str, rng: random.Random) -> Turns: ...


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
        self.builder = QuestionBuilder(n_columns, n_rows)

    def respond(self, kind: str, context: str, rng: random.Random) -> Turns:
        """The ``Teacher`` interface: one record's turns of the given kind."""
        if kind == "conv":
            return self.conversation(context, rng)
        if kind == "detail":
            return [self.detail(context, rng)]
        if kind == "complex":
            return [self.complex(context, rng)]
        raise ValueError(f"unknown response kind {kind!r}; expected one of {STAGE2_KINDS}")

    # -- short questions (see ``QuestionBuilder``) ------------------------------

    def questions(self, context: str, rng: random.Random) -> list[Question]:
        """Every short-answer question the context supports, phrasing picked by rng."""
        return self.builder.questions(context, rng)

    def eval_questions(self, context: str, rng: random.Random) -> list[Question]:
        """One question per evaluated kind (skipping unsupported ones), first phrasing."""
        return self.builder.eval_questions(context, rng)

    def short_answers(self, context: str, rng: random.Random, k: int, kinds: Sequence[str] = EVAL_KINDS,
                      balanced: bool = False) -> Turns:
        """Up to `k` distinct questions of `kinds` (by default the evaluated ones) with the SHORT_ANSWER suffix: a
        LLaVA-1.5-style VQA record; `balanced`: about as many of each kind."""
        return self.builder.short_answers(context, rng, k, kinds, balanced)

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
        objs = self.builder.parse(context)
        where = [self.builder.where(o) for o in objs]
        if len(objs) == 1:
            return rng.choice(DETAIL_INSTRUCTIONS), \
                f"There is 1 object in the image: a {objs[0].size} {objs[0].name} at the {where[0]}."
        style = rng.randrange(3)  # one listing sentence, one sentence per object, or a walk from left to right
        if style == 0:
            parts = [f"a {o.size} {o.name} at the {w}" for o, w in zip(objs, where)]
            text = f"{there_are(len(objs))} From left to right, there is {join_words(parts)}."
        elif style == 1:
            parts = [f"A {o.size} {o.name} is at the {w}." for o, w in zip(objs, where)]
            text = f"{there_are(len(objs))} From left to right: " + " ".join(parts)
        else:
            parts = [f"On the far left, a {objs[0].size} {objs[0].name} is at the {where[0]}."]
            parts += [f"Next to the right, a {o.size} {o.name} is at the {w}." for o, w in zip(objs[1:], where[1:])]
            text = f"{there_are(len(objs))} " + " ".join(parts)
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
        return f"{the_objects(highest).capitalize()} are the highest, side by side in the {highest[0].row_name} row."

    def complex(self, context: str, rng: random.Random) -> tuple[str, str]:
        """A question that needs a few steps of reasoning, answered step by step, ending in "So ..."."""
        objs = self.builder.parse(context)
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
        a = (f"{there_are(n)} Removing the {o.name} takes away 1, and {n} - 1 = {n - 1}. "
             f"So {objects_phrase(n - 1)} would remain.")
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
        return q, f"The {size} objects are: {join_words(chosen)}. That makes {k}. So {objects_phrase(k)} {verb} {size}."

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
        steps = f"The colours from left to right are {join_words(colours)}."
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
            found, sentence = members[v], how_many(len(members[v]), *names[v])
            steps.append(sentence[:-1] + f": {the_objects(found)}." if found else sentence)
        ka, kb = len(members[a]), len(members[b])
        compare = f"{ka} is {'more' if ka > kb else 'not more'} than {kb}."
        end = (f"So yes, there are more {plural[a]} than {plural[b]}." if ka > kb else
               f"So no, there are not more {plural[a]} than {plural[b]}.")
        return q, " ".join(steps + [compare, end])

    def _between(self, objs, rng) -> tuple[str, str]:
        i, j = sorted(rng.sample(range(len(objs)), 2))
        a, b = objs[i], objs[j]
        q = f"How many objects are between the {a.name} and the {b.name}?"
        order = f"From left to right, the objects are {the_objects(objs)}."
        inside = objs[i + 1 : j]
        if not inside:
            return q, f"{order} Nothing lies between the {a.name} and the {b.name}. So no object is between them."
        verb = "lies" if len(inside) == 1 else "lie"
        return q, (f"{order} {the_objects(inside).capitalize()} {verb} between the {a.name} and the {b.name}. "
                   f"So {objects_phrase(len(inside))} {'is' if len(inside) == 1 else 'are'} between them.")

    def _highest(self, objs, rng) -> tuple[str, str]:
        q = "Which object is the highest in the image?"
        rows = [f"the {o.name} is in the {o.row_name} row" for o in objs]
        top = min(o.row for o in objs)
        highest = [o for o in objs if o.row == top]
        steps = f"From left to right, {join_words(rows)}. The highest of these rows is the {highest[0].row_name} row."
        if len(highest) == 1:
            return q, f"{steps} So the {highest[0].name} is the highest."
        return q, f"{steps} So {the_objects(highest)} are the highest, side by side."
