"""Images for the vision tower: read, convert to RGB, and preprocess as the tower's own eval transform does.

Two ways to fit an image into the tower's square input (`image_aspect_ratio`, as the official training code calls
it): "crop", CLIP's eval transform (resize the short side with bicubic, centre crop, normalise), which the paper
used; and "pad", LLaVA-1.5's `--image_aspect_ratio pad`: first pad the image to a square with CLIP's mean colour,
image centred (the official `expand2square`), then the same CLIP transform, so nothing at the edges is cut off.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from open_clip import image_transform
from PIL import Image
from torchvision import transforms

# OpenAI CLIP's pixel statistics; our toy tower is trained with the same normalisation
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# the official pad colour: `tuple(int(x * 255) for x in image_processor.image_mean)`, truncated, not rounded
PAD_COLOUR = tuple(int(x * 255) for x in CLIP_MEAN)  # (122, 116, 104)
ASPECT_RATIOS = ("crop", "pad")

Transform = Callable[[Image.Image], torch.Tensor]


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB, as the official code's `.convert("RGB")` does, minus two traps.

    Alpha is dropped, not composited (as the official code and CLIP's own preprocessing do). Palette images with
    transparency go through RGBA, which gives the same colours without Pillow's warning. 16-bit greyscale ("I;16",
    e.g. 16-bit PNGs) is scaled to 8 bits first: a plain convert clips every value above 255 to white.
    """
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I;16"):
        im = im.point(lambda v: v / 256, "F")
    if im.mode == "F":  # already scaled to 0..255 above; "L" rounds and clips
        im = im.convert("L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return im.convert("RGB")


class ExpandToSquare:
    """Pad a PIL image to a square of its longer side with `fill`, the image centred (the official
    `expand2square`: offset (longer - shorter) // 2). A class, not a lambda, so DataLoader workers can pickle it."""

    def __init__(self, fill: tuple[int, int, int]) -> None:
        self.fill = fill

    def __call__(self, im: Image.Image) -> Image.Image:
        w, h = im.size
        if w == h:
            return im
        side = max(w, h)
        out = Image.new(im.mode, (side, side), self.fill)
        out.paste(im, ((side - w) // 2, (side - h) // 2))
        return out


def clip_transform(image_size: int, aspect_ratio: str = "crop") -> Transform:
    """RGB PIL image -> normalised (3, image_size, image_size) tensor, the tower's eval preprocessing.

    "crop": resize the short side to `image_size` (bicubic), centre crop, normalise with CLIP's mean and std.
    "pad": pad to a square with `PAD_COLOUR` first (LLaVA-1.5), so the crop keeps the whole image.
    """
    clip = image_transform(image_size, is_train=False, mean=CLIP_MEAN, std=CLIP_STD)
    if aspect_ratio == "crop":
        return clip
    if aspect_ratio == "pad":
        return transforms.Compose([ExpandToSquare(PAD_COLOUR), clip])
    raise ValueError(f"image_aspect_ratio must be one of {ASPECT_RATIOS}, got {aspect_ratio!r}")


def load_image(folder: Path, name: str, record: str, transform: Transform) -> torch.Tensor:
    path = folder / name
    try:
        with Image.open(path) as im:
            return transform(to_rgb(im))
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(f"record {record}: cannot read image {path}: {exc}") from None


class ImageCache:
    """Decoded, transformed images kept in memory after their first use (`enabled=False`: always read from disk).

    Worth it when every image fits in memory and is read many times, as in the toy world (6000 images of
    3x32x32 floats are 74 MB, and re-decoding PNGs costs more than a toy training step's compute); not for COCO.
    """

    def __init__(self, folder: Path, transform: Transform, enabled: bool) -> None:
        self.folder, self.transform, self.enabled = folder, transform, enabled
        self.images: dict[str, torch.Tensor] = {}

    def get(self, name: str, record: str) -> torch.Tensor:
        if not self.enabled:
            return load_image(self.folder, name, record, self.transform)
        if name not in self.images:
            self.images[name] = load_image(self.folder, name, record, self.transform)
        return self.images[name]
