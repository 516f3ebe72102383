"""Bad input to the data module: every kind stops set-up with an error that names the item (file, record, option),
or, for images the user asked to skip, is left out, counted and listed. And every Pillow mode gets its right colour.
"""

from __future__ import annotations

import io
import json
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from minillava.data.dataset import LlavaDataModule, LlavaDataset
from minillava.data.images import BadImageError, check_image, load_image, to_rgb

TURNS = [{"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": "A red square."}]


def write_data(folder, images: dict[str, bytes | None], text_only: int = 0):
    """A LLaVA JSON file with one record per image (id "rec-<name>") in `folder`/images; None: no file written."""
    (folder / "images").mkdir(exist_ok=True)
    records = []
    for name, data in images.items():
        if data is not None:
            (folder / "images" / name).write_bytes(data)
        records.append({"id": f"rec-{name}", "image": name, "conversations": TURNS})
    records += [{"id": f"text-{i}", "conversations": [{"from": "human", "value": "Hi?"},
                                                       {"from": "gpt", "value": "Hello."}]}
                for i in range(text_only)]
    path = folder / "train.json"
    path.write_text(json.dumps(records))
    return path, folder / "images"


def png(im: Image.Image | None = None) -> bytes:
    buf = io.BytesIO()
    (im or Image.new("RGB", (8, 8), (255, 0, 0))).save(buf, "PNG")
    return buf.getvalue()


def jpeg(size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def dataset(path, images, tokenizer, **kw) -> LlavaDataset:
    return LlavaDataset(path, images, tokenizer, "v0", 4, 16, 256, **kw)


def names(path, name: str) -> str:
    """What a message about image `name` of `path` must say: the record and its file, and the image file."""
    return f"record rec-{name} of {re.escape(str(path))}.*{re.escape(name)}"


def corrupt_middle(data: bytes) -> bytes:
    """The file with 16 bytes in its middle (pixel data) overwritten: right length, right header, bad checksum."""
    mid = len(data) // 2
    return data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 16]) + data[mid + 16:]


BAD_IMAGES = {
    "missing.png": (None, "not found"),
    "empty.png": (b"", "empty file"),
    "text.png": (b"this is not an image\n", "not an image"),
    "truncated.png": (png(Image.new("RGB", (64, 64), (0, 0, 255)))[:60], "cannot read image"),
    "corrupt.png": (corrupt_middle(png(Image.effect_noise((64, 64), 50))), "cannot read image"),
    "truncated.jpg": (jpeg()[:-300], "cannot read image"),
}


@pytest.mark.parametrize("bad", sorted(BAD_IMAGES))
def test_a_bad_image_stops_set_up_naming_file_and_record(bad, tmp_path, tokenizer):
    data, why = BAD_IMAGES[bad]
    path, images = write_data(tmp_path, {"good.png": png(), bad: data})
    with pytest.raises(BadImageError, match=names(path, bad)) as err:
        dataset(path, images, tokenizer)
    assert f"rec-{bad} of {path}" in str(err.value) and str(images / bad) in str(err.value)
    assert why in str(err.value)
    assert isinstance(err.value, FileNotFoundError)  # what the loaders raised before: callers keep working


def test_skip_leaves_bad_images_out_counted_and_listed(tmp_path, tokenizer, caplog):
    path, images = write_data(tmp_path, {"a.png": png(), "b.png": b"", "c.png": png(), "d.png": None},
                              text_only=2)
    with pytest.warns(UserWarning, match=r"skipped 2 of 6 records for bad images") as caught:
        ds = dataset(path, images, tokenizer, bad_images="skip")
    assert len(ds) == 4 and [i for i, _ in ds.skipped] == ["rec-b.png", "rec-d.png"]
    message = str(caught[0].message)
    assert "rec-b.png" in message and "rec-d.png" in message and str(path) in message
    assert "skipped 2 of 6" in caplog.text  # logged too: a run's log keeps the list
    assert {ex.meta["id"] for ex in ds.examples} == {"rec-a.png", "rec-c.png", "text-0", "text-1"}


def test_skip_with_nothing_left_is_an_error_naming_the_file(tmp_path, tokenizer):
    path, images = write_data(tmp_path, {"b.png": b""})
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=f"{re.escape(str(path))}: no records left"):
        dataset(path, images, tokenizer, bad_images="skip")


