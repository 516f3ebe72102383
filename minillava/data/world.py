"""A toy visual world: scenes of simple coloured shapes, their images and their text.

The LLaVA paper turned COCO images into *symbolic representations* (captions +
one bounding box per object) that a text-only GPT-4 could read. This module
plays the role of COCO: it makes scenes, renders them to small RGB images, and
writes the same two kinds of symbolic text (captions and boxes).

Layout rules keep every question about a scene unambiguous:
- the image is a grid of ``n_columns`` columns x ``n_rows`` rows (4 x 4 by default: on a 32 px image every
  cell is one 8 px patch of the toy CLIP, so each object is seen whole by exactly one visual token);
- each object sits in its own column, so "left of" / "right of" is never a tie;
- (colour, shape) pairs are distinct, so "the red circle" names one object.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from dataclasses import dataclass

from PIL import Image, ImageDraw

from minillava.data.context import format_context, join_words

SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow")
SIZES = ("small", "large")

# Object side length as a fraction of the cell's shorter side (rounded to an odd
# number of pixels). Far apart on purpose: at 32 px a large shape is 7 px and a
# small one 5 px. A reader of the boxes alone tells them apart by comparing the
# box width to SIZE_THRESHOLD x the cell side.
LARGE_FRACTION = 0.875
SMALL_FRACTION = 0.55
SIZE_THRESHOLD = (LARGE_FRACTION + SMALL_FRACTION) / 2

# Saturated colours on a light background: each differs strongly from the
# background in at least one channel, so even a 4 px shape stands out.
RGB = {
    "red": (220, 30, 30),
    "green": (20, 160, 40),
    "blue": (30, 70, 230),
    "yellow": (235, 190, 0),
}
BACKGROUND = (240, 240, 235)

# Names of columns, left to right, for each supported grid width. Used for
# "Where is ...?" answers such as "top left" or "lower centre right".
COLUMN_NAMES = {
    1: ("centre",),
    2: ("left", "right"),
    3: ("left", "centre", "right"),
    4: ("left", "centre left", "centre right", "right"),
    5: ("left", "centre left", "centre", "centre right", "right"),
}

# Names of rows, top to bottom, for each supported grid height.
ROW_NAMES = {
    1: ("middle",),
    2: ("top", "bottom"),
    3: ("top", "middle", "bottom"),
    4: ("top", "upper", "lower", "bottom"),
}

NUMBER_WORDS = ("no", "one", "two", "three", "four", "five")
SHAPE_PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles"}


@dataclass(frozen=True)
class WorldConfig:
    image_size: int = 32
    n_columns: int = 4
    # 4, not 3: with 3 rows (10.7 px each) most objects straddle two of the toy CLIP's 8 px patch rows, and a
    # visual token then holds half of one shape, and counting suffers
    # (docs/experiments.md, "How the default got to 0.70")
    n_rows: int = 4
    min_objects: int = 1
    max_objects: int = 4

    def __post_init__(self) -> None:
        if self.n_columns not in COLUMN_NAMES:
            raise ValueError(f"n_columns must be in 1..{max(COLUMN_NAMES)}, got {self.n_columns}")
        if self.n_rows not in ROW_NAMES:
            raise ValueError(f"n_rows must be in 1..{max(ROW_NAMES)}, got {self.n_rows}")
        # A cell narrower than 6 px cannot hold a small and a large shape that differ.
        if min(self.image_size / self.n_columns, self.image_size / self.n_rows) < 6:
            raise ValueError(
                f"image_size={self.image_size} is too small for n_columns={self.n_columns}, n_rows={self.n_rows}: "
                "each cell needs at least 6 px"
            )
        cell = _cell_side(self)
        small, large = object_side_px("small", self) / cell, object_side_px("large", self) / cell
        if not small < SIZE_THRESHOLD < large:
            raise ValueError(
                f"image_size={self.image_size} with n_columns={self.n_columns} rounds small and "
                f"large shapes to {small:.2f} and {large:.2f} of a cell, not on either side of "
                f"SIZE_THRESHOLD={SIZE_THRESHOLD:.2f}; pick another image_size"
            )
        if self.min_objects < 1:
            raise ValueError(f"min_objects must be >= 1, got {self.min_objects}")
        if self.max_objects < self.min_objects:
            raise ValueError(
                f"max_objects ({self.max_objects}) must be >= min_objects ({self.min_objects})"
            )
        if self.max_objects > self.n_columns:
            raise ValueError(
                f"max_objects ({self.max_objects}) must be <= n_columns ({self.n_columns}): "
                "every object needs its own column"
            )
        if self.max_objects > len(COLOURS) * len(SHAPES):
            raise ValueError(f"max_objects must be <= {len(COLOURS) * len(SHAPES)} (distinct names)")


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    column: int  # 0 = leftmost
    row: int  # 0 = top; names in ROW_NAMES[n_rows]
    box: tuple[float, float, float, float]  # normalised x1, y1, x2, y2

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    id: str
    seed: int
    objects: tuple[SceneObject, ...]  # sorted left to right


def column_names(n_columns: int) -> tuple[str, ...]:
    return COLUMN_NAMES[n_columns]


def row_names(n_rows: int) -> tuple[str, ...]:
    return ROW_NAMES[n_rows]


def position_phrase(row: int, column: int, n_columns: int, n_rows: int) -> str:
    """E.g. "top left", "lower centre right": row word then column word."""
    return f"{row_names(n_rows)[row]} {column_names(n_columns)[column]}"


def _cell_side(cfg: WorldConfig) -> float:
    return min(cfg.image_size / cfg.n_columns, cfg.image_size / cfg.n_rows)


def object_side_px(size: str, cfg: WorldConfig) -> int:
    cell = _cell_side(cfg)
    target = (LARGE_FRACTION if size == "large" else SMALL_FRACTION) * cell
    # The nearest odd number of pixels: an odd side puts a triangle's apex and a
    # circle's centre on a pixel, so small shapes stay symmetric.
    side = 2 * round((target - 1) / 2) + 1
    side = min(side, math.floor(cell) - 1)  # leave the 1 px gutter (see make_scene)
    return side if side % 2 else side - 1


def _cell_px(index: int, n_cells: int, image_size: int) -> tuple[int, int]:
    # Whole-pixel bounds of a cell, so shapes are drawn crisply on the pixel grid.
    return math.ceil(index * image_size / n_cells), math.floor((index + 1) * image_size / n_cells)


def make_scene(scene_id: str, seed: int, cfg: WorldConfig = WorldConfig()) -> Scene:
    rng = random.Random(seed)
    n = rng.randint(cfg.min_objects, cfg.max_objects)
    columns = sorted(rng.sample(range(cfg.n_columns), n))
    pairs = rng.sample([(c, s) for c in COLOURS for s in SHAPES], n)
    objects = []
    for column, (colour, shape) in zip(columns, pairs):
        row = rng.randrange(cfg.n_rows)
        size = rng.choice(SIZES)
        side = object_side_px(size, cfg)
        cx0, cx1 = _cell_px(column, cfg.n_columns, cfg.image_size)
        cy0, cy1 = _cell_px(row, cfg.n_rows, cfg.image_size)
        # Jitter anywhere the shape fits inside its cell, keeping a 1 px gutter on
        # the right so neighbouring shapes never touch and merge into one blob.
        x = rng.randint(cx0, cx1 - side - 1)
        y = rng.randint(cy0, cy1 - side)
        s = cfg.image_size
        box = (round(x / s, 3), round(y / s, 3), round((x + side) / s, 3), round((y + side) / s, 3))
        objects.append(SceneObject(shape, colour, size, column, row, box))
    return Scene(scene_id, seed, tuple(objects))


def scene_seed(seed: int, split: str, index: int) -> int:
    # hashlib, not hash(): Python salts str hashes per process, we need the same
    # seeds on every run. 63 bits make a collision across splits vanishingly rare.
    digest = hashlib.sha256(f"{seed}/{split}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def make_scenes(split: str, n: int, seed: int = 0, cfg: WorldConfig = WorldConfig()) -> list[Scene]:
    return [make_scene(f"{split}-{i:06d}", scene_seed(seed, split, i), cfg) for i in range(n)]


def render(scene: Scene, cfg: WorldConfig = WorldConfig()) -> Image.Image:
    s = cfg.image_size
    image = Image.new("RGB", (s, s), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        # Box edges back to whole pixels; PIL's boxes include their last pixel, hence -1.
        x0, y0, x1, y1 = (round(v * s) for v in obj.box)
        x1, y1 = x1 - 1, y1 - 1
        colour = RGB[obj.colour]
        if obj.shape == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif obj.shape == "square":
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:  # upward triangle: apex at the top centre, base along the bottom
            draw.polygon([(x0, y1), ((x0 + x1) / 2, y0), (x1, y1)], fill=colour)
    return image


def _tally(values: list[str]) -> list[tuple[str, int]]:
    """(value, count) pairs, most common first, ties alphabetical: stable wording."""
    return sorted(Counter(values).items(), key=lambda kv: (-kv[1], kv[0]))


def captions(scene: Scene, cfg: WorldConfig = WorldConfig()) -> list[str]:
    """3-5 short captions from different perspectives, like COCO's five per image.

    Always: a count, a left-to-right listing and one salient object; plus up to
    two of: grouping by colour, by shape, by size. Deterministic per scene.
    """
    rng = random.Random(f"captions/{scene.seed}")
    objs = scene.objects
    n = len(objs)
    names = [f"a {o.name}" for o in objs]

    if n == 1:
        count = rng.choice(
            [f"A single {objs[0].name} on a plain background.", f"A picture of one {objs[0].name}."]
        )
        listing = f"The image shows only {names[0]}."
    else:
        count = rng.choice(
            [
                f"{NUMBER_WORDS[n].capitalize()} shapes on a plain background.",
                f"A picture of {NUMBER_WORDS[n]} simple shapes.",
                f"An image with {NUMBER_WORDS[n]} coloured shapes.",
            ]
        )
        listing = rng.choice(
            [f"From left to right: {join_words(names)}.", f"Left to right, there is {join_words(names)}."]
        )

    star = rng.choice(objs)  # the "salient" object this caption is about
    where = position_phrase(star.row, star.column, cfg.n_columns, cfg.n_rows)
    salient = rng.choice(
        [f"A {star.size} {star.name} at the {where}.", f"The {star.name} is {star.size} and sits at the {where}."]
    )

    extras = []
    if n == 1:
        extras += [f"The only object is {star.colour}.", f"The shape is {star.size}."]
    else:
        parts = [f"{NUMBER_WORDS[k]} {'is' if k == 1 else 'are'} {c}" for c, k in _tally([o.colour for o in objs])]
        extras.append(f"Of the shapes, {join_words(parts)}.")
        parts = [f"{NUMBER_WORDS[k]} {'is' if k == 1 else 'are'} {z}" for z, k in _tally([o.size for o in objs])]
        extras.append(f"By size, {join_words(parts)}.")
    parts = [f"{NUMBER_WORDS[k]} {s if k == 1 else SHAPE_PLURALS[s]}" for s, k in _tally([o.shape for o in objs])]
    extras.append(f"The image contains {join_words(parts)}.")

    return [count, listing, salient] + rng.sample(extras, rng.randint(0, 2))


def symbolic_context(scene: Scene, cfg: WorldConfig = WorldConfig()) -> str:
    """The paper's symbolic representation: captions, blank line, one box per object."""
    return format_context(captions(scene, cfg), [(o.name, o.box) for o in scene.objects])
