"""The paper's models and their relatives, built on the meta device: shapes and parameter counts.

Reference counts (../shared/facts.md): LLaMA-13B 13,015,864,320 and LLaMA-7B 6,738,415,616 parameters; CLIP
ViT-L/14 without its output projection 303,179,776 at 224 px and 303,507,456 at 336 px; LLaVA-1.5-13B
13,350,839,296 in all.
"""

from __future__ import annotations

import time

import pytest
import torch

from minillava.model import Llava, llava_preset

VIT_224, VIT_336 = 303_179_776, 303_507_456
LLAMA_13B, LLAMA_7B = 13_015_864_320, 6_738_415_616
LINEAR_13B, LINEAR_7B = 5120 * 1024 + 5120, 4096 * 1024 + 4096
MLP_13B, MLP_7B = LINEAR_13B + 5120 * 5120 + 5120, LINEAR_7B + 4096 * 4096 + 4096

PRESETS = {  # name: (vision, projector, llm, total, visual tokens)
    "llava-v1-13b": (VIT_224, LINEAR_13B, LLAMA_13B, None, 256),
    "llava-v1-7b": (VIT_224, LINEAR_7B, LLAMA_7B, None, 256),
    "llava-1.5-7b": (VIT_336, MLP_7B, LLAMA_7B, None, 576),
    "llava-1.5-13b": (VIT_336, MLP_13B, LLAMA_13B, 13_350_839_296, 576),
}


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", PRESETS)
def test_preset_parameter_counts(name):
    vision, projector, llm, total, tokens = PRESETS[name]
    start = time.perf_counter()
    with torch.device("meta"):
        model = Llava(llava_preset(name))
    seconds = time.perf_counter() - start
    assert (count(model.vision), count(model.projector), count(model.llm)) == (vision, projector, llm)
    assert count(model) == (total or vision + projector + llm)
    assert model.cfg.num_image_tokens == tokens
    assert seconds < 5.0, f"building {name} on the meta device took {seconds:.2f} s"
