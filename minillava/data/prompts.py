"""The prompts a chat teacher receives: per response type, a system message and few-shot examples.

The paper's structure (LLaVA, Section 3 and appendix): the teacher is told it sees one image, that the image
comes to it as captions and boxes, to answer only what that content supports, and to speak as if looking at the
image; a few hand-written examples (context -> response) follow as earlier chat turns; then the new context.
The words below are ours. The examples are real everyday scenes, like the paper's COCO examples, written in the
same context format every source produces (``context.format_context``).

Replies come back in the paper's block format::

    Question:
    How many plates are on the table?
    ===
    Answer:
    There are two plates, ...
    ===

(detail descriptions are plain text). ``format_reply`` writes that format for the examples and ``parse_reply``
reads it (and the one-JSON-object-per-line format of the later LLaVA prompts), so the two cannot drift.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from minillava.constants import Turns
from minillava.data.context import format_context


class TeacherReplyError(ValueError):
    """A teacher's reply that cannot be turned into turns; the message quotes the start of the reply."""


_SEEING = (
    "You are an AI visual assistant, and you are looking at a single image. The image reaches you as text: first "
    "a few sentences, each describing the same image from a different point of view; then, if known, the objects "
    "in it, one per line, as `name: [x1, y1, x2, y2]`, a box whose numbers run from 0 to 1 and give its top-left "
    "and bottom-right corners (x grows to the right, y grows downwards; a name may occur on several lines, once "
    "per object)."
)
_AS_IF_SEEING = (
    "Speak as someone looking at the image: never mention sentences, captions, descriptions, boxes or coordinates, "
    "and never quote a number from a box; put positions into words such as \"on the left\", \"near the top\" or "
    "\"just behind the cup\"."
)
_BLOCKS = (
    'Write each question after a line "Question:" and each answer after a line "Answer:", and close each with a '
    'line "===". Write nothing else.'
)

SYSTEM = {
    "conv": "\n\n".join([
        _SEEING,
        "Write a conversation between a person who asks about this image and you, who answer. Vary the questions: "
        "what the objects are, how many there are, their colours and other attributes, where they are in the image "
        "and relative to each other, how they compare, and what is going on. Include at least one question that "
        "needs reasoning over several things you see. Ask only questions that the image answers with certainty; "
        "leave out anything it does not show clearly.",
        _AS_IF_SEEING,
        _BLOCKS,
    ]),
    "detail": "\n\n".join([
        _SEEING,
        "Describe the image in detail: what is there and how many of each thing, where the objects are in the image "
        "and where they are relative to each other. Cover every object. State only what the image supports.",
        _AS_IF_SEEING,
        "Write only the description, in plain paragraphs.",
    ]),
    "complex": "\n\n".join([
        _SEEING,
        "Ask one question about the image that takes reasoning to answer, and answer it. Go beyond what is in the "
        "picture: the question should need one first to understand what the image shows and then to reason about "
        "it with common sense or background knowledge, for instance why something is happening or how to help "
        "someone in the scene. Do not put the details the answer depends on into the question. In the answer, first "
        "name the things in the image that matter, then reason step by step, and end with a clear conclusion.",
        _AS_IF_SEEING,
        'Write the question after a line "Question:" and the answer after a line "Answer:", and close each with a '
        'line "===". Write nothing else.',
    ]),
}


@dataclass(frozen=True)
class Example:
    """One few-shot example: a context and the response the teacher should give to it."""

    context: str
    turns: tuple[tuple[str, str], ...]  # for "detail": one turn, question "" (only the description is asked for)


_BREAKFAST = format_context(
    [
        "A breakfast table set with two plates of pancakes, a cup of coffee and a bowl of oranges.",
        "Two plates of pancakes on a wooden table next to a cup.",
        "A kitchen table with food and a vase of flowers in front of a window.",
        "Pancakes, fruit and coffee laid out on a table in the morning light.",
        "A wooden dining table with breakfast for two.",
    ],
    [
        ("dining table", (0.000, 0.412, 1.000, 1.000)),
        ("plate", (0.081, 0.561, 0.402, 0.803)),
        ("plate", (0.553, 0.588, 0.889, 0.842)),
        ("cup", (0.431, 0.497, 0.536, 0.634)),
        ("bowl", (0.392, 0.418, 0.607, 0.522)),
        ("orange", (0.430, 0.405, 0.489, 0.461)),
        ("orange", (0.502, 0.398, 0.566, 0.457)),
        ("vase", (0.731, 0.152, 0.842, 0.475)),
        ("window", (0.552, 0.000, 1.000, 0.398)),
    ],
)

