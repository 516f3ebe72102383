"""Symbolic contexts from COCO-style annotation files, as the paper built them for GPT-4.

A COCO-style folder, as a user brings it::

    folder/
      annotations/captions_<split>.json    {"images": [{"id", "file_name", "width", "height"}, ...],
                                            "annotations": [{"image_id", "caption"}, ...]}
      annotations/instances_<split>.json   {"images": [...], "annotations": [{"image_id", "bbox": [x, y, w, h],
                                            "category_id"}, ...], "categories": [{"id", "name"}, ...]}
      <split>/  or  images/                the image files

(the annotation files may also sit in the folder itself). Each image's context is all its captions, then one
box per instance, in the order of the instances file, normalised by the image's width and height.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minillava.data.context import format_context, normalise_xywh


@dataclass(frozen=True)
class CocoImage:
    id: str  # the file name's stem, e.g. "000000033471", as LLaVA's records name COCO images
    file_name: str
    context: str


def _one(folder: Path, pattern: str) -> Path:
    found = sorted({*folder.glob(pattern), *(folder / "annotations").glob(pattern)})
    if len(found) != 1:
        listed = ", ".join(str(p) for p in found) or "none"
        raise FileNotFoundError(f"{folder}: expected exactly one {pattern} in it or in its annotations/ folder, "
                                f"found {listed}; name the file with --captions / --instances")
    return found[0]


def find_annotation_files(folder: str | Path) -> tuple[Path, Path]:
    """(captions file, instances file) of a COCO-style folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"COCO folder {folder} does not exist")
    return _one(folder, "captions*.json"), _one(folder, "instances*.json")


def find_image_folder(folder: str | Path, captions_file: Path, images: list[CocoImage]) -> Path:
    """The folder holding the images: <split>/ (from captions_<split>.json), images/, or the folder itself."""
    folder = Path(folder)
    split = captions_file.stem.removeprefix("captions").lstrip("_")
    candidates = [folder / split] if split else []
    candidates += [folder / "images", folder]
    probe = images[0].file_name if images else None
    for candidate in candidates:
        if candidate.is_dir() and (probe is None or (candidate / probe).is_file()):
            return candidate
    raise FileNotFoundError(f"{folder}: no image folder holds {probe!r} (looked in "
                            f"{', '.join(str(c) for c in candidates)}); name it with --images")


def _read(path: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in keys):
        raise ValueError(f"{path}: a COCO annotation file is an object with the lists {list(keys)}")
    return data


def _field(path: Path, what: str, index: int, item: Any, key: str, types: type | tuple[type, ...]) -> Any:
    if not isinstance(item, dict) or not isinstance(item.get(key), types) or isinstance(item.get(key), bool):
        raise ValueError(f"{path}: {what} {index}: missing or bad {key!r} in {str(item)[:200]}")
    return item[key]


class CocoWarning(UserWarning):
    """A COCO annotation that was read with a correction (a box clipped to its image, or dropped as empty)."""


EDGE_SLACK = 1.0  # pixels a box may pass its image's edge without a warning (COCO's own boxes do, by rounding)
_LISTED = 10  # annotations named in one warning


def _ann_name(index: int, ann: dict) -> str:
    ann_id = ann.get("id")
    return f"annotation {index} (id {ann_id!r})" if ann_id is not None else f"annotation {index}"


def _images_of(path: Path, listing: list) -> dict[Any, dict]:
    """id -> image entry of one file's images list; ids must be unique and sizes positive."""
    out: dict[Any, dict] = {}
    for i, im in enumerate(listing):
        image_id = _field(path, "image", i, im, "id", (int, str))
        _field(path, "image", i, im, "file_name", str)
        w, h = (_field(path, "image", i, im, k, (int, float)) for k in ("width", "height"))
        if not (math.isfinite(w) and math.isfinite(h) and w > 0 and h > 0):
            raise ValueError(f"{path}: image {i} (id {image_id!r}): width and height must be positive")
        if image_id in out:
            raise ValueError(f"{path}: image {i}: id {image_id!r} is listed twice")
        out[image_id] = im
    return out


def _check_join(captions_file: Path, instances_file: Path, cap_images: dict, inst_images: dict) -> None:
    """The two files must describe the same image under the same id: same file name, same size."""
    for image_id, im in cap_images.items():
        other = inst_images.get(image_id)
        if other is None:
            raise ValueError(f"{captions_file} / {instances_file}: image id {image_id!r} ({im['file_name']}) is in "
                             f"the captions file's images but not in the instances file's; the two files must come "
                             "from the same split (its boxes would be missing)")
        if Path(other["file_name"]).name != Path(im["file_name"]).name:
            raise ValueError(f"{captions_file} / {instances_file}: image id {image_id!r} is "
                             f"{im['file_name']!r} in the first but {other['file_name']!r} in the second; the files "
                             "number their images differently, so boxes would land on the wrong images")
        if (other["width"], other["height"]) != (im["width"], im["height"]):
            raise ValueError(f"{captions_file} / {instances_file}: image id {image_id!r} ({im['file_name']}) is "
                             f"{im['width']}x{im['height']} in the first but {other['width']}x{other['height']} in "
                             "the second")


