"""The right answer to a teacher's question, computed from the Scene objects, never from the context text.

Shared by the question and teacher tests: ``classify`` names the kind of a question by its phrasing, ``truth``
answers it from the scene, ``conveys`` checks that a full sentence states a short answer.
"""

from __future__ import annotations

import re

from minillava.data.questions import PHRASINGS
from minillava.data.world import COLOURS, SHAPE_PLURALS, SHAPES, WorldConfig, row_names

ROWS = row_names(WorldConfig().n_rows)
COLUMN_WORDS = ("left", "centre left", "centre right", "right")


def by_name(scene):
    return {o.name: o for o in scene.objects}


_NAME = f"(?:{'|'.join(COLOURS)}) (?:{'|'.join(SHAPES)})"
SLOTS = {
    "name": _NAME,
    "other": _NAME,
    "shape": "|".join(SHAPES),
    "shapes": "|".join(SHAPE_PLURALS.values()),
    "colour": "|".join(COLOURS),
    "side": "left|right",
    "row": "|".join(ROWS),
}


def pattern(phrasing: str) -> re.Pattern:
    """A phrasing as a regular expression whose named groups are its slots."""
    escaped = re.escape(phrasing)
    for slot, values in SLOTS.items():
        escaped = escaped.replace(re.escape("{" + slot + "}"), f"(?P<{slot}>{values})")
    return re.compile(f"^{escaped}$")


PATTERNS = {kind: [pattern(p) for p in phrasings] for kind, phrasings in PHRASINGS.items()}


def classify(question: str) -> tuple[str, re.Match]:
    """The one kind whose phrasing matches the question, and the match."""
    found = [(k, m) for k, ps in PATTERNS.items() for p in ps if (m := p.match(question))]
    assert len(found) == 1, (question, [k for k, _ in found])
    return found[0]


def _names(objs) -> str:
    names = [o.name for o in objs]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def truth(scene, question: str) -> tuple[str, str]:
    """The kind of a question and its right answer, computed from the Scene objects, not from the text."""
    kind, m = classify(question)
    objs, names = scene.objects, by_name(scene)
    a, b = names.get(m.groupdict().get("name")), names.get(m.groupdict().get("other"))
    if kind == "count":
        return kind, str(len(objs))
    if kind == "colour":
        (o,) = [o for o in objs if o.shape == m["shape"]]
        return kind, o.colour
    if kind == "shape":
        (o,) = [o for o in objs if o.colour == m["colour"]]
        return kind, o.shape
    if kind == "yesno":
        return kind, "yes" if m["name"] in names else "no"
    if kind == "relation":
        side = [o for o in objs if (o.column < a.column if m["side"] == "left" else o.column > a.column)]
        return kind, min(side, key=lambda o: abs(o.column - a.column)).name
    if kind == "position":
        return kind, f"{ROWS[a.row]} {COLUMN_WORDS[a.column]}"
    if kind == "size":
        return kind, a.size
    if kind == "count_colour":
        return kind, str(sum(o.colour == m["colour"] for o in objs))
    if kind == "count_shape":
        return kind, str(sum(SHAPE_PLURALS[o.shape] == m["shapes"] for o in objs))
    if kind == "larger":
        assert a.size != b.size
        return kind, (a if a.size == "large" else b).name
    if kind == "extreme":
        column = min if m["side"] == "left" else max
        return kind, column(objs, key=lambda o: o.column).name
    if kind == "row":
        inside = [o for o in objs if ROWS[o.row] == m["row"]]
        return kind, _names(inside) if inside else "nothing"
    if kind == "side":
        return kind, "yes" if (a.column < b.column) == (m["side"] == "left") else "no"
    if kind == "above":
        return kind, "yes" if a.row < b.row else "no"
    if kind == "higher":
        assert a.row != b.row
        return kind, (a if a.row < b.row else b).name
    raise AssertionError(kind)


def conveys(sentence: str, answer: str) -> bool:
    """Whether a full-sentence answer states the short answer."""
    s = sentence.lower()
    if answer == "0":
        return " no " in f" {s} "
    return all(part in s for part in answer.replace(" and ", ", ").split(", "))
