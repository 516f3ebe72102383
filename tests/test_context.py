"""The symbolic context (captions + boxes): its text format, and the toy world's contexts in it."""

from __future__ import annotations

import pytest

from minillava.data.context import box_lines, caption_lines, format_context, normalise_xywh
from minillava.data.world import make_scenes, symbolic_context


# -- symbolic context ------------------------------------------------------------------


def test_context_format():
    text = format_context(["A dog next to a ball. ", "A brown\ndog."],
                          [("dog", (0.125, 0.25, 0.625, 0.75)), ("traffic light", (0.0, 0.0, 0.1, 1.0))])
    assert text == ("A dog next to a ball.\nA brown dog.\n\n"
                    "dog: [0.125, 0.250, 0.625, 0.750]\ntraffic light: [0.000, 0.000, 0.100, 1.000]")
    assert caption_lines(text) == ["A dog next to a ball.", "A brown dog."]
    assert box_lines(text) == [("dog", (0.125, 0.25, 0.625, 0.75)), ("traffic light", (0.0, 0.0, 0.1, 1.0))]
    assert format_context(["Only a caption."], []) == "Only a caption."
    for bad in ([], ["A [bracket]."]):
        with pytest.raises(ValueError):
            format_context(bad, [])
    with pytest.raises(ValueError, match="cannot appear in a box line"):
        format_context(["A cap."], [("a: b", (0, 0, 1, 1))])
    assert normalise_xywh(40, 30, 8, 8, 64, 48) == (0.625, 0.625, 0.75, 0.792)
    assert normalise_xywh(-2, 40, 70, 20, 64, 48) == (0.0, 0.833, 1.0, 1.0), "clipped to the image"


def test_toy_context_has_the_papers_shape():
    for scene in make_scenes("train", 50):
        text = symbolic_context(scene)
        head, boxes = text.split("\n\n")
        assert 3 <= len(head.splitlines()) <= 5 and "[" not in head
        assert box_lines(text) == [(o.name, o.box) for o in scene.objects]
        for line in boxes.splitlines():  # three decimals, always
            assert all(len(v.split(".")[1]) == 3 for v in line.split("[")[1].rstrip("]").split(", "))
