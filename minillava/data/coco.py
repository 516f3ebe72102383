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


def load_coco(captions_file: str | Path, instances_file: str | Path, limit: int | None = None) -> list[CocoImage]:
    """One CocoImage per image of the captions file, sorted by file name (the first `limit` only, if given)."""
    captions_file, instances_file = Path(captions_file), Path(instances_file)
    caps = _read(captions_file, ("images", "annotations"))
    inst = _read(instances_file, ("images", "annotations", "categories"))

    images: dict[Any, dict] = {}
    for i, im in enumerate(caps["images"]):
        image_id = _field(captions_file, "image", i, im, "id", (int, str))
        _field(captions_file, "image", i, im, "file_name", str)
        if image_id in images:
            raise ValueError(f"{captions_file}: image {i}: id {image_id!r} is listed twice")
        images[image_id] = im
    sizes = {}  # width and height: from the instances file, else the captions file
    for where, listing in ((captions_file, caps["images"]), (instances_file, inst["images"])):
        for i, im in enumerate(listing):
            image_id = _field(where, "image", i, im, "id", (int, str))
            w, h = (_field(where, "image", i, im, k, (int, float)) for k in ("width", "height"))
            if w <= 0 or h <= 0:
                raise ValueError(f"{where}: image {i} (id {image_id!r}): width and height must be positive")
            sizes[image_id] = (w, h)

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
    for i, ann in enumerate(inst["annotations"]):
        image_id = _field(instances_file, "annotation", i, ann, "image_id", (int, str))
        bbox = _field(instances_file, "annotation", i, ann, "bbox", list)
        category = _field(instances_file, "annotation", i, ann, "category_id", (int, str))
        if image_id not in boxes:
            raise ValueError(f"{instances_file}: annotation {i}: image_id {image_id!r} is not in {captions_file}")
        if category not in categories:
            raise ValueError(f"{instances_file}: annotation {i}: unknown category_id {category!r}")
        if len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox) or bbox[2] < 0 or bbox[3] < 0:
            raise ValueError(f"{instances_file}: annotation {i}: bbox must be [x, y, width, height], got {bbox}")
        if image_id not in sizes:
            raise ValueError(f"{instances_file}: annotation {i}: no width and height for image {image_id!r}")
        boxes[image_id].append((categories[category], normalise_xywh(*bbox, *sizes[image_id])))

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