def _box(instances_file: Path, where: str, image: dict, bbox: list, notes: dict[str, list[str]]) -> tuple | None:
    """The box clipped to its image (noting a clip beyond EDGE_SLACK), None for an empty box; errors otherwise."""
    x, y, w, h = bbox
    width, height = image["width"], image["height"]
    on = f"on image {image['id']!r} ({image['file_name']}, {width}x{height})"
    if not all(math.isfinite(v) for v in bbox):
        raise ValueError(f"{instances_file}: {where}: bbox has a non-finite value: {bbox}")
    if w < 0 or h < 0:
        raise ValueError(f"{instances_file}: {where}: bbox must be [x, y, width, height] with width and height "
                         f">= 0, got {bbox}")
    if w == 0 or h == 0:
        notes["empty"].append(f"{where} {bbox} {on}")
        return None
    x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"{instances_file}: {where}: bbox {bbox} lies wholly outside its image {image['id']!r} "
                         f"({image['file_name']}, {width}x{height})")
    if x < -EDGE_SLACK or y < -EDGE_SLACK or x + w > width + EDGE_SLACK or y + h > height + EDGE_SLACK:
        notes["clipped"].append(f"{where} {bbox} {on}")
    return normalise_xywh(x1, y1, x2 - x1, y2 - y1, width, height)


def _warn(instances_file: Path, notes: dict[str, list[str]]) -> None:
    for what, listed in (("partly outside its image: clipped to it", notes["clipped"]),
                         ("of zero width or height: left out", notes["empty"])):
        if listed:
            more = f" (and {len(listed) - _LISTED} more)" if len(listed) > _LISTED else ""
            warnings.warn(CocoWarning(f"{instances_file}: {len(listed)} box(es) {what}: "
                                      + "; ".join(listed[:_LISTED]) + more), stacklevel=3)


def load_coco(captions_file: str | Path, instances_file: str | Path, limit: int | None = None) -> list[CocoImage]:
    """One CocoImage per image of the captions file, sorted by file name (the first `limit` only, if given).

    The two files are joined by image id, and each id must name the same file (and size) in both. A box partly
    outside its image is clipped to it, and one of zero width or height left out, each with a ``CocoWarning``
    naming the annotation; a box wholly outside its image, or of negative size, is an error.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a whole number >= 1, got {limit!r}")
    captions_file, instances_file = Path(captions_file), Path(instances_file)
    caps = _read(captions_file, ("images", "annotations"))
    inst = _read(instances_file, ("images", "annotations", "categories"))

    images = _images_of(captions_file, caps["images"])
    inst_images = _images_of(instances_file, inst["images"])
    _check_join(captions_file, instances_file, images, inst_images)

    captions: dict[Any, list[str]] = {image_id: [] for image_id in images}
    for i, ann in enumerate(caps["annotations"]):
        image_id = _field(captions_file, "annotation", i, ann, "image_id", (int, str))
        text = _field(captions_file, "annotation", i, ann, "caption", str)
        if image_id not in captions:
            raise ValueError(f"{captions_file}: annotation {i}: image_id {image_id!r} is not in its images list")
        if text.strip():
            captions[image_id].append(text)

    categories = {}
    for i, cat in enumerate(inst["categories"]):
        categories[_field(instances_file, "category", i, cat, "id", (int, str))] = \
            _field(instances_file, "category", i, cat, "name", str)
    boxes: dict[Any, list] = {image_id: [] for image_id in images}
    notes: dict[str, list[str]] = {"clipped": [], "empty": []}
    for i, ann in enumerate(inst["annotations"]):
        image_id = _field(instances_file, "annotation", i, ann, "image_id", (int, str))
        bbox = _field(instances_file, "annotation", i, ann, "bbox", list)
        category = _field(instances_file, "annotation", i, ann, "category_id", (int, str))
        ann_id = f" (annotation id {ann['id']!r})" if "id" in ann else ""
        if image_id not in inst_images:
            raise ValueError(f"{instances_file}: annotation {i}: image_id {image_id!r} is not in its images list"
                             + ann_id)
        if image_id not in boxes:  # an image the captions file does not describe: not in the data set
            continue
        if category not in categories:
            raise ValueError(f"{instances_file}: annotation {i}: unknown category_id {category!r}" + ann_id)
        if len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
            raise ValueError(f"{instances_file}: annotation {i}: bbox must be [x, y, width, height], got {bbox}"
                             + ann_id)
        box = _box(instances_file, _ann_name(i, ann), images[image_id], bbox, notes)
        if box is not None:
            boxes[image_id].append((categories[category], box))
    _warn(instances_file, notes)

    out = []
    for image_id, im in sorted(images.items(), key=lambda kv: kv[1]["file_name"]):
        if not captions[image_id]:
            raise ValueError(f"{captions_file}: image {im['file_name']} (id {image_id!r}) has no caption")
        try:
            context = format_context(captions[image_id], boxes[image_id])
        except ValueError as exc:
            raise ValueError(f"{captions_file} / {instances_file}: image {im['file_name']}: {exc}") from None
        out.append(CocoImage(Path(im["file_name"]).stem, im["file_name"], context))
    ids = [c.id for c in out]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{captions_file}: two images share a file name stem; record ids would repeat")
    return out[:limit] if limit is not None else out
