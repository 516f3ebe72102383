"""Images for the vision tower: read, convert to RGB, and preprocess as the tower's own eval transform does.

Two ways to fit an image into the tower's square input (`image_aspect_ratio`, as the official training code calls
it): "crop", CLIP's eval transform (resize the short side with bicubic, centre crop, normalise), which the paper
used; and "pad", LLaVA-1.5's `--image_aspect_ratio pad`: first pad the image to a square with CLIP's mean colour,
image centred (the official `expand2square`), then the same CLIP transform, so nothing at the edges is cut off.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
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
    """Any Pillow mode -> RGB, as the official code's `.convert("RGB")` does, minus its traps.

    Alpha is dropped, not composited (as the official code and CLIP's own preprocessing do). Palette images with
    transparency go through RGBA, which gives the same colours without Pillow's warning. Images of more than
    8 bits are scaled to 8 bits first, where a plain convert clips every value above 255 to white:
    16-bit greyscale ("I;16", "I;16B", ...; 16-bit PNGs and TIFFs) is divided by 256; 32-bit integers ("I")
    are read as 8-bit if every value fits in 0..255, else as 16-bit, else scaled by their maximum; floats ("F")
    are read as 0..1 if every value fits there, else as 0..255 (clipped).
    """
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I") or im.mode == "F":
        im = Image.fromarray(_to_uint8(im.mode, np.asarray(im)))
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode == "La":  # premultiplied alpha: Pillow converts it to nothing but "LA"
        im = im.convert("LA")
    return im.convert("RGB")


def _to_uint8(mode: str, x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    hi = float(x.max()) if x.size else 0.0
    if mode.startswith("I;16"):
        x = x / 256
    elif mode == "I" and hi > 255:
        x = x / 256 if hi <= 65535 else x * (255 / hi)
    elif mode == "F" and float(x.min(initial=0.0)) >= 0 and hi <= 1:
        x = x * 255
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


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


class BadImageError(FileNotFoundError):
    """An image that is missing, empty, not an image, corrupt, truncated or too large to decode; the message names
    the file and the record. A FileNotFoundError, as the data loaders raised before it existed."""


def load_image(folder: Path, name: str, record: str, transform: Transform) -> torch.Tensor:
    path = folder / name
    try:
        with Image.open(path) as im:
            return transform(to_rgb(im))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise BadImageError(f"record {record}: cannot read image {path}: {_why(exc)}") from None


def check_image(path: Path, record: str) -> None:
    """Raise BadImageError naming `path` and `record` unless the image can be opened and its file checks out.

    Cheap enough for every image at data set-up: Pillow's `verify()` reads the whole file but decodes no pixels
    (PNG: every chunk's checksum, so a truncated or corrupt file fails); a JPEG, which `verify()` does not check,
    is decoded at 1/8 scale (its DCT draft mode), which finds truncation and corrupt data. Pillow's
    decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`) raises here, naming the file; an image between the
    warning and the error limit is warned about, named, and kept.
    """
    if not path.is_file():
        raise BadImageError(f"record {record}: image {path} not found")
    if path.stat().st_size == 0:
        raise BadImageError(f"record {record}: image {path} is an empty file (0 bytes)")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                fmt, size = im.format, im.size
                im.verify()
        for w in caught:
            if issubclass(w.category, Image.DecompressionBombWarning):
                warnings.warn(f"record {record}: image {path}: {w.message}", Image.DecompressionBombWarning,
                              stacklevel=2)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if fmt in ("JPEG", "MPO"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    im.draft(im.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
                    im.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise BadImageError(f"record {record}: cannot read image {path}: {_why(exc)}") from None


def _why(exc: BaseException) -> str:
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not an image Pillow can read (unknown format or not an image file)"
    if isinstance(exc, Image.DecompressionBombError):
        return f"too large to decode safely ({exc}; raise PIL.Image.MAX_IMAGE_PIXELS to allow it)"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


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
