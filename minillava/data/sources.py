"""Image sources of the data pipeline: each image with its id, file name and symbolic context.

The paper's pipeline starts from images that people have described (COCO: captions and boxes). A source lists
those images with their symbolic contexts (``context.py``), and says where the image files are or how to write
them. Two sources ship: the toy world's train scenes (rendered on demand) and a COCO-style folder.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SourceImage:
    """One image of a source: its id, its file name in the image folder, its context, and how to write it."""

    id: str
    image: str
    context: str
    write: Callable[[Path], None] | None = None  # writes the image file to the given path; None: it exists


@dataclass
class Source:
    images: list[SourceImage]
    image_folder: Path | None  # where existing images live; None: they are written into out/images
    settings: dict[str, Any]  # what defines the content, for meta.json


def toy_source(n: int, seed: int = 0, world=None) -> Source:
    """The toy world's first `n` train scenes of `seed` (the ones `minillava toy` trains on), rendered on demand."""
    from minillava.data.world import WorldConfig, make_scenes, render, symbolic_context

    world = world or WorldConfig()

    def writer(scene) -> Callable[[Path], None]:
        return lambda path: render(scene, world).save(path, format="PNG")

    images = [SourceImage(s.id, f"{s.id}.png", symbolic_context(s, world), writer(s))
              for s in make_scenes("train", n, seed, world)]
    settings = {"source": "toy", "n": n, "world": vars(world)}
    return Source(images, None, settings)


def coco_source(folder: str | Path, captions: str | Path | None = None, instances: str | Path | None = None,
                images: str | Path | None = None, limit: int | None = None, copy_images: bool = False) -> Source:
    """Images of a COCO-style folder (see ``coco.py``); with `copy_images`, copies go into out/images."""
    from minillava.data.coco import find_annotation_files, find_image_folder, load_coco

    folder = Path(folder)
    if captions is None or instances is None:
        found = find_annotation_files(folder)
        captions, instances = captions or found[0], instances or found[1]
    coco = load_coco(captions, instances, limit)
    image_folder = Path(images) if images else find_image_folder(folder, Path(captions), coco)
    if not image_folder.is_dir():
        raise FileNotFoundError(f"image folder {image_folder} does not exist")

    def copier(name: str) -> Callable[[Path], None]:
        return lambda path: shutil.copyfile(image_folder / name, path)

    out = [SourceImage(c.id, c.file_name, c.context, copier(c.file_name) if copy_images else None) for c in coco]
    missing = [s.image for s in out if not (image_folder / s.image).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image(s) are not in {image_folder}, e.g. {missing[:3]}")
    settings = {"source": "coco", "captions": str(Path(captions).resolve()),
                "instances": str(Path(instances).resolve()), "limit": limit}
    return Source(out, None if copy_images else image_folder.resolve(), settings)