def test_a_shared_image_is_checked_once_and_skips_every_record_using_it(tmp_path, tokenizer):
    path, images = write_data(tmp_path, {"a.png": png(), "bad.png": b"x"})
    records = json.loads(path.read_text())
    records.append({**records[1], "id": "rec-again"})
    path.write_text(json.dumps(records))
    with pytest.warns(UserWarning, match="skipped 2 of 3"):
        ds = dataset(path, images, tokenizer, bad_images="skip")
    assert [i for i, _ in ds.skipped] == ["rec-bad.png", "rec-again"]


def test_the_data_module_checks_images_at_set_up(tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path / "tok")
    path, images = write_data(tmp_path, {"good.png": png(), "bad.png": b"GIF89a broken"})
    dm = LlavaDataModule(str(path), str(tmp_path / "tok"), str(images), num_image_tokens=4, image_size=16,
                         max_len=256, batch_size=1)
    with pytest.raises(BadImageError, match=names(path, "bad.png")):
        dm.setup("fit")
    dm = LlavaDataModule(str(path), str(tmp_path / "tok"), str(images), num_image_tokens=4, image_size=16,
                         max_len=256, batch_size=1, bad_images="skip")
    with pytest.warns(UserWarning, match="rec-bad.png"):
        dm.setup("fit")
    assert len(dm.train_set) == 1


def test_decompression_bomb_is_refused_naming_file_and_record(tmp_path, tokenizer, monkeypatch):
    path, images = write_data(tmp_path, {"big.png": png(Image.new("RGB", (100, 100)))})
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100 // 2 - 1)  # 10000 px > 2x the limit: Pillow's error
    with pytest.raises(BadImageError, match=f"{names(path, 'big.png')}.*too large to decode safely"):
        dataset(path, images, tokenizer)
    with pytest.raises(BadImageError, match="record r1: cannot read image .*big.png: too large"):
        load_image(images, "big.png", "r1", lambda im: im)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100 - 1)  # over the limit, under 2x: Pillow's warning
    with pytest.warns(Image.DecompressionBombWarning, match=names(path, "big.png")):
        assert len(dataset(path, images, tokenizer)) == 1


def test_check_image_accepts_good_files_of_common_formats(tmp_path):
    (tmp_path / "a.jpg").write_bytes(jpeg())
    (tmp_path / "b.png").write_bytes(png())
    Image.new("RGB", (5, 5)).save(tmp_path / "c.gif")
    Image.new("RGB", (5, 5)).save(tmp_path / "d.webp")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("a.jpg", "b.png", "c.gif", "d.webp"):
            check_image(tmp_path / name, "r")


# -- every Pillow mode to the right RGB ---------------------------------------------------------------------------

def rgb_of(im: Image.Image) -> list[int]:
    return np.asarray(to_rgb(im))[0, 0].tolist()


def test_sixteen_bit_greyscale_keeps_its_grey(tmp_path):
    Image.fromarray(np.full((4, 4), 128 * 256 + 100, dtype=np.uint16)).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode.startswith("I;16")
        assert rgb_of(im) == [128, 128, 128]  # not 255: a plain convert clips to white
    for mode in ("I;16", "I;16B", "I;16L"):
        im = Image.new(mode, (2, 2))
        im.putpixel((0, 0), 128 * 256)
        assert rgb_of(im) == [128, 128, 128], mode
    identity = lambda im: torch.from_numpy(np.asarray(im).copy())
    assert load_image(tmp_path, "g16.png", "r", identity)[0, 0].tolist() == [128, 128, 128]


def test_integer_and_float_images_are_scaled_not_clipped():
    assert rgb_of(Image.fromarray(np.full((2, 2), 128 * 256, dtype=np.int32))) == [128] * 3  # 16-bit data in "I"
    assert rgb_of(Image.fromarray(np.full((2, 2), 77, dtype=np.int32))) == [77] * 3  # 8-bit data in "I"
    assert rgb_of(Image.fromarray(np.full((2, 2), -5, dtype=np.int32))) == [0] * 3
    assert rgb_of(Image.fromarray(np.full((2, 2), 0.5, dtype=np.float32))) == [128] * 3  # 0..1 floats
    assert rgb_of(Image.fromarray(np.full((2, 2), 200.0, dtype=np.float32))) == [200] * 3  # 0..255 floats


