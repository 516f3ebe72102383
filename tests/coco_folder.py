"""A tiny COCO-style folder built offline, shared by the COCO reader's and the data pipeline's tests."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image


def make_coco(root: Path, instances_extra: list | None = None) -> Path:
    """A tiny COCO-style folder: two images, captions and instances, split val2017."""
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    images = [{"id": 1, "file_name": "000000000001.jpg", "width": 64, "height": 48},
              {"id": 2, "file_name": "000000000002.jpg", "width": 32, "height": 32}]
    for im in images:
        Image.new("RGB", (im["width"], im["height"]), (30, 120, 40)).save(root / "val2017" / im["file_name"])
    captions = {"images": images, "annotations": [
        {"id": 11, "image_id": 2, "caption": "An empty street at night."},
        {"id": 12, "image_id": 1, "caption": "A dog next to a ball. "},
        {"id": 13, "image_id": 1, "caption": "A brown dog sits on the grass\n"},
    ]}
    instances = {"images": images, "categories": [{"id": 18, "name": "dog"}, {"id": 37, "name": "sports ball"}],
                 "annotations": [
                     {"id": 21, "image_id": 1, "bbox": [8, 12, 32, 24], "category_id": 18},
                     {"id": 22, "image_id": 1, "bbox": [40, 30, 8, 8], "category_id": 37},
                 ] + (instances_extra or [])}
    (root / "annotations" / "captions_val2017.json").write_text(json.dumps(captions))
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(instances))
    return root


COCO_CONTEXTS = {
    "000000000001": "A dog next to a ball.\nA brown dog sits on the grass\n\n"
                    "dog: [0.125, 0.250, 0.625, 0.750]\nsports ball: [0.625, 0.625, 0.750, 0.792]",
    "000000000002": "An empty street at night.",
}
