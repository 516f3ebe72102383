"""The rule-based LLaVA-Bench judge: no model at all (the ``Judge`` interface of ``judges``).

It parses the scene's exact truth from the context's box lines, extracts the claims an answer makes with the
patterns of ``claims``, checks each against the truth, and scores what the question asks for (coverage) and how
much of what was said is true (precision). See ``RuleJudge``'s docstring.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import pairwise
from string import Formatter

from minillava.data.context import join_words
from minillava.data.questions import PHRASINGS, ContextObject, QuestionBuilder
from minillava.data.world import SHAPE_PLURALS, row_names

from .claims import (COLOUR, NAME, PLURAL, SHAPE, SHORT_WORDS, SIDE_FLIP, SIZE, SIZE_FLIP, VERTICAL_FLIP, Claim,
                     Patterns, describe, normalise_text, pair_claim, short_form, singular)
from .judges import Review, _check_kind

# -- the rule judge: the scene's truth -------------------------------------------------------------------------------


class _Truth:
    """Checks claims against the objects parsed from the context's box lines."""

    def __init__(self, objs: list[ContextObject], builder: QuestionBuilder) -> None:
        self.objs, self.builder = objs, builder  # objs: left to right
        self.by_name = {o.name: o for o in objs}
        self.rows = row_names(builder.n_rows)

    def matching(self, what: str) -> list[ContextObject]:
        """The objects a count is over: "all", a colour, a shape, a size or a "colour shape" name."""
        if what == "all":
            return self.objs
        return [o for o in self.objs if what in (o.colour, o.shape, o.size, o.name)]

    def neighbour(self, o: ContextObject, side: str) -> str:
        i = self.objs.index(o) + (-1 if side == "left" else 1)
        return self.objs[i].name if 0 <= i < len(self.objs) else "nothing"

    def vertical(self, a: ContextObject, b: ContextObject) -> set[str]:
        """Every true word for a's height against b's."""
        if a.row < b.row:
            return {"above", "not below"}
        if a.row > b.row:
            return {"below", "not above"}
        return {"same", "not above", "not below"}

    @staticmethod
    def larger(a: ContextObject, b: ContextObject) -> set[str]:
        if a.size == b.size:
            return {"same", "not larger", "not smaller"}
        return {"larger", "not smaller"} if a.size == "large" else {"smaller", "not larger"}

    def highest(self) -> frozenset[str]:
        top = min(o.row for o in self.objs)
        return frozenset(o.name for o in self.objs if o.row == top)

    def between(self, a: ContextObject, b: ContextObject) -> frozenset[str]:
        lo, hi = sorted((self.objs.index(a), self.objs.index(b)))
        return frozenset(o.name for o in self.objs[lo + 1 : hi])

    def check(self, claim: Claim) -> bool | None:
        """True or False for a claim about the scene; None when the scene alone cannot say (e.g. the size of an
        object that is not there: the mention is already wrong)."""
        key, value = claim
        kind, args = key[0], key[1:]
        if kind == "exists":
            return (args[0] in self.by_name) == value
        if kind == "count":
            k = len(self.matching(args[0]))
            return (k == len(self.objs) and k > 0) if value == "all" else k == value
        objs = [self.by_name.get(a) for a in args if re.fullmatch(NAME, str(a))]
        if None in objs:
            return None
        if kind == "colour":
            return any(o.shape == args[0] and o.colour == value for o in self.objs)
        if kind == "shape":
            return any(o.colour == args[0] and o.shape == value for o in self.objs)
        if kind == "size":
            return objs[0].size == value
        if kind == "position":
            return self.builder.where(objs[0]) == value
        if kind == "row_of":
            return objs[0].row_name == value
        if kind == "row_count":
            return sum(o.row_name == args[0] for o in self.objs) == value
        if kind == "row_all":
            return all(o.row_name == value for o in self.objs)
        if kind == "neighbour":
            return self.neighbour(self.by_name[args[1]], args[0]) == value
        if kind == "side":
            return ("left" if objs[0].column < objs[1].column else "right") == value
        if kind == "vertical":
            return value in self.vertical(*objs)
        if kind == "larger":
            return value in self.larger(*objs)
        if kind == "extreme":
            return value in self.by_name and self.objs[0 if args[0] == "left" else -1].name == value
        if kind == "highest":
            return self.highest() == value
        if kind == "between":
            return self.between(*objs) == value
        if kind == "distinct_colours":
            return len({o.colour for o in self.objs}) == len(self.objs)
        if kind == "n_colours":
            return len({o.colour for o in self.objs}) == value
        if kind == "same_colour":
            return (len({o.colour for o in self.objs}) == 1) == value
        if kind == "colour_order":
            return tuple(o.colour for o in self.objs) == value
        if kind == "more":
            return (len(self.matching(args[0])) > len(self.matching(args[1]))) == value
        if kind == "row_order":
            return ("above" if self.rows.index(args[0]) < self.rows.index(args[1]) else "below") == value
        if kind == "order":
            present = [self.by_name.get(n) for n in args[0]]
            if None in present:
                return None
            return all(a.column < b.column for a, b in pairwise(present))
        if kind == "arithmetic":
            return value
        return None  # "remain", "n_between", "that_makes", "answer": only the question can check them


