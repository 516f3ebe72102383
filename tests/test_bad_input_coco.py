"""Bad COCO input: each kind gets a clear error (or a correction with a warning) that names the item."""

from __future__ import annotations

import json
import warnings

import pytest
from coco_folder import COCO_CONTEXTS, make_coco

from minillava.data.coco import CocoWarning, find_annotation_files, load_coco
from minillava.data.sources import coco_source


def edit(path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def files(folder):
    return folder / "annotations" / "captions_val2017.json", folder / "annotations" / "instances_val2017.json"


def test_ids_that_name_different_files_are_refused(tmp_path):
    """The measured case: the instances file numbers the same images the other way round."""
    folder = make_coco(tmp_path / "coco")
    caps, inst = files(folder)
    edit(inst, lambda d: d["images"].reverse() or [im.update(id=3 - im["id"]) for im in d["images"]])
    with pytest.raises(ValueError, match=r"captions_val2017\.json / .*instances_val2017\.json: image id 1 is "
                                         r"'000000000001\.jpg' in the first but '000000000002\.jpg' in the second"):
        load_coco(caps, inst)


def test_an_image_missing_from_the_instances_file_is_refused(tmp_path):
    folder = make_coco(tmp_path / "coco")
    caps, inst = files(folder)
    edit(inst, lambda d: d["images"].pop())
    with pytest.raises(ValueError, match=r"captions_val2017\.json / .*instances_val2017\.json: image id 2 "
                                         r"\(000000000002\.jpg\) is in the captions file's images but not"):
        load_coco(caps, inst)


def test_a_size_that_differs_between_the_files_is_refused(tmp_path):
    folder = make_coco(tmp_path / "coco")
    caps, inst = files(folder)
    edit(inst, lambda d: d["images"][0].update(width=640))
    with pytest.raises(ValueError, match=r"image id 1 \(000000000001\.jpg\) is 64x48 in the first but 640x48"):
        load_coco(caps, inst)


def test_instances_of_images_without_captions_are_ignored(tmp_path):
    """An instances file covering more images than the captions file (a subset of captions) is fine."""
    folder = make_coco(tmp_path / "coco")
    caps, inst = files(folder)
    extra_image = {"id": 9, "file_name": "000000000009.jpg", "width": 10, "height": 10}
    edit(inst, lambda d: d["images"].append(extra_image) or d["annotations"].append(
        {"id": 29, "image_id": 9, "bbox": [1, 1, 2, 2], "category_id": 18}))
    assert {im.id: im.context for im in load_coco(caps, inst)} == COCO_CONTEXTS


def test_an_annotation_of_an_unlisted_image_names_its_id(tmp_path):
    folder = make_coco(tmp_path / "coco", [{"id": 23, "image_id": 7, "bbox": [1, 1, 2, 2], "category_id": 18}])
    with pytest.raises(ValueError, match=r"instances_val2017\.json: annotation 2: image_id 7 is not in its images "
                                         r"list \(annotation id 23\)"):
        load_coco(*files(folder))


@pytest.mark.parametrize("bbox", [[100, 100, 5, 5], [-20, 0, 10, 10], [0, 60, 4, 4]])
def test_a_box_wholly_outside_its_image_is_refused(tmp_path, bbox):
    """It used to become [1.000, 1.000, 1.000, 1.000] (or a line on the edge) without a word."""
    folder = make_coco(tmp_path / "coco", [{"id": 23, "image_id": 1, "bbox": bbox, "category_id": 18}])
    with pytest.raises(ValueError, match=r"instances_val2017\.json: annotation 2 \(id 23\): bbox .* lies wholly "
                                         r"outside its image 1 \(000000000001\.jpg, 64x48\)"):
        load_coco(*files(folder))


def test_a_box_partly_outside_is_clipped_with_a_warning_naming_it(tmp_path):
    folder = make_coco(tmp_path / "coco", [{"id": 23, "image_id": 1, "bbox": [48, 40, 32, 32], "category_id": 18}])
    with pytest.warns(CocoWarning, match=r"instances_val2017\.json: 1 box\(es\) partly outside its image: clipped "
                                         r"to it: annotation 2 \(id 23\) \[48, 40, 32, 32\] on image 1 "
                                         r"\(000000000001\.jpg"):
        images = load_coco(*files(folder))
    assert images[0].context.endswith("dog: [0.750, 0.833, 1.000, 1.000]")


def test_a_box_over_the_edge_by_rounding_is_clipped_quietly(tmp_path):
    folder = make_coco(tmp_path / "coco", [{"id": 23, "image_id": 1, "bbox": [32, 24, 32.4, 24.3],
                                            "category_id": 18}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        images = load_coco(*files(folder))
    assert images[0].context.endswith("dog: [0.500, 0.500, 1.000, 1.000]")


def test_a_zero_size_box_is_left_out_with_a_warning_naming_it(tmp_path):
    folder = make_coco(tmp_path / "coco", [{"id": 23, "image_id": 1, "bbox": [5, 5, 0, 4], "category_id": 18}])
    with pytest.warns(CocoWarning, match=r"1 box\(es\) of zero width or height: left out: annotation 2 \(id 23\)"):
        images = load_coco(*files(folder))
    assert {im.id: im.context for im in images} == COCO_CONTEXTS


@pytest.mark.parametrize("bbox, why", [([5, 5, -3, 4], "width and height >= 0"),
                                       ([5, 5, float("nan"), 4], "non-finite"),
                                       ([5, 5, True, 4], r"bbox must be \[x, y, width, height\]")])
def test_a_negative_or_non_finite_box_is_refused(tmp_path, bbox, why):
    folder = make_coco(tmp_path / "coco", [{"id": 23, "image_id": 1, "bbox": bbox, "category_id": 18}])
    with pytest.raises(ValueError, match=r"instances_val2017\.json: annotation 2.*" + why) as err:
        load_coco(*files(folder))
    assert "23" in str(err.value), "the annotation id is named"


@pytest.mark.parametrize("which", [0, 1])
def test_a_bad_image_size_or_a_repeated_id_names_the_file(tmp_path, which):
    folder = make_coco(tmp_path / "coco")
    path = files(folder)[which]
    edit(path, lambda d: d["images"][1].update(height=0))
    with pytest.raises(ValueError, match=path.name + r": image 1 \(id 2\): width and height must be positive"):
        load_coco(*files(folder))
    edit(path, lambda d: d["images"][1].update(height=32, id=1))
    with pytest.raises(ValueError, match=path.name + r": image 1: id 1 is listed twice"):
        load_coco(*files(folder))


@pytest.mark.parametrize("limit", [0, -1, 1.5, True])
def test_a_bad_limit_is_refused(tmp_path, limit):
    folder = make_coco(tmp_path / "coco")
    with pytest.raises(ValueError, match="limit must be a whole number >= 1"):
        load_coco(*find_annotation_files(folder), limit=limit)
    assert len(load_coco(*find_annotation_files(folder), limit=1)) == 1


def test_missing_image_files_are_named(tmp_path):
    folder = make_coco(tmp_path / "coco")
    (folder / "val2017" / "000000000002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"not in .*val2017.*000000000002\.jpg"):
        coco_source(folder, images=folder / "val2017")