def test_colour_modes_give_the_right_colour(tmp_path):
    assert rgb_of(Image.new("CMYK", (2, 2), (0, 255, 255, 0))) == [255, 0, 0]  # no cyan, full magenta+yellow
    assert rgb_of(Image.new("CMYK", (2, 2), (255, 0, 255, 0))) == [0, 255, 0]
    Image.new("CMYK", (8, 8), (0, 0, 255, 0)).save(tmp_path / "cmyk.jpg")  # yellow, as a CMYK JPEG on disk
    with Image.open(tmp_path / "cmyk.jpg") as im:
        assert im.mode == "CMYK"
        r, g, b = rgb_of(im)
        assert r > 240 and g > 240 and b < 15
    assert rgb_of(Image.new("LA", (2, 2), (90, 0))) == [90] * 3  # alpha dropped, grey kept
    assert rgb_of(Image.new("La", (2, 2), (90, 255))) == [90] * 3
    assert rgb_of(Image.new("RGBA", (2, 2), (10, 20, 30, 0))) == [10, 20, 30]
    assert rgb_of(Image.new("1", (2, 2), 1)) == [255] * 3
    palette = Image.new("P", (2, 2), 1)
    palette.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    palette.info["transparency"] = 0
    assert rgb_of(palette) == [0, 0, 255]


# -- options are checked when the data module is made -------------------------------------------------------------

BAD_OPTIONS = [
    ("template", "v2", r"template must be one of \[.*'plain'.*'v0'.*'v1'.*\], got 'v2'"),
    ("supervise", "al", r"supervise must be one of \('answers', 'all'\), got 'al'"),
    ("image_aspect_ratio", "stretch", r"image_aspect_ratio must be one of \('crop', 'pad'\), got 'stretch'"),
    ("truncation", "cut", r"truncation must be one of \('error', 'truncate'\), got 'cut'"),
    ("bad_images", "ignore", r"bad_images must be one of \('error', 'skip'\), got 'ignore'"),
    ("batch_size", 0, "batch_size must be an integer >= 1, got 0"),
    ("num_image_tokens", 0, "num_image_tokens must be an integer >= 1, got 0"),
    ("image_size", -3, "image_size must be an integer >= 1, got -3"),
    ("max_len", 0, "max_len must be an integer >= 1, got 0"),
    ("limit", 0, "limit must be an integer >= 1 or None, got 0"),
    ("limit", 2.5, "limit must be an integer >= 1 or None, got 2.5"),
    ("num_workers", -1, "num_workers must be an integer >= 0, got -1"),
]


@pytest.mark.parametrize(("option", "value", "message"), BAD_OPTIONS, ids=[f"{o}={v}" for o, v, _ in BAD_OPTIONS])
def test_bad_options_are_refused_at_construction(option, value, message, tmp_path, tokenizer):
    with pytest.raises(ValueError, match=message):
        LlavaDataModule("never-read.json", "no-tokenizer", **{option: value})
    if option not in ("batch_size", "num_workers"):  # the data module's options, not the data set's
        path, images = write_data(tmp_path, {"a.png": png()})
        kw = {"template": "v0", "num_image_tokens": 4, "image_size": 16, "max_len": 256} | {option: value}
        with pytest.raises(ValueError, match=message):
            LlavaDataset(path, images, tokenizer, **kw)


def test_an_empty_training_file_is_an_error_naming_it(tmp_path, tokenizer):
    path = tmp_path / "empty.json"
    path.write_text("[]")
    with pytest.raises(ValueError, match=f"{re.escape(str(path))} holds no records"):
        dataset(path, None, tokenizer)
    with pytest.raises(ValueError, match=f"{re.escape(str(path))} holds no records"):
        dataset(path, None, tokenizer, limit=5)


def test_check_images_off_still_refuses_a_missing_file_and_names_a_corrupt_one_when_loaded(tmp_path):
    from minillava.data.dataset import LlavaDataset
    from minillava.data.images import BadImageError
    from minillava.tokenizer import train_bpe_tokenizer

    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "bad.png").write_bytes(b"not a png")
    rec = {"id": "r1", "image": "bad.png",
           "conversations": [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cat."}]}
    (tmp_path / "d.json").write_text(json.dumps([rec]))
    tok = train_bpe_tokenizer(["What is it? A cat."], vocab_size=300)
    ds = LlavaDataset(tmp_path / "d.json", tmp_path / "img", tok, num_image_tokens=4, image_size=32,
                      check_images=False)  # set-up does not open the image
    with pytest.raises(FileNotFoundError, match="r1 of .*bad.png"):
        ds[0]
    (tmp_path / "d.json").write_text(json.dumps([{**rec, "image": "gone.png"}]))
    with pytest.raises(BadImageError, match="r1 of .*gone.png not found"):
        LlavaDataset(tmp_path / "d.json", tmp_path / "img", tok, num_image_tokens=4, image_size=32, check_images=False)
