"""What an answer claims, for the rule-based LLaVA-Bench judge (``rule_judge``): the toy world's vocabulary as
regex pieces, and the patterns that turn an answer's sentences into (key, value) claims ("The circle is red" ->
(("colour", "circle"), "red")). ``rule_judge`` checks those claims against the scene's truth; both speak in the
``Claim`` keys and flips defined here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from minillava.data.world import (COLOURS, COLUMN_NAMES, ROW_NAMES, SHAPE_PLURALS, SHAPES, SIZES, column_names,
                                   row_names)

# -- vocabulary and patterns ---------------------------------------------------------------------

NUMBERS = {"no": 0, "zero": 0, "none": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
            "seven": 7, "eight": 8, "nine": 9, "ten": 10}
NUM = r"(\d+|" + "|".join(NUMBERS) + r")"
COLOUR = "(?:" + "|".join(COLOURS) + ")"
SHAPE = "(?:" + "|".join(SHAPES) + ")"
SIZE = "(?:" + "|".join(SIZES) + ")"
NAME = f"{COLOUR} {SHAPE}"
# an object named in a sentence, optionally with an article and a size: "the red circle", "a large blue square"
OBJ = rf"(?:(?:the|a|an) )?(?:{SIZE} )?({NAME})"
OBJ_LIST = rf"(?:(?:the|a|an) )?(?:{SIZE} )?{NAME}(?:(?:, | and |, and )(?:(?:the|a|an) )?(?:{SIZE} )?{NAME})*"
PLURAL = "(" + "|".join(SHAPE_PLURALS.values()) + rf"|{COLOUR} objects)"  # "circles", "red objects"
# the words a bare short answer is made of ("3", "blue square", "upper centre left", "red circle and blue square")
SHORT_WORDS = ({str(i) for i in range(11)} | set(COLOURS) | set(SHAPES) | set(SIZES) | {"yes", "no", "nothing", "and"}
                | {w for rows in ROW_NAMES.values() for r in rows for w in r.split()}
                | {w for cols in COLUMN_NAMES.values() for c in cols for w in c.split()})


def _num(word: str) -> int:
    return int(word) if word.isdigit() else NUMBERS[word]


def _names(text: str) -> list[str]:
    return re.findall(NAME, text)


def singular(plural: str) -> str:
    """"circles" -> "circle", "red objects" -> "red"; the filter a count is taken over."""
    for shape, p in SHAPE_PLURALS.items():
        if plural == p:
            return shape
    return plural.split()[0]


Claim = tuple[tuple, object]  # (key, value): ("colour", "circle"), "red"


def pair_claim(kind: str, a: str, b: str, value: str, flip: dict[str, str]) -> Claim:
    """A claim about two objects, written with the names in alphabetical order (value flipped to match)."""
    if a <= b:
        return (kind, a, b), value
    return (kind, b, a), flip.get(value, value)


SIDE_FLIP = {"left": "right", "right": "left"}
VERTICAL_FLIP = {"above": "below", "below": "above", "not above": "not below", "not below": "not above"}
SIZE_FLIP = {"larger": "smaller", "smaller": "larger", "not larger": "not smaller", "not smaller": "not larger"}


class Patterns:
    """The claims an answer's sentences make, each a (key, value) pair; see ``rule_judge.RuleJudge``."""

    def __init__(self, n_columns: int, n_rows: int) -> None:
        self.rows = row_names(n_rows)
        positions = [f"{r} {c}" for r in self.rows for c in column_names(n_columns)]
        pos = "(" + "|".join(sorted(positions, key=len, reverse=True)) + ")"
        row = "(" + "|".join(self.rows) + ")"
        # each rule: a pattern and what one match claims; applied with finditer to every sentence
        self.rules: list[tuple[re.Pattern, Callable[[re.Match], Iterator[Claim]]]] = [(re.compile(p), f) for p, f in [
            # counts: "There are 3 objects", "There is 1 red object", "There are no circles"
            (rf"\bthere (?:is|are) {NUM} (?:({COLOUR}|{SIZE}) )?(objects?|shapes?|{SHAPE}s?)\b", self._count),
            (rf"\b{NUM} of the (?:objects|shapes) (?:is|are) ({COLOUR}|{SIZE})\b",
             lambda m: iter([(("count", m[2]), _num(m[1]))])),
            (rf"\b{NUM} objects? (?:is|are) ({COLOUR}|{SIZE})\b", lambda m: iter([(("count", m[2]), _num(m[1]))])),
            (rf"\b(?:all of them|they|all the objects|all objects) are (?:all )?({COLOUR}|{SIZE})\b",
             lambda m: iter([(("count", m[1]), "all")])),
            (rf"\bevery object (?:in the image )?is ({COLOUR}|{SIZE})\b", lambda m: iter([(("count", m[1]), "all")])),
            (rf"\bno object is ({COLOUR}|{SIZE})\b", lambda m: iter([(("count", m[1]), 0)])),
            (r"\bevery object has a different colour\b", lambda m: iter([(("distinct_colours",), True)])),
            (rf"\bthat is {NUM} different colours?\b", lambda m: iter([(("n_colours",), _num(m[1]))])),
            (r"\bthe objects are not all the same colour\b", lambda m: iter([(("same_colour",), False)])),
            (r"\ball (?:of )?the objects are the same colour\b", lambda m: iter([(("same_colour",), True)])),
            (r"\bthe colours from left to right are ([a-z ,]+)",
             lambda m: iter([(("colour_order",), tuple(re.findall(COLOUR, m[1])))])),
            (rf"\bthere are (not )?more {PLURAL} than {PLURAL}",
             lambda m: iter([(("more", singular(m[2]), singular(m[3])), not m[1])])),
            # attributes: "The circle is red", "The red object is a circle", "the red circle is large"
            (rf"\bthe ({SHAPE}) is ({COLOUR})\b", lambda m: iter([(("colour", m[1]), m[2])])),
            (rf"\bthe ({COLOUR}) object is an? ({SHAPE})\b", lambda m: iter([(("shape", m[1]), m[2])])),
            (rf"{OBJ} is ({SIZE})\b", lambda m: iter([(("size", m[1]), m[2])])),
            (rf"\bthe ({SIZE}) objects are:? ({OBJ_LIST})", lambda m: ((("size", n), m[1]) for n in _names(m[2]))),
            (rf"{OBJ} (?:is |sits )?at the {pos}\b", lambda m: iter([(("position", m[1]), m[2])])),
            # places: rows, neighbours, sides, heights, extremes, "between"
            (rf"\b({OBJ_LIST}|nothing) (?:is|are) in the {row} row\b", self._row),
            (rf"\bthey are all in the {row} row\b", lambda m: iter([(("row_all",), m[1])])),
            (rf"{OBJ} is directly to the (left|right) of {OBJ}",
             lambda m: iter([(("neighbour", m[2], m[3]), m[1])])),
            (rf"{OBJ} is (?:to|on) the (left|right)(?: side)? of {OBJ}",
             lambda m: iter([pair_claim("side", m[1], m[3], m[2], SIDE_FLIP)])),
            (rf"{OBJ} is (not )?(above|below|higher(?: up)? than|lower than) {OBJ}", self._vertical),
            (rf"{OBJ} and {OBJ} are in the same row\b", lambda m: iter([pair_claim("vertical", m[1], m[2], "same", {})])),
            (rf"{OBJ} is (not )?(larger|bigger|smaller) than {OBJ}", self._larger),
            (r"\bthey are the same size\b", lambda m: iter([])),  # refers back two objects: not checked
            (rf"{OBJ} is (?:the )?furthest to the (left|right)\b", lambda m: iter([(("extreme", m[2]), m[1])])),
            (rf"\bthe (left|right)most object is {OBJ}", lambda m: iter([(("extreme", m[1]), m[2])])),
            (rf"\b({OBJ_LIST}) (?:is|are) the highest\b", lambda m: iter([(("highest",), frozenset(_names(m[1])))])),
            (rf"\b({OBJ_LIST}|nothing) (?:lies|lie|is|are) between {OBJ} and {OBJ}",
             lambda m: iter([(("between",) + tuple(sorted((m[2], m[3]))), frozenset(_names(m[1])))])),
            (rf"\bthe {row} row is (above|below) the {row} row\b",
             lambda m: iter([(("row_order", m[1], m[3]), m[2])])),
            # arithmetic in reasoning: "3 - 1 = 2", "2 is more than 0"
            (r"\b(\d+) - (\d+) = (\d+)\b", lambda m: iter([(("arithmetic", m[0]), int(m[1]) - int(m[2]) == int(m[3]))])),
            (r"\b(\d+) is (not )?more than (\d+)\b",
             lambda m: iter([(("arithmetic", m[0]), (int(m[1]) > int(m[3])) != bool(m[2]))])),
            # conclusions that only the question can check
            (rf"\b{NUM} objects? would remain\b", lambda m: iter([(("remain",), _num(m[1]))])),
            (rf"\b{NUM} objects? (?:is|are) between them\b", lambda m: iter([(("n_between",), _num(m[1]))])),
            (rf"\bthat makes {NUM}\b", lambda m: iter([(("that_makes",), _num(m[1]))])),
        ]]

    @staticmethod
    def _count(m: re.Match) -> Iterator[Claim]:
        n, adjective, noun = _num(m[1]), m[2], m[3].rstrip("s")
        if noun in ("object", "shape"):
            yield ("count", adjective or "all"), n
        else:  # "There are 2 circles", "There is 1 red circle"
            yield ("count", f"{adjective} {noun}" if adjective else noun), n

    @staticmethod
    def _row(m: re.Match) -> Iterator[Claim]:
        if m[1] == "nothing":
            yield ("row_count", m[2]), 0
        for name in _names(m[1]):
            yield ("row_of", name), m[2]

    @staticmethod
    def _vertical(m: re.Match) -> Iterator[Claim]:
        word = "above" if m[3].startswith(("above", "higher")) else "below"
        yield pair_claim("vertical", m[1], m[4], f"not {word}" if m[2] else word, VERTICAL_FLIP)

    @staticmethod
    def _larger(m: re.Match) -> Iterator[Claim]:
        word = "smaller" if m[3] == "smaller" else "larger"
        yield pair_claim("larger", m[1], m[4], f"not {word}" if m[2] else word, SIZE_FLIP)

    def claims(self, answer: str, question: str = "") -> set[Claim]:
        """Every claim the answer makes, deduplicated (saying a fact twice does not make it count twice)."""
        out: set[Claim] = set()
        named = _names(normalise_text(question))
        last = named[-1] if named else None  # the last object named, first in the question: what "it" refers to
        for sentence in sentences(answer):
            sentence, last = resolve_it(sentence, last)
            out |= mentions(sentence)
            for pattern, claims in self.rules:
                for m in pattern.finditer(sentence):
                    out.update(claims(m))
            if "from left to right" in sentence:  # a listing in order: the names must go left to right
                names = _names(sentence.split("from left to right", 1)[1])
                if len(names) >= 2:
                    out.add((("order", tuple(names)), True))
        return out


