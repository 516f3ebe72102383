"""COCO-style folders: finding the annotation files and images, and turning annotations into contexts."""

from __future__ import annotations

import json

import pytest
from coco_folder import COCO_CONTEXTS, make_coco

from minillava.data.coco import find_annotation_files, load_coco


# -- COCO-style folders -------------------------------------------------------------------


def test_coco_contexts(tmp_path):
    folder = make_coco(tmp_path / "coco")
    caps, inst = find_annotation_files(folder)
    images = load_coco(caps, inst)
    assert {im.id: im.context for im in images} == COCO_CONTEXTS
    assert [im.file_name for im in images] == ["000000000001.jpg", "000000000002.jpg"]


@pytest.mark.parametrize("extra, message", [
    ({"id": 23, "image_id": 1, "bbox": [1, 1, 2, 2], "category_id": 99}, "annotation 2: unknown category_id 99"),
    ({"id": 23, "image_id": 7, "bbox": [1, 1, 2, 2], "category_id": 18}, "annotation 2: image_id 7 is not in"),
    ({"id": 23, "image_id": 1, "bbox": [1, 1, 2], "category_id": 18}, r"annotation 2: bbox must be \[x, y"),
    ({"id": 23, "image_id": 1, "category_id": 18}, "annotation 2: missing or bad 'bbox'"),
])
def test_coco_errors_name_file_and_annotation(tmp_path, extra, message):
    folder = make_coco(tmp_path / "coco", [extra])
    with pytest.raises(ValueError, match=r"instances_val2017\.json: " + message):
        load_coco(*find_annotation_files(folder))


def test_coco_folder_problems(tmp_path):
    folder = make_coco(tmp_path / "coco")
    caps = folder / "annotations" / "captions_val2017.json"
    data = json.loads(caps.read_text())
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 2]
    caps.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"captions_val2017\.json: image 000000000002\.jpg \(id 2\) has no caption"):
        load_coco(*find_annotation_files(folder))
    caps.write_text("{oops")
    with pytest.raises(ValueError, match=r"captions_val2017\.json: malformed JSON at line 1"):
        load_coco(*find_annotation_files(folder))
    (folder / "captions_train2017.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"exactly one captions\*\.json"):
        find_annotation_files(folder)