_STREET = format_context(
    [
        "A red double-decker bus stopped on a city street.",
        "A bus on a busy road with two cyclists beside it.",
        "Two people on bicycles wait next to a red bus at a crossing.",
        "A city street with a bus, bicycles and a traffic light.",
        "A large red bus waits at a traffic light while cyclists wait too.",
    ],
    [
        ("bus", (0.215, 0.180, 0.702, 0.811)),
        ("bicycle", (0.731, 0.602, 0.874, 0.902)),
        ("bicycle", (0.052, 0.633, 0.188, 0.921)),
        ("person", (0.748, 0.402, 0.851, 0.846)),
        ("person", (0.071, 0.431, 0.172, 0.868)),
        ("traffic light", (0.893, 0.051, 0.941, 0.263)),
    ],
)

EXAMPLES: dict[str, tuple[Example, ...]] = {
    "conv": (
        Example(_BREAKFAST, (
            ("What meal is this table set for?",
             "It looks like breakfast: there are pancakes on two plates, a cup of coffee and a bowl of oranges on a "
             "wooden table."),
            ("How many plates are there?",
             "There are two plates, one on the left side of the table and one on the right."),
            ("What is between the two plates?",
             "A cup stands between the two plates, and just behind it there is a bowl with two oranges."),
            ("Where are the flowers?",
             "The flowers are in a vase on the right side of the table, in front of the window."),
            ("How many people is the table set for, and how can you tell?",
             "Most likely two. There are two plates, one on each side of the table, each with its own pancakes, which "
             "is how you would set a table for two people eating together. There is only one cup, so one of them may "
             "not have been served a drink yet."),
        )),
        Example(_STREET, (
            ("What colour is the bus?", "The bus is red, and it is a double-decker."),
            ("How many people are on bicycles?", "Two people are on bicycles, one on each side of the bus."),
            ("Where is the traffic light?",
             "The traffic light is high up at the right edge of the view, above the cyclist on the right."),
            ("Why are the bus and the cyclists standing still?",
             "They are most likely waiting for the light to change. The bus has stopped at a crossing, a traffic light "
             "is just ahead of it on the right, and the two cyclists are waiting beside the bus, so all of them are "
             "held by the same signal."),
        )),
    ),
    "detail": (
        Example(_STREET, ((
            "",
            "A red double-decker bus fills the middle of the picture, stopped on a city street. Two people on bicycles "
            "wait beside it, one on each side: one near the left edge of the view and one just to the right of the "
            "bus. Both cyclists are in the lower half of the image, level with the lower deck of the bus.\n\n"
            "High up at the right edge, a traffic light stands above the cyclist on the right, so the bus and the two "
            "riders seem to be waiting at a crossing for the light to change.",
        ),)),
    ),
    "complex": (
        Example(_BREAKFAST, ((
            "If two friends sat down here, what would each of them have, and what might they still need?",
            "Each friend would have a plate of pancakes: there are two plates, one on the left of the table and one "
            "on the right. Between them there is a single cup of coffee, so only one of them has a drink. The bowl of "
            "oranges in the middle can be shared. So each of them has pancakes, they can share the fruit, and they "
            "would probably need a second cup.",
        ),)),
        Example(_STREET, ((
            "What should the cyclist on the right be careful about when the traffic starts to move?",
            "The cyclist on the right is waiting close beside the bus, level with its lower deck. A double-decker is "
            "long and tall, and its driver sees little of what is right next to the bus; if the bus pulls away or "
            "turns, it can sweep across the space beside it. So the cyclist should keep some distance from the bus, "
            "stay where the driver can see them, and let the bus move off first if it might turn.",
        ),)),
    ),
}


