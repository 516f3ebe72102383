import io
import re

import pytest

from minillava.data.world import (
    BACKGROUND,
    COLOURS,
    RGB,
    SHAPES,
    SIZES,
    WorldConfig,
    captions,
    make_scene,
    make_scenes,
    object_side_px,
    render,
    scene_seed,
    symbolic_context,
)

CFG = WorldConfig()
BOX_LINE = re.compile(r"^([a-z]+) ([a-z]+): \[(\d\.\d{3}), (\d\.\d{3}), (\d\.\d{3}), (\d\.\d{3})\]$")


@pytest.fixture(scope="module")
def scenes():
    return make_scenes("train", 400, seed=0)


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_same_arguments_give_identical_scenes_contexts_and_pixels():
    a, b = make_scenes("train", 50, seed=3), make_scenes("train", 50, seed=3)
    assert a == b
    assert [symbolic_context(s) for s in a] == [symbolic_context(s) for s in b]
    assert [png_bytes(render(s)) for s in a] == [png_bytes(render(s)) for s in b]


def test_splits_and_seeds_give_different_scenes():
    n = 300
    seeds = {split: {s.seed for s in make_scenes(split, n)} for split in ("train", "eval", "lm")}
    assert all(len(v) == n for v in seeds.values())
    assert len(seeds["train"] | seeds["eval"] | seeds["lm"]) == 3 * n, "splits share no scene seed"
    train, evals = make_scenes("train", n), make_scenes("eval", n)
    assert sum(a.objects != b.objects for a, b in zip(train, evals)) > n * 0.9
    assert make_scenes("train", 20, seed=1) != make_scenes("train", 20, seed=0)
    assert scene_seed(0, "train", 5) == scene_seed(0, "train", 5)  # stable, not Python's salted hash()


def test_ids():
    assert [s.id for s in make_scenes("eval", 3)] == ["eval-000000", "eval-000001", "eval-000002"]


def test_scene_invariants(scenes):
    counts = set()
    for scene in scenes:
        objs = scene.objects
        counts.add(len(objs))
        columns = [o.column for o in objs]
        assert columns == sorted(set(columns)), "one object per column, left to right"
        assert len({o.name for o in objs}) == len(objs), "names identify objects"
        for o in objs:
            assert o.shape in SHAPES and o.colour in COLOURS and o.size in SIZES and 0 <= o.row < CFG.n_rows
            x1, y1, x2, y2 = o.box
            assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
            assert all(round(v, 3) == v for v in o.box)
            # The box lies inside its grid cell.
            assert o.column / CFG.n_columns <= x1 and x2 <= (o.column + 1) / CFG.n_columns + 1e-3
            assert o.row / CFG.n_rows - 1e-3 <= y1 and y2 <= (o.row + 1) / CFG.n_rows + 1e-3
            assert round((x2 - x1) * CFG.image_size) == object_side_px(o.size, CFG)
    assert counts == set(range(CFG.min_objects, CFG.max_objects + 1))


def test_every_attribute_value_occurs(scenes):
    objs = [o for s in scenes for o in s.objects]
    assert {o.shape for o in objs} == set(SHAPES)
    assert {o.colour for o in objs} == set(COLOURS)
    assert {o.size for o in objs} == set(SIZES)
    assert {o.row for o in objs} == set(range(CFG.n_rows))


def test_small_and_large_differ_visibly():
    small, large = object_side_px("small", CFG), object_side_px("large", CFG)
    assert large - small >= 2 and small >= 5


def test_symbolic_context_format(scenes):
    for scene in scenes[:100]:
        text = symbolic_context(scene)
        caption_block, box_block = text.split("\n\n")
        caps = caption_block.split("\n")
        assert caps == captions(scene) and 3 <= len(caps) <= 5
        assert all("[" not in c and c.endswith(".") for c in caps)
        lines = box_block.split("\n")
        assert len(lines) == len(scene.objects)
        for line, o in zip(lines, scene.objects):
            m = BOX_LINE.match(line)
            assert m, line
            assert f"{m.group(1)} {m.group(2)}" == o.name
            assert tuple(float(v) for v in m.group(3, 4, 5, 6)) == o.box


def test_three_decimals_always():
    scene = make_scene("x", 0)
    assert re.search(r"\[\d\.\d{3}, \d\.\d{3}, \d\.\d{3}, \d\.\d{3}\]", symbolic_context(scene))


def test_captions_vary_but_are_deterministic(scenes):
    assert captions(scenes[0]) == captions(scenes[0])
    assert len({captions(s)[0] for s in scenes}) > 5


@pytest.mark.parametrize("cfg", [CFG, WorldConfig(image_size=64, n_columns=3, n_rows=3, max_objects=3)])
def test_render_puts_each_colour_at_its_box_centre(cfg):
    for scene in make_scenes("eval", 100, cfg=cfg):
        image = render(scene, cfg)
        assert image.mode == "RGB" and image.size == (cfg.image_size, cfg.image_size)
        for o in scene.objects:
            x1, y1, x2, y2 = o.box
            centre = (int((x1 + x2) / 2 * cfg.image_size), int((y1 + y2) / 2 * cfg.image_size))
            assert image.getpixel(centre) == RGB[o.colour], (scene.id, o)
        # Every pixel is the background or one of the scene's colours (no anti-aliasing).
        allowed = {BACKGROUND} | {RGB[o.colour] for o in scene.objects}
        assert {c for _, c in image.getcolors()} <= allowed


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"max_objects": 5}, "max_objects"),
        ({"min_objects": 0}, "min_objects"),
        ({"min_objects": 3, "max_objects": 2}, "max_objects"),
        ({"n_columns": 9}, "n_columns"),
        ({"n_rows": 5}, "n_rows"),
        ({"image_size": 12}, "image_size"),
    ],
)
def test_world_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        WorldConfig(**kwargs)


def test_toy_run_grid_cells_are_the_toy_clip_patches():
    """The toy run's world and vision tower agree: each cell is one ViT patch, so each object lies inside one
    visual token (objects straddling two patch rows hid their shape from both tokens)."""
    from minillava.toy import ToyConfig
    from minillava.vision import VISION_PRESETS

    world, vision = ToyConfig().data.world, VISION_PRESETS["toy"]
    assert world.image_size == vision.image_size
    assert world.image_size / world.n_columns == world.image_size / world.n_rows == vision.patch_size
    p = vision.patch_size
    for scene in make_scenes("train", 300, cfg=world):
        for o in scene.objects:
            x1, y1, x2, y2 = (round(v * world.image_size) for v in o.box)
            assert (x1 // p, y1 // p) == ((x2 - 1) // p, (y2 - 1) // p) == (o.column, o.row), (scene.id, o)
