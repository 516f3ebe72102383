"""Tiny Llava models for the tests: the checkpoint tests' configuration, and the toy preset cut to 2 layers."""

from __future__ import annotations

import torch

from minillava.model import Llava, llava_preset, override


def tiny_cfg(projector: str = "linear"):
    return override(llava_preset("toy"), {
        "llm.n_layers": 2, "llm.vocab_size": 64, "llm.d_model": 64, "llm.n_heads": 4, "llm.ffn_dim": 96,
        "vision.width": 32, "vision.layers": 3, "vision.head_width": 8, "vision.quick_gelu": True,
        "projector": projector, "image_token_id": 64,
    })


def tiny_llava(projector: str = "linear", **overrides) -> Llava:
    """The toy preset with a 2-layer LLM of 64 tokens, seeded, in eval mode."""
    cfg = override(llava_preset("toy"), {"llm.n_layers": 2, "llm.vocab_size": 64, "projector": projector, **overrides})
    torch.manual_seed(0)
    return Llava(cfg).eval()