@dataclass(frozen=True)
class Prompt:
    """The whole prompt of one response type."""

    kind: str
    system: str
    examples: tuple[Example, ...]

    def messages(self, context: str) -> list[dict[str, str]]:
        """Chat-completions messages: system, then each example as a user/assistant exchange, then `context`."""
        out = [{"role": "system", "content": self.system}]
        for ex in self.examples:
            out.append({"role": "user", "content": ex.context})
            out.append({"role": "assistant", "content": format_reply(self.kind, list(ex.turns))})
        out.append({"role": "user", "content": context})
        return out


PROMPTS: dict[str, Prompt] = {kind: Prompt(kind, SYSTEM[kind], EXAMPLES[kind]) for kind in SYSTEM}


def format_reply(kind: str, turns: Turns) -> str:
    """Turns as the teacher should write them: blocks for conv / complex, the bare description for detail."""
    if kind == "detail":
        return turns[0][1]
    return "\n".join(f"Question:\n{q}\n===\nAnswer:\n{a}\n===" for q, a in turns)


_MARKER = re.compile(r"^\s*\**\s*(question|answer)\s*\**\s*:\s*\**\s*", re.IGNORECASE)
_SEPARATOR = re.compile(r"^\s*={3,}\s*$")


def _blocks(text: str) -> list[tuple[str, str]]:
    """("question" | "answer", text) in order, from "Question:" / "Answer:" markers; "===" lines end a block."""
    blocks: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if _SEPARATOR.match(line):
            continue
        if m := _MARKER.match(line):
            blocks.append((m.group(1).lower(), [line[m.end() :]]))
        elif blocks:
            blocks[-1][1].append(line)
        elif line.strip():
            raise ValueError(f"text before the first Question: {line.strip()[:80]!r}")
    return [(label, "\n".join(lines).strip()) for label, lines in blocks]


def _json_lines(text: str) -> list[tuple[str, str]] | None:
    """Turns from one {"question": ..., "answer": ...} object per line, or None if the text is not that."""
    lines = [line for line in text.splitlines() if line.strip()]
    try:
        objs = [json.loads(line) for line in lines]
    except json.JSONDecodeError:
        return None
    if not objs or not all(isinstance(o, dict) and {"question", "answer"} <= set(o) for o in objs):
        return None
    return [(str(o["question"]).strip(), str(o["answer"]).strip()) for o in objs]


def parse_reply(kind: str, text: str) -> Turns:
    """A teacher's reply -> turns; raises TeacherReplyError, quoting the reply, when it does not fit the format.

    "detail": the whole reply is the description (its question is chosen by the caller).
    "conv": one or more question/answer pairs; "complex": exactly one.
    """
    reply = text.strip()

    def fail(why: str) -> TeacherReplyError:
        return TeacherReplyError(f"cannot parse the {kind!r} reply ({why}); it begins: {reply[:300]!r}")

    if kind not in PROMPTS:
        raise ValueError(f"unknown response kind {kind!r}; expected one of {sorted(PROMPTS)}")
    if not reply:
        raise fail("it is empty")
    if kind == "detail":
        if _MARKER.match(reply):
            raise fail("a description was asked for, not questions and answers")
        return [("", reply)]
    turns = _json_lines(reply)
    if turns is None:
        try:
            blocks = _blocks(reply)
        except ValueError as exc:
            raise fail(str(exc)) from None
        if not blocks:
            raise fail('no "Question:" / "Answer:" blocks')
        labels = [label for label, _ in blocks]
        if labels != ["question", "answer"] * (len(blocks) // 2) or len(blocks) % 2:
            raise fail(f"blocks must alternate question, answer; got {labels}")
        turns = [(blocks[i][1], blocks[i + 1][1]) for i in range(0, len(blocks), 2)]
    for i, (q, a) in enumerate(turns):
        if not q or not a:
            raise fail(f"pair {i} has an empty {'question' if not q else 'answer'}")
    if kind == "complex" and len(turns) != 1:
        raise fail(f"one question and answer expected, got {len(turns)}")
    return turns