# -- the rule judge: what a question asks -----------------------------------------------------------------------------


@dataclass
class _Asks:
    """What a question asks: `facts` (key -> the values that answer it) and the exact short answer, if any."""

    facts: dict[tuple, set]
    short: str | None = None
    checks: dict[tuple, set] = field(default_factory=dict)  # steps only the question can check, not required


def _template_regex(template: str) -> re.Pattern:
    """A PHRASINGS template as a regex with one named group per field ("{name}" -> (?P<name>red circle|...))."""
    fields = {"shape": SHAPE, "name": NAME, "other": NAME, "colour": COLOUR, "side": "left|right",
              "shapes": "|".join(SHAPE_PLURALS.values()), "row": "[a-z]+"}
    parts = []
    for literal, name, _, _ in Formatter().parse(template.lower()):
        parts.append(re.escape(literal))
        if name is not None:
            parts.append(f"(?P<{name}>{fields[name]})")
    return re.compile("".join(parts))


_PHRASING_REGEXES = [(kind, _template_regex(t)) for kind, templates in PHRASINGS.items() for t in templates]
# The teacher's complex-reasoning questions (ToyTeacher._removal, ... _highest), one pattern each.
_COMPLEX_REGEXES = [(kind, re.compile(p)) for kind, p in [
    ("removal", rf"if the (?P<name>{NAME}) were removed, how many objects would remain\?"),
    ("count_size", rf"how many objects are (?P<size>{SIZE}), and which ones\?"),
    ("rightmost", r"which object is furthest to the right, and is it larger than the leftmost one\?"),
    ("same_colour", r"are all the objects the same colour\? explain\."),
    ("higher_than", rf"is the (?P<name>{NAME}) higher than the (?P<other>{NAME})\?"),
    ("more_than", rf"are there more {PLURAL} than {PLURAL}\?"),
    ("between", rf"how many objects are between the (?P<name>{NAME}) and the (?P<other>{NAME})\?"),
    ("highest", r"which object is the highest in the image\?"),
]]


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


# -- the rule judge ------------------------------------------------------------------------------------------------


