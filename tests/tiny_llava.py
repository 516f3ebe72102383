"""The tiny Llava configuration that the checkpoint tests build their models and files from."""

from __future__ import annotations

from minillava.model import llava_preset, override


def tiny_cfg(projector: str = "linear"):
    return override(llava_preset("toy"), {
        "llm.n_layers": 2, "llm.vocab_size": 64, "llm.d_model": 64, "llm.n_heads": 4, "llm.ffn_dim": 96,
        "vision.width": 32, "vision.layers": 3, "vision.head_width": 8, "vision.quick_gelu": True,
        "projector": projector, "image_token_id": 64,
    })
