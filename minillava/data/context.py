"""The paper's symbolic representation of an image: what the text-only teacher reads instead of pixels.

LLaVA showed GPT-4 each COCO image as text of two kinds (paper, Section 3):
- captions: several sentences describing the same image from different perspectives;
- boxes: one line per object, ``category: [x1, y1, x2, y2]`` with coordinates normalised to [0, 1]
  (top-left and bottom-right corner), three decimals.

Captions come first, then a blank line, then the boxes; this module writes and reads that text for every
source (toy scenes in ``world.py``, COCO-style annotation files in ``coco.py``), so all teachers see one format.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

Box = tuple[float, float, float, float]  # normalised x1, y1, x2, y2

# "name: [x1, y1, x2, y2]"; the name may hold spaces ("traffic light"), never a colon or bracket
_BOX_LINE = re.compile(r"^([^:\[\]]+): \[(-?\d+(?:\.\d+)?), (-?\d+(?:\.\d+)?), (-?\d+(?:\.\d+)?), (-?\d+(?:\.\d+)?)\]$")


def join_words(items: list[str]) -> str:
    """Natural-language list: "a", "a and b", "a, b and c"."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def format_box(name: str, box: Box) -> str:
    """``red circle: [0.125, 0.300, 0.400, 0.575]``."""
    if ":" in name or "[" in name or "]" in name or "\n" in name or not name.strip():
        raise ValueError(f"object name {name!r} cannot appear in a box line (no ':', '[', ']' or newline)")
    return f"{name}: [{', '.join(f'{v:.3f}' for v in box)}]"


def format_context(captions: Sequence[str], boxes: Sequence[tuple[str, Box]]) -> str:
    """Captions, one per line, a blank line, then one box line per object (none if there are no boxes)."""
    lines = [" ".join(c.split()) for c in captions]  # one caption, one line: newlines inside would split it
    if not lines or not all(lines):
        raise ValueError(f"a context needs at least one non-empty caption, got {list(captions)!r}")
    if any("[" in line for line in lines):  # readers tell box lines by their bracket
        raise ValueError(f"captions may not contain '[': {lines!r}")
    text = "\n".join(lines)
    if boxes:
        text += "\n\n" + "\n".join(format_box(name, box) for name, box in boxes)
    return text


def caption_lines(text: str) -> list[str]:
    """The free-text captions: the lines before the first blank line."""
    return [line for line in text.split("\n\n")[0].splitlines() if line.strip() and "[" not in line]


def parse_box_line(line: str) -> tuple[str, Box]:
    """``name: [x1, y1, x2, y2]`` -> (name, box); a malformed line raises ValueError quoting it."""
    m = _BOX_LINE.match(line.strip())
    if m is None:
        raise ValueError(f"bad box line: {line!r}")
    x1, y1, x2, y2 = box = tuple(float(v) for v in m.group(2, 3, 4, 5))
    # a box may be a line or a point (tiny COCO objects round to zero width), never inverted or outside
    if not (0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1):
        raise ValueError(f"box out of [0, 1] or inverted in line: {line!r}")
    return m.group(1), box


def box_lines(text: str) -> list[tuple[str, Box]]:
    """(name, box) for every line holding "[" (captions never do), in order."""
    return [parse_box_line(line) for line in text.splitlines() if "[" in line]


def normalise_xywh(x: float, y: float, w: float, h: float, width: float, height: float) -> Box:
    """A COCO pixel box [x, y, w, h] -> normalised [x1, y1, x2, y2], clipped to the image, 3 decimals."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")

    def clip(v: float) -> float:
        return round(min(max(v, 0.0), 1.0), 3)

    return clip(x / width), clip(y / height), clip((x + w) / width), clip((y + h) / height)