def normalise_text(text: str) -> str:
    text = text.lower().replace("center", "centre").replace("color", "colour").replace("grey", "gray")
    return " ".join(text.replace("**", "").split())


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+|\n+", normalise_text(text)) if s]


def resolve_it(sentence: str, last: str | None) -> tuple[str, str | None]:
    """Replace "it" by the object named last before it ("So the red circle is ..., and it is larger ...")."""
    parts, pos = [], 0
    for m in re.finditer(rf"\bit\b|{NAME}", sentence):
        if m[0] == "it":
            if last is not None:
                parts += [sentence[pos:m.start()], f"the {last}"]
                pos = m.end()
        else:
            last = m[0]
    return "".join(parts) + sentence[pos:], last


NEGATION = re.compile(rf"\b(?:no|not an?|not any|isn't an?|without an?|there is no)\s+(?:{SIZE} )?$")


def mentions(sentence: str) -> set[Claim]:
    """"a large red circle": exists and size; "no red circle" / "not a red circle": does not exist."""
    out: set[Claim] = set()
    for m in re.finditer(rf"\b(?:({SIZE}) )?({NAME})s?\b", sentence):
        negated = NEGATION.search(sentence[: m.start()] + (f"{m[1]} " if m[1] else "")) is not None
        out.add((("exists", m[2]), not negated))
        if m[1] and not negated:
            out.add((("size", m[2]), m[1]))
    return out


def short_form(text: str) -> str:
    """"The blue square." -> "blue square", "Three" -> "3", "red circle, blue square and ..." without commas."""
    text = re.sub(r"\b(the|a|an)\b|,", " ", normalise_text(text).strip().rstrip(".!"))
    return " ".join(str(NUMBERS[w]) if w in NUMBERS and w != "no" else w for w in text.split())


def describe(claim: Claim) -> str:
    key, value = claim
    if isinstance(value, frozenset):
        value = sorted(value)
    return f"{' '.join(map(str, key))} = {value}"
