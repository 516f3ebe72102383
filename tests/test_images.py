"""Image preprocessing: CLIP's eval transform ("crop"), LLaVA-1.5's pad to square ("pad"), RGB conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor

from minillava.data.images import CLIP_MEAN, CLIP_STD, PAD_COLOUR, clip_transform, load_image, to_rgb

MEAN, STD = torch.tensor(CLIP_MEAN)[:, None, None], torch.tensor(CLIP_STD)[:, None, None]


def pixels(x: torch.Tensor) -> torch.Tensor:
    """Normalised (3, H, W) -> 0..255 values."""
    return (x * STD + MEAN) * 255


def smooth_image(w: int, h: int, seed: int = 0) -> Image.Image:
    noise = (np.random.default_rng(seed).random((h // 4 + 1, w // 4 + 1, 3)) * 255).astype(np.uint8)
    return Image.fromarray(noise).resize((w, h), Image.BILINEAR)


def official_expand2square(im: Image.Image, colour: tuple[int, int, int]) -> Image.Image:
    """LLaVA's `expand2square` (llava/train/train.py), written out as the reference."""
    w, h = im.size
    if w == h:
        return im
    out = Image.new(im.mode, (max(w, h),) * 2, colour)
    out.paste(im, (0, (w - h) // 2) if w > h else ((h - w) // 2, 0))
    return out


def test_pad_colour_is_the_official_truncated_clip_mean():
    assert PAD_COLOUR == tuple(int(x * 255) for x in CLIP_MEAN) == (122, 116, 104)


@pytest.mark.parametrize("size", [224, 336])
@pytest.mark.parametrize("aspect", ["crop", "pad"])
def test_matches_the_official_preprocessing(size, aspect):
    """Within 2/255 of transformers' CLIPImageProcessor, which the official code runs (after expand2square for
    "pad"); bicubic resampling in PIL vs in torch differs by a level or two at a few pixels."""
    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                   image_mean=CLIP_MEAN, image_std=CLIP_STD)
    for w, h in [(320, 240), (150, 400)]:
        im = smooth_image(w, h)
        ours = clip_transform(size, aspect)(im)
        ref_input = official_expand2square(im, PAD_COLOUR) if aspect == "pad" else im
        ref = processor(ref_input, return_tensors="pt")["pixel_values"][0]
        assert ours.shape == ref.shape == (3, size, size)
        assert (pixels(ours) - pixels(ref)).abs().max() <= 2.5 and (pixels(ours) - pixels(ref)).abs().mean() < 0.05


def test_pad_keeps_the_whole_image_centred_on_the_mean_colour():
    im = Image.new("RGB", (60, 20), (255, 0, 0))  # wide: bands of pad colour above and below
    # (3, 30, 30): the 60x60 square scaled by 1/2, the image in rows 10-19; bicubic rings a row either side
    x = pixels(clip_transform(30, "pad")(im))
    assert torch.allclose(x[:, :8], torch.tensor(PAD_COLOUR, dtype=torch.float)[:, None, None], atol=1)
    assert torch.allclose(x[:, 22:], torch.tensor(PAD_COLOUR, dtype=torch.float)[:, None, None], atol=1)
    assert torch.allclose(x[:, 11:19], torch.tensor([255.0, 0, 0])[:, None, None], atol=1)
    crop = pixels(clip_transform(30, "crop")(im))  # the centre crop: all red, the sides cut off
    assert torch.allclose(crop, torch.tensor([255.0, 0, 0])[:, None, None], atol=1)
    with pytest.raises(ValueError, match="image_aspect_ratio must be one of"):
        clip_transform(30, "stretch")


def test_images_of_every_mode_become_rgb(tmp_path):
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.putpixel((0, 0), 1)
    palette.save(tmp_path / "palette.png", transparency=0)  # red, transparent by palette index
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    rgba.save(tmp_path / "rgba.png")
    Image.new("L", (4, 4), 77).save(tmp_path / "grey.png")
    Image.fromarray(np.full((4, 4), 200 * 256, dtype=np.uint16)).save(tmp_path / "grey16.png")  # 16-bit PNG
    identity = lambda im: torch.from_numpy(np.asarray(im).copy())  # (H, W, 3) uint8: the RGB pixels themselves
    got = {name: load_image(tmp_path, f"{name}.png", "r1", identity)
           for name in ("palette", "rgba", "grey", "grey16")}
    assert all(x.shape == (4, 4, 3) for x in got.values())
    assert got["palette"][0, 0].tolist() == [0, 255, 0] and got["palette"][1, 1].tolist() == [255, 0, 0]
    assert got["rgba"][0, 0].tolist() == [10, 20, 30]  # alpha dropped, as the official .convert("RGB")
    assert got["grey"][0, 0].tolist() == [77, 77, 77]
    assert got["grey16"][0, 0].tolist() == [200, 200, 200]  # scaled to 8 bits, not clipped to white
    assert to_rgb(Image.new("CMYK", (2, 2))).mode == "RGB"


def test_an_unreadable_image_names_the_record(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(FileNotFoundError, match="record rec-9: cannot read image .*broken.jpg"):
        load_image(tmp_path, "broken.jpg", "rec-9", clip_transform(28))
