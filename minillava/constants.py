"""Names and values that several modules share: one definition each.

This module imports nothing from the package, so every module (data, tokenizer, model, training) can import it
without climbing the package tree.
"""

from __future__ import annotations

import math

# The placeholder for an image in LLaVA's text: "<image>\n" opens the first human turn of a record; the tokenizer
# maps it to one id, and `Llava.embed` writes the visual tokens where the text holds it.
IMAGE_TOKEN = "<image>"

# The label of a position that the loss ignores (system text, questions, image slots, padding): PyTorch's
# cross-entropy default and the value every LLaVA / transformers label tensor uses.
IGNORE_INDEX = -100

# The paper's three kinds of instruction-following data (LLaVA-Instruct-158K) and their proportions:
# 58K conversations, 23K detailed descriptions, 77K complex-reasoning answers.
STAGE2_KINDS = ("conv", "detail", "complex")
PAPER_MIX = (58, 23, 77)

# LLaVA-1.5's suffix for questions that want a short answer (VQAv2, GQA, ...), and our evaluation's.
SHORT_ANSWER = "Answer with a single word or phrase."

Turns = list[tuple[str, str]]  # (question, answer) pairs of one record; the first question gets the image later


def check_mix(mix) -> tuple[float, float, float]:
    """A conv : detail : complex mix as three non-negative weights with a positive sum; raises ValueError."""
    try:
        values = tuple(float(v) for v in mix)
    except (TypeError, ValueError):
        values = ()
    if len(values) != len(STAGE2_KINDS) or not all(math.isfinite(v) and v >= 0 for v in values) or sum(values) <= 0:
        raise ValueError(f"mix must be {len(STAGE2_KINDS)} non-negative weights conv:detail:complex with a "
                         f"positive sum, e.g. 58:23:77; got {mix!r}")
    return values  # type: ignore[return-value]