class RuleJudge:
    """Scores an answer against the scene's exact truth, parsed from the context's box lines.

    1. Truth: ``parse_context`` gives every object's colour, shape, size, row and column.
    2. Claims: each sentence of the answer is matched against a small set of patterns (``Patterns``), each
       yielding (key, value) claims: object mentions ("a large red circle": it exists, it is large; "no red circle":
       it does not), counts ("There are 3 objects", "two of the objects are red", "There are no circles", digits or
       number words), colours of shapes ("The circle is red"), shapes of colours, sizes, positions ("at the upper
       centre left"), rows, neighbours ("directly to the left of"), sides, heights ("above", "higher than", "same
       row"), sizes compared, extremes ("furthest to the left", "the rightmost object is"), "the highest", "between",
       the colours in order, listings "from left to right" (must be in column order) and arithmetic ("3 - 1 = 2").
       "it" is read as the object named last (before the answer names one: the question's last).
    3. What the question asks: a question matching one of ``PHRASINGS`` (the conversation questions) or the
       teacher's complex-reasoning templates gets its facts and exact short answer, computed from the scene; a
       "detail" question asks for the count and every object's existence, size and position.
    4. Score = 1 + 9 x coverage x precision, one decimal:
       - coverage: 1 if the answer gives the exact short answer (a bare "3", "yes", "blue square"; for yes/no
         questions the first word or the "So yes/no" of a conclusion), else the fraction of asked facts that some
         claim states with a right value; for a question it does not recognise, 1 if any claim is true;
       - precision: true claims / all checked claims (claims the scene alone cannot check are left out), times
         (1 - CHAIR_i / 2), CHAIR_i being the share of the objects it names that are not in the scene (the
         object-hallucination rate of Rohrbach et al., 2018): a hallucinated object costs a false claim *and* a
         share of the whole score, so it is not diluted by a long answer's many true claims; an answer that names
         only objects that are not there loses half.
       An empty or irrelevant answer (no true claim) scores 1; the teacher's answers score 10.

    What it does not understand: paraphrases outside its patterns (they are ignored, neither right nor wrong),
    synonyms of the world's words ("crimson", "box", "above-left"), objects named without both colour and shape
    ("the circle on the left"), "they"/"them"/"one" (except in a few fixed phrases), negation beyond "no X" / "not"
    in its patterns, hedging, and whether a reasoning chain follows (each step is checked on its own). A short answer
    with a verb ("There are 3.") is not read as a short answer.
    """

    def __init__(self, n_columns: int = 4, n_rows: int = 4) -> None:
        self.builder = QuestionBuilder(n_columns, n_rows)
        self.patterns = Patterns(n_columns, n_rows)

    def review(self, question: str, context: str, answer_1: str, answer_2: str, kind: str) -> Review:
        _check_kind(kind)
        truth = _Truth(self.builder.parse(context), self.builder)
        asks = self.asks(question, kind, truth)
        (s1, e1), (s2, e2) = (self.score(a, question, asks, truth) for a in (answer_1, answer_2))
        return Review(s1, s2, f"Assistant 1: {e1}\nAssistant 2: {e2}")

    # -- what the question asks ----------------------------------------------------------------------------------

    def asks(self, question: str, kind: str, truth: _Truth) -> _Asks:
        q = normalise_text(question)
        if kind == "detail":
            facts: dict[tuple, set] = {("count", "all"): {len(truth.objs)}}
            for o in truth.objs:
                facts[("exists", o.name)] = {True}
                facts[("size", o.name)] = {o.size}
                facts[("position", o.name)] = {self.builder.where(o)}
            return _Asks(facts)
        for name, regex in _PHRASING_REGEXES + _COMPLEX_REGEXES:
            if m := regex.fullmatch(q):
                asks = self._asks(name, m, truth)
                if asks is not None:
                    return asks
        return _Asks({})

    def _asks(self, kind: str, m: re.Match, t: _Truth) -> _Asks | None:
        """Facts and short answer of one recognised question; None if it names an object that is not there."""
        g = m.groupdict()
        objs = t.objs
        a, b = t.by_name.get(g.get("name", "")), t.by_name.get(g.get("other", ""))
        if ("name" in g and a is None and kind != "yesno") or ("other" in g and b is None):
            return None
        if kind == "count":
            return _Asks({("count", "all"): {len(objs)}}, str(len(objs)))
        if kind in ("colour", "shape"):
            attr, other = ("shape", "colour") if kind == "colour" else ("colour", "shape")
            found = [getattr(o, other) for o in objs if getattr(o, attr) == g[attr]]
            return _Asks({(kind, g[attr]): set(found)}, found[0]) if len(found) == 1 else None
        if kind == "yesno":
            return _Asks({("exists", g["name"]): {a is not None}}, _yes(a is not None))
        if kind == "relation":
            other = t.neighbour(a, g["side"])
            return _Asks({("neighbour", g["side"], a.name): {other}}, other)
        if kind == "size":
            return _Asks({("size", a.name): {a.size}}, a.size)
        if kind in ("count_colour", "count_shape"):
            what = g.get("colour") or singular(g["shapes"])
            k = len(t.matching(what))
            return _Asks({("count", what): {k} | ({"all"} if k == len(objs) else set())}, str(k))
        if kind == "larger":
            if a.size == b.size:
                return None
            big = a if a.size == "large" else b
            key, value = pair_claim("larger", big.name, (b if big is a else a).name, "larger", SIZE_FLIP)
            return _Asks({key: {value}}, big.name)
        if kind == "position":
            return _Asks({("position", a.name): {self.builder.where(a)}}, self.builder.where(a))
        if kind == "extreme":
            o = objs[0] if g["side"] == "left" else objs[-1]
            return _Asks({("extreme", g["side"]): {o.name}}, o.name)
        if kind == "row":
            if g["row"] not in t.rows:
                return None
            inside = [o.name for o in objs if o.row_name == g["row"]]
            if not inside:
                return _Asks({("row_count", g["row"]): {0}}, "nothing")
            return _Asks({("row_of", n): {g["row"]} for n in inside}, join_words(inside))
        if kind == "side":
            actual = "left" if a.column < b.column else "right"
            key, value = pair_claim("side", a.name, b.name, actual, SIDE_FLIP)
            return _Asks({key: {value}}, _yes(actual == g["side"]))
        if kind in ("above", "higher_than"):
            key, _ = pair_claim("vertical", a.name, b.name, "above", VERTICAL_FLIP)
            words = t.vertical(a, b) if key[1] == a.name else t.vertical(b, a)
            return _Asks({key: words}, _yes(a.row < b.row))
        if kind == "higher":
            if a.row == b.row:
                return None
            top, low = (a, b) if a.row < b.row else (b, a)
            key, value = pair_claim("vertical", top.name, low.name, "above", VERTICAL_FLIP)
            return _Asks({key: {value}}, top.name)
        if kind == "removal":
            return _Asks({("remain",): {len(objs) - 1}}, str(len(objs) - 1))
        if kind == "count_size":
            chosen = [o for o in objs if o.size == g["size"]]
            facts = {("count", g["size"]): {len(chosen)} | ({"all"} if chosen == objs else set())}
            facts.update({("size", o.name): {g["size"]} for o in chosen})
            return _Asks(facts, str(len(chosen)), checks={("that_makes",): {len(chosen)}})
        if kind == "rightmost":
            left, right = objs[0], objs[-1]
            if left is right:
                return None
            key, _ = pair_claim("larger", right.name, left.name, "larger", SIZE_FLIP)
            words = t.larger(right, left) if key[1] == right.name else t.larger(left, right)
            return _Asks({("extreme", "right"): {right.name}, key: words})
        if kind == "same_colour":
            same = len({o.colour for o in objs}) == 1
            return _Asks({("same_colour",): {same}}, _yes(same))
        if kind == "more_than":
            x, y = singular(m[1]), singular(m[2])
            more = len(t.matching(x)) > len(t.matching(y))
            return _Asks({("more", x, y): {more}}, _yes(more))
        if kind == "between":
            inside = t.between(a, b)
            return _Asks({("between",) + tuple(sorted((a.name, b.name))): {inside}, ("n_between",): {len(inside)}},
                         str(len(inside)))
        if kind == "highest":
            top = t.highest()
            return _Asks({("highest",): {top}}, join_words([o.name for o in objs if o.name in top]))
        raise AssertionError(f"no facts for question kind {kind!r}")

    # -- scoring ---------------------------------------------------------------------------------------------------

    def score(self, answer: str, question: str, asks: _Asks, truth: _Truth) -> tuple[float, str]:
        """(score 1-10, a one-line account of it) for one answer."""
        claims = self.patterns.claims(answer, question)
        short = self._short_answer(answer, asks)
        if short is not None:
            claims.add((("answer",), short))
        right, wrong, unchecked = [], [], 0
        hallucinated = []
        for claim in sorted(claims, key=repr):
            verdict = truth.check(claim)
            if verdict is None:
                key, value = claim
                if key == ("answer",):
                    verdict = value == short_form(asks.short)
                elif key in asks.facts or key in asks.checks:
                    verdict = value in asks.facts.get(key, asks.checks.get(key))
            if verdict is None:
                unchecked += 1
            elif verdict:
                right.append(claim)
            else:
                wrong.append(claim)
                if claim[0][0] == "exists" and claim[1] is True:
                    hallucinated.append(claim[0][1])
        false = ""
        if hallucinated:
            false += f", not in the image: {', '.join(hallucinated)}"
        if wrong:
            false += f"; false: {'; '.join(describe(c) for c in wrong[:4])}"
        if not right:
            return 1.0, f"no true claim ({len(wrong)} false){false} -> 1"
        if asks.short is not None and short == short_form(asks.short):
            coverage = 1.0
        elif asks.facts:
            said = {key for key, value in right if value in asks.facts.get(key, ())}
            coverage = len(said) / len(asks.facts)
        else:
            coverage = 1.0  # a question it does not recognise: precision alone
        named = {key[1] for key, value in claims if key[0] == "exists" and value is True}
        chair = len(hallucinated) / len(named) if named else 0.0
        precision = len(right) / (len(right) + len(wrong)) * (1 - chair / 2)
        score = round(1 + 9 * coverage * precision, 1)
        return score, f"coverage {coverage:.2f}, {len(right)} true / {len(wrong)} false claims{false} -> {score:g}"

    @staticmethod
    def _short_answer(answer: str, asks: _Asks) -> str | None:
        """The answer as a short answer, normalised like the exact ones ("Three." -> "3", "The blue square" ->
        "blue square"); for yes/no questions the first word or the last "so yes / so no". None if not one."""
        if asks.short is None:
            return None
        text = normalise_text(answer).strip().rstrip(".!")
        if asks.short in ("yes", "no"):
            if m := re.match(r"(yes|no)\b", text):
                return m[1]
            conclusions = re.findall(r"\bso (yes|no)\b", text)
            return conclusions[-1] if conclusions else None
        form = short_form(text)
        if not form or not set(form.split()) <= SHORT_WORDS:
            return None  # a sentence, or words outside the world's: read by the patterns instead
        return form
