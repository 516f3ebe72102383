"""The instructions that open records, shared by every generator and teacher.

- ``STAGE1_INSTRUCTIONS``: the paper's 11 brief-description instructions; stage 1 pairs one of
  them with one of the image's captions (``caption_pair``), whichever teacher wrote the stage-2 data;
- ``DETAIL_INSTRUCTIONS``: the questions a detailed-description record opens with, whichever teacher wrote the
  description (as in the paper, the instruction is ours and only the answer is the teacher's).
"""

from __future__ import annotations

import random

from minillava.data.context import caption_lines

__all__ = ["DETAIL_INSTRUCTIONS", "STAGE1_INSTRUCTIONS", "caption_pair"]

STAGE1_INSTRUCTIONS = (
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Offer a succinct explanation of the picture presented.",
    "Summarize the visual content of the image.",
    "Give a short and clear explanation of the subsequent image.",
    "Share a concise interpretation of the image provided.",
    "Present a compact description of the photo's key features.",
    "Relay a brief, clear account of the picture shown.",
    "Render a clear and concise summary of the photo.",
    "Write a terse but informative summary of the picture.",
    "Create a compact narrative representing the image presented.",
)

DETAIL_INSTRUCTIONS = (
    "Describe the image in detail.",
    "What do you see in this image? Describe it thoroughly.",
    "Give a detailed description of the image.",
)


def caption_pair(context: str, rng: random.Random) -> tuple[str, str]:
    """Stage-1 pair: one of the paper's 11 brief-description instructions and one of the image's captions."""
    return rng.choice(STAGE1_INSTRUCTIONS), rng.choice(caption_lines(context))
