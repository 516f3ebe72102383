"""The instructions shared by every generator: the paper's stage-1 list and the caption pairs made from it."""

import random

from minillava.data.instructions import STAGE1_INSTRUCTIONS, caption_pair
from minillava.data.world import captions, make_scenes, symbolic_context


def test_caption_pairs():
    rng = random.Random(0)
    assert len(STAGE1_INSTRUCTIONS) == 11
    assert STAGE1_INSTRUCTIONS[0] == "Describe the image concisely."
    assert STAGE1_INSTRUCTIONS[-1] == "Create a compact narrative representing the image presented."
    for scene in make_scenes("eval", 50, seed=1):
        instruction, caption = caption_pair(symbolic_context(scene), rng)
        assert instruction in STAGE1_INSTRUCTIONS and caption in captions(scene)
